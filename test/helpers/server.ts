import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../dist/server/index.js';
import type { ServerConfigInput } from '../../dist/server/config.js';

export const ADMIN = 'test-admin-token-0123456789';

export async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'paddock-srv-'));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export async function boot(dataDir: string, extra: Partial<ServerConfigInput> = {}): Promise<RunningServer> {
  return startServer({
    port: 0,
    host: '127.0.0.1',
    dataDir,
    adminToken: ADMIN,
    logLevel: 'silent',
    ...extra,
    executor: { pool: { workers: 2, spares: 1 }, ...(extra.executor ?? {}) },
  });
}

export async function plugin(name: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(new URL(`../../build/plugins/${name}.wasm`, import.meta.url)));
}

export interface Res {
  status: number;
  headers: Headers;
  json: any;
  bytes: Uint8Array;
  text: string;
}

export function client(base: string) {
  return async function api(method: string, path: string, opts: { token?: string; json?: unknown; body?: BodyInit; type?: string } = {}): Promise<Res> {
    const headers: Record<string, string> = {};
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: BodyInit | undefined = opts.body;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers['content-type'] = 'application/json';
    }
    if (opts.type) headers['content-type'] = opts.type;
    const res = await fetch(base + path, { method, headers, body });
    const bytes = new Uint8Array(await res.arrayBuffer());
    const text = new TextDecoder().decode(bytes);
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, headers: res.headers, json, bytes, text };
  };
}

export async function newTenant(api: ReturnType<typeof client>, name: string, body: Record<string, unknown> = {}): Promise<string> {
  const r = await api('POST', '/v1/tenants', { token: ADMIN, json: { name, ...body } });
  if (r.status !== 201) throw new Error(`tenant ${name}: ${r.status} ${r.text}`);
  return r.json.apiKey as string;
}

export async function install(api: ReturnType<typeof client>, key: string, manifest: Record<string, unknown>, wasm: Uint8Array) {
  return api('POST', '/v1/plugins', { token: key, json: { manifest, wasm: Buffer.from(wasm).toString('base64') } });
}

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../dist/server/index.js';
import { ADMIN, boot, removeDir, tempDir } from './helpers/server.js';

const bin = fileURLToPath(new URL('../bin/paddock.js', import.meta.url));
const plugins = fileURLToPath(new URL('../build/plugins/', import.meta.url));
const exec = promisify(execFile);

let dir: string;
let server: RunningServer;

async function paddock(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, '--url', server.url, ...args], { timeout: 20_000, env: { ...process.env, PADDOCK_TOKEN: '', PADDOCK_ADMIN_TOKEN: '', ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  dir = await tempDir();
  server = await boot(dir);
});
afterAll(async () => {
  await server.close();
  await removeDir(dir);
});

describe('paddock CLI against a running server', () => {
  it('walks the README: tenant add, plugin install, list, call, disable, and reports errors as CODE: message', async () => {
    const added = await paddock(['tenant', 'add', 'acme', '--grants', '{"kv":{"read":true,"write":true}}'], { PADDOCK_ADMIN_TOKEN: ADMIN });
    expect(added.code).toBe(0);
    const apiKey = /pdk_[A-Za-z0-9_-]+/.exec(added.stdout)![0];
    const env = { PADDOCK_TOKEN: apiKey };
    const inst = await paddock(['plugin', 'install', `${plugins}count-vowels.wasm`, '--name', 'vowels', '--plugin-version', '1.2.3'], env);
    expect(inst.stdout).toMatch(/^installed vowels@1\.2\.3 sha256:[0-9a-f]{64}/);
    const list = JSON.parse((await paddock(['--json', 'plugin', 'list'], env)).stdout);
    expect(list.map((p: { name: string; version: string }) => [p.name, p.version])).toEqual([['vowels', '1.2.3']]);
    const table = (await paddock(['plugin', 'list'], env)).stdout;
    expect(table.split('\n')[0]).toMatch(/^NAME\s+VERSION\s+ENABLED\s+STATE/);
    const call = await paddock(['call', 'vowels', 'count_vowels', '--input', 'Hello, World'], env);
    expect(JSON.parse(call.stdout)).toMatchObject({ count: 3 });
    await paddock(['plugin', 'disable', 'vowels'], env);
    const off = await paddock(['call', 'vowels', 'count_vowels'], env);
    expect([off.code, off.stderr]).toEqual([1, 'PADDOCK_DISABLED: plugin "vowels" is disabled\n']);
    const tenants = JSON.parse((await paddock(['--json', 'tenant', 'list'], { PADDOCK_ADMIN_TOKEN: ADMIN })).stdout);
    expect(tenants.map((t: { name: string }) => t.name)).toEqual(['acme']);
    const noKey = await paddock(['plugin', 'list']);
    expect(noKey.stderr).toMatch(/^PADDOCK_UNAUTHORIZED: /);
    const rotated = await paddock(['tenant', 'rotate-key', 'acme'], { PADDOCK_ADMIN_TOKEN: ADMIN });
    expect(rotated.stdout).toMatch(/pdk_/);
    expect((await paddock(['plugin', 'list'], env)).stderr).toMatch(/^PADDOCK_UNAUTHORIZED/);
  });

  it('finds the admin token in the data directory when none is given', async () => {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(`${dir}/admin-token`, `${ADMIN}\n`);
    const r = await paddock(['--data-dir', dir, '--json', 'tenant', 'list']);
    expect(r.code).toBe(0);
    expect(Array.isArray(JSON.parse(r.stdout))).toBe(true);
  });

  it('audits a plugin offline: the capabilities it needs, and a refusal when the manifest lacks them', async () => {
    const bad = await paddock(['plugin', 'audit', `${plugins}kv-counter.wasm`]);
    expect([bad.code, bad.stderr.split(':')[0]]).toEqual([1, 'PADDOCK_UNDECLARED_IMPORT']);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(`${dir}/m.yaml`, 'name: counter\nversion: 1.0.0\ncapabilities:\n  kv: { read: true, write: true }\n');
    const ok = JSON.parse((await paddock(['--json', 'plugin', 'audit', `${plugins}kv-counter.wasm`, '--manifest', `${dir}/m.yaml`])).stdout);
    expect(ok.verdict).toBe('ok');
    expect(ok.imports).toContain('extism:host/user.paddock_kv_get');
    expect(ok.exports).toEqual(expect.arrayContaining(['incr', 'get']));
  });

  it('doctor checks the machine and the server', async () => {
    const r = await paddock(['--json', 'doctor']);
    const checks = JSON.parse(r.stdout) as Array<{ check: string; ok: boolean }>;
    expect(checks.map((c) => [c.check, c.ok])).toEqual([
      ['node', true],
      ['isolated pool', true],
      ['store', true],
      ['data dir', true],
      ['server', true],
    ]);
  });
});

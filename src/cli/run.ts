// `paddock run`: the offline one-shot, like `extism call`, through the same isolated pool as
// everything else (an executor with one worker and one spare).

import { readFile, stat, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PaddockError } from '../errors.js';
import { createExecutor } from '../executor.js';
import { parseManifest, type Manifest } from '../policy/manifest.js';

export interface RunOptions {
  input?: string;
  inputFile?: string;
  timeoutMs?: number;
  memoryPages?: number;
  config: string[];
  wasi?: boolean;
  allowHost: string[];
  allowPath: string[];
  repeat: number;
  logLevel?: string;
  stats?: boolean;
}

/** A plugin is a .wasm file, or a folder holding one .wasm and optionally a manifest. */
export async function loadPlugin(path: string): Promise<{ wasm: Uint8Array; manifest: Record<string, unknown> | null; source: string }> {
  const full = resolve(path);
  let info;
  try {
    info = await stat(full);
  } catch {
    throw new PaddockError('PADDOCK_NOT_FOUND', `no such file or folder: ${path}`);
  }
  if (!info.isDirectory()) return { wasm: new Uint8Array(await readFile(full)), manifest: null, source: full };
  const names = await readdir(full);
  const wasmName = names.find((n) => n.endsWith('.wasm'));
  if (!wasmName) throw new PaddockError('PADDOCK_NOT_FOUND', `no .wasm file in ${path}`);
  let manifest: Record<string, unknown> | null = null;
  for (const candidate of ['paddock.json', 'manifest.json', 'paddock.yaml', 'paddock.yml', 'manifest.yaml', 'manifest.yml']) {
    if (!names.includes(candidate)) continue;
    const text = await readFile(join(full, candidate), 'utf8');
    try {
      manifest = (candidate.endsWith('.json') ? JSON.parse(text) : parseYaml(text)) as Record<string, unknown>;
    } catch (err) {
      throw new PaddockError('PADDOCK_INVALID_MANIFEST', `${candidate}: ${(err as Error).message}`);
    }
    break;
  }
  return { wasm: new Uint8Array(await readFile(join(full, wasmName))), manifest, source: join(full, wasmName) };
}

function parseConfig(pairs: string[]): Record<string, string> {
  const config: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new PaddockError('PADDOCK_BAD_REQUEST', `--config expects key=value, got "${pair}"`);
    config[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return config;
}

function parsePaths(specs: string[]): Record<string, string> {
  const preopens: Record<string, string> = {};
  for (const spec of specs) {
    const i = spec.indexOf(':');
    const host = resolve(i < 0 ? spec : spec.slice(0, i));
    const guest = i < 0 ? host : spec.slice(i + 1);
    preopens[guest] = host;
  }
  return preopens;
}

export async function runCommand(pluginPath: string, fn: string, opts: RunOptions, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<void> {
  const { wasm, manifest: fileManifest } = await loadPlugin(pluginPath);
  const input = opts.inputFile !== undefined ? new Uint8Array(await readFile(opts.inputFile)) : new TextEncoder().encode(opts.input ?? '');
  // The command line is the operator here: it grants exactly what its flags say.
  const base: Manifest = fileManifest ? parseManifest(fileManifest) : parseManifest({ name: 'cli', version: '0.0.0' });
  const manifest = parseManifest({
    ...base,
    exports: undefined,
    config: { ...base.config, ...parseConfig(opts.config) },
    capabilities: {
      ...base.capabilities,
      log: true,
      wasi: Boolean(opts.wasi) || Boolean(base.capabilities.wasi),
      // Declared even without --allow-host so plugins whose PDK imports http_request still load;
      // a request to any host not allowed is refused at call time.
      http: { ...base.capabilities.http, hosts: [...(base.capabilities.http?.hosts ?? []), ...opts.allowHost] },
    },
    limits: {
      ...base.limits,
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.memoryPages !== undefined ? { memoryPages: opts.memoryPages } : {}),
    },
    logLevel: (opts.logLevel as Manifest['logLevel']) ?? 'off',
  });
  const ex = await createExecutor({
    pool: { workers: 1, spares: 1, maxLiveInstances: 8 },
    limits: {
      timeoutMs: manifest.limits.timeoutMs ?? 30_000,
      memoryPages: manifest.limits.memoryPages ?? 65536,
    },
    grants: { log: true, config: true, wasi: true, http: { hosts: manifest.capabilities.http?.hosts ?? [] } },
    // One-shot: a refused host call should end the run with its code, not be absorbed by the plugin.
    policy: { onViolation: 'fail' },
  });
  ex.on('log', (l) => err.write(`[${l.level}] ${l.message}\n`));
  try {
    await ex.install(manifest, wasm, { preopens: parsePaths(opts.allowPath) });
    const durations: number[] = [];
    for (let i = 0; i < opts.repeat; i++) {
      const t0 = performance.now();
      const output = await ex.call(manifest.name, fn, input);
      durations.push(performance.now() - t0);
      out.write(output);
    }
    if (opts.stats) {
      durations.sort((a, b) => a - b);
      const total = durations.reduce((a, b) => a + b, 0);
      const q = (p: number) => durations[Math.min(durations.length - 1, Math.floor(p * durations.length))].toFixed(3);
      err.write(`calls=${durations.length} calls/s=${(durations.length / (total / 1000)).toFixed(0)} p50=${q(0.5)}ms p99=${q(0.99)}ms\n`);
    }
  } finally {
    await ex.close();
  }
}

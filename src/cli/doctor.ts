// `paddock doctor`: the checks a user runs when something is off.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor } from '../executor.js';

export interface Check {
  check: string;
  ok: boolean;
  detail: string;
}

// (module (memory (export "memory") 1) (func (export "run") (result i32) i32.const 0)) — an Extism plugin that does nothing.
const NOOP_WASM = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 127, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 16, 2, 6, 109, 101, 109, 111, 114, 121, 2, 0, 3, 114, 117, 110, 0, 0, 10, 6, 1, 4, 0, 65, 0, 11,
]);
// The same with (loop (br 0)) as the body of "run".
const LOOP_WASM = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 127, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 16, 2, 6, 109, 101, 109, 111, 114, 121, 2, 0, 3, 114, 117, 110, 0, 0, 10, 11, 1, 9, 0, 3, 64, 12, 0, 11, 65, 0, 11,
]);

async function check(name: string, fn: () => Promise<string>): Promise<Check> {
  try {
    return { check: name, ok: true, detail: await fn() };
  } catch (err) {
    return { check: name, ok: false, detail: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`.trim() };
  }
}

export async function runDoctor(url: string | undefined, dataDir: string): Promise<Check[]> {
  const checks: Check[] = [];
  checks.push(
    await check('node', async () => {
      const major = Number(process.versions.node.split('.')[0]);
      if (major < 20) throw new Error(`Node ${process.versions.node}; Paddock needs 20 or later`);
      const opts = process.env.NODE_OPTIONS ?? '';
      if (/max-old-space-size/.test(opts)) throw new Error('NODE_OPTIONS sets --max-old-space-size, which overrides worker heap limits');
      return `Node ${process.versions.node}, V8 ${process.versions.v8}`;
    }),
  );
  checks.push(
    await check('isolated pool', async () => {
      const ex = await createExecutor({ pool: { workers: 1, spares: 0 }, limits: { timeoutMs: 200 } });
      try {
        await ex.install({ name: 'noop', version: '1' }, NOOP_WASM);
        await ex.install({ name: 'loop', version: '1' }, LOOP_WASM);
        const t0 = performance.now();
        await ex.call('noop', 'run');
        const first = performance.now() - t0;
        const code = await ex.call('loop', 'run').then(
          () => 'none',
          (e: { code: string }) => e.code,
        );
        if (code !== 'PADDOCK_TIMEOUT') throw new Error(`an infinite loop was not interrupted (got ${code})`);
        await ex.call('noop', 'run');
        return `worker call ok (${first.toFixed(1)} ms cold); infinite loop interrupted; pool healed`;
      } finally {
        await ex.destroy();
      }
    }),
  );
  checks.push(
    await check('store', async () => {
      const { SqliteStore } = await import('../store/sqlite.js');
      const dir = await mkdtemp(join(tmpdir(), 'paddock-doctor-'));
      try {
        const s = SqliteStore.open(dir);
        s.setSetting('doctor', 'ok');
        s.close();
        return 'better-sqlite3 loads; WAL database writable';
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
  );
  checks.push(await check('data dir', async () => `${join(dataDir)} (created on first \`paddock serve\` if missing)`));
  if (url) {
    checks.push(
      await check('server', async () => {
        const res = await fetch(`${url.replace(/\/$/, '')}/readyz`);
        const body = (await res.json()) as { status: string; workers?: number };
        if (res.status !== 200) throw new Error(`readyz answered ${res.status}`);
        return `${url} ready, ${body.workers} worker threads`;
      }),
    );
  }
  return checks;
}

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { codeOf, destroyAll, installFixture, newExecutor, text, u64 } from './helpers/executor.js';

afterEach(destroyAll);

describe('worker pool: running plugins', () => {
  it('runs an exported function and returns its exact output bytes', async () => {
    const ex = await newExecutor({ pool: { workers: 2 } });
    await installFixture(ex, 'echo');
    const input = new Uint8Array([0, 1, 2, 255, 128, 0]);
    expect([...(await ex.call('echo', 'echo', input))]).toEqual([...input]);
    expect(text(await ex.call('echo', 'echo', 'hello'))).toBe('hello');
    expect((await ex.call('echo', 'echo', '')).byteLength).toBe(0);
    expect(u64(await ex.call('echo', 'len', 'abcdef'))).toBe(6n);
  });

  it('serves 50 concurrent calls to one plugin without reentrancy errors', async () => {
    const ex = await newExecutor({ pool: { workers: 2 } });
    await installFixture(ex, 'echo');
    const outs = await Promise.all(Array.from({ length: 50 }, (_, i) => ex.call('echo', 'echo', `call-${i}`)));
    expect(outs.map(text)).toEqual(Array.from({ length: 50 }, (_, i) => `call-${i}`));
  });

  it('keeps instance state per plugin: globals of one plugin never show in another', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'a', 'echo');
    await installFixture(ex, 'b', 'echo');
    for (let i = 0; i < 3; i++) await ex.call('a', 'bump');
    expect(u64(await ex.call('a', 'get_global'))).toBe(3n);
    expect(u64(await ex.call('b', 'get_global'))).toBe(0n);
  });

  it('keeps the same plugin under two tenants apart', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    ex.setTenant('acme');
    await installFixture(ex, 'echo');
    await installFixture(ex, 'echo', 'echo', {}, 'acme');
    await ex.call('echo', 'bump');
    expect(u64(await ex.call('echo', 'get_global', '', { tenant: 'acme' }))).toBe(0n);
    expect(await codeOf(ex.call('echo', 'echo', '', { tenant: 'nobody' }))).toBe('PADDOCK_NOT_FOUND');
  });

  it('reports an error the plugin set (error_set) as PADDOCK_PLUGIN_ERROR with its message, and keeps the instance', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'echo');
    await ex.call('echo', 'bump');
    const err = await ex.call('echo', 'fail').catch((e) => e);
    expect(err.code).toBe('PADDOCK_PLUGIN_ERROR');
    expect(err.message).toContain('boom');
    expect(u64(await ex.call('echo', 'get_global'))).toBe(1n);
  });

  it('refuses an unknown function with PADDOCK_NO_SUCH_EXPORT, an unknown plugin with PADDOCK_NOT_FOUND', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'echo');
    expect(await codeOf(ex.call('echo', 'nope'))).toBe('PADDOCK_NO_SUCH_EXPORT');
    expect(await codeOf(ex.call('missing', 'echo'))).toBe('PADDOCK_NOT_FOUND');
  });
});

describe('worker pool: hard caps', () => {
  it('interrupts an infinite loop at the deadline, replaces the worker, and serves the next call', async () => {
    const ex = await newExecutor({ pool: { workers: 2, spares: 1 }, limits: { timeoutMs: 300 } });
    await installFixture(ex, 'loop', 'loop-forever');
    await installFixture(ex, 'echo');
    const before = new Set(ex.workerThreadIds);
    const restarts: string[] = [];
    ex.on('worker-restart', (e) => restarts.push(e.reason));
    const t0 = performance.now();
    expect(await codeOf(ex.call('loop', 'run'))).toBe('PADDOCK_TIMEOUT');
    const elapsed = performance.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(restarts).toEqual(['timeout']);
    expect(text(await ex.call('echo', 'echo', 'next'))).toBe('next');
    // The killed thread is gone; piscina replaced it.
    const [{ threadId }] = (await once(ex, 'worker-created')) as [{ threadId: number }];
    expect(before.has(threadId)).toBe(false);
    expect(ex.workerThreadIds.length).toBe(3);
  });

  it('a timeout fails only its own call: other plugins calls running at the same time succeed', async () => {
    const ex = await newExecutor({ pool: { workers: 2, spares: 1 }, limits: { timeoutMs: 400 } });
    await installFixture(ex, 'loop', 'loop-forever');
    await installFixture(ex, 'echo');
    const looping = codeOf(ex.call('loop', 'run'));
    const others = await Promise.all(Array.from({ length: 40 }, (_, i) => ex.call('echo', 'echo', `x${i}`).then(text)));
    expect(others).toEqual(Array.from({ length: 40 }, (_, i) => `x${i}`));
    expect(await looping).toBe('PADDOCK_TIMEOUT');
  });

  it('honours a shorter per-call timeout but never a longer one than the manifest allows', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 1 }, limits: { timeoutMs: 5000 } });
    await installFixture(ex, 'loop', 'loop-forever', { limits: { timeoutMs: 200 } });
    const t0 = performance.now();
    expect(await codeOf(ex.call('loop', 'run', '', { timeoutMs: 60_000 }))).toBe('PADDOCK_TIMEOUT');
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('stops a memory.grow bomb at the page cap with PADDOCK_MEMORY_LIMIT and keeps RSS bounded', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, limits: { memoryPages: 256 } });
    await installFixture(ex, 'bomb', 'memory-bomb', { limits: { memoryPages: 32 } });
    await installFixture(ex, 'echo');
    const rss0 = process.memoryUsage().rss;
    for (let i = 0; i < 5; i++) {
      const err = await ex.call('bomb', 'run').catch((e) => e);
      expect(err.code).toBe('PADDOCK_MEMORY_LIMIT');
      expect(err.message).toContain('32 pages');
    }
    // 32 pages = 2 MiB per instance; without the cap the bomb would grow to 4 GiB.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 * 1024 * 1024);
    expect(text(await ex.call('echo', 'echo', 'alive'))).toBe('alive');
  });

  it('refuses at install a module that declares more memory or table than the cap', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, limits: { memoryPages: 256 } });
    expect(await codeOf(installFixture(ex, 'big', 'huge-memory'))).toBe('PADDOCK_MEMORY_LIMIT');
    expect(await codeOf(installFixture(ex, 'table', 'huge-table'))).toBe('PADDOCK_MEMORY_LIMIT');
    expect(ex.list()).toEqual([]);
  });

  it('caps output before copying it: a huge output and a forged output length both fail with PADDOCK_OUTPUT_TOO_LARGE', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, limits: { maxOutputBytes: 1024 * 1024 } });
    await installFixture(ex, 'out', 'huge-output');
    expect(await codeOf(ex.call('out', 'run'))).toBe('PADDOCK_OUTPUT_TOO_LARGE');
    expect(await codeOf(ex.call('out', 'claim'))).toBe('PADDOCK_OUTPUT_TOO_LARGE');
  });

  it('caps input with PADDOCK_INPUT_TOO_LARGE before anything is sent to a worker', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, limits: { maxInputBytes: 1000 } });
    await installFixture(ex, 'echo');
    const calls: Array<string | null> = [];
    ex.on('call', (e) => calls.push(e.code));
    expect(await codeOf(ex.call('echo', 'echo', new Uint8Array(1001)))).toBe('PADDOCK_INPUT_TOO_LARGE');
    expect((await ex.call('echo', 'echo', new Uint8Array(1000))).byteLength).toBe(1000);
    expect(calls).toEqual(['PADDOCK_INPUT_TOO_LARGE', null]);
  });

  it('caps Extism var memory with PADDOCK_MEMORY_LIMIT', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, limits: { maxVarBytes: 256 * 1024 } });
    await installFixture(ex, 'vars', 'var-bomb');
    const err = await ex.call('vars', 'run').catch((e) => e);
    expect(err.code).toBe('PADDOCK_MEMORY_LIMIT');
    expect(err.message).toMatch(/var memory limit/);
  });

  it('survives a worker running out of JS heap: the call fails with PADDOCK_MEMORY_LIMIT, the worker is replaced', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 1, heapMb: 32 }, limits: { timeoutMs: 20_000, maxLogBytes: 2 ** 31 } });
    await installFixture(ex, 'flood', 'log-flood', { capabilities: { log: true } });
    await installFixture(ex, 'echo');
    const restarts: string[] = [];
    ex.on('worker-restart', (e) => restarts.push(e.reason));
    const err = await ex.call('flood', 'run').catch((e) => e);
    expect(err.code).toBe('PADDOCK_MEMORY_LIMIT');
    expect(err.details.reason).toBe('worker-heap');
    expect(restarts).toEqual(['worker-heap']);
    expect(text(await ex.call('echo', 'echo', 'fine'))).toBe('fine');
  });
});

describe('worker pool: crash isolation', () => {
  it.each([
    ['unreachable', 'unreachable'],
    ['div-zero', 'divide-by-zero'],
    ['oob-read', 'out-of-bounds'],
    ['deep-recursion', 'stack-overflow'],
    ['bad-hostcall', 'invalid-host-call-argument'],
  ])('classifies %s as PADDOCK_TRAP (%s) and serves the next call', async (fixtureName, reason) => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'bad', fixtureName);
    await installFixture(ex, 'echo');
    const err = await ex.call('bad', 'run').catch((e) => e);
    expect(err.code).toBe('PADDOCK_TRAP');
    expect(err.details.reason).toBe(reason);
    // A trap does not kill the worker: the same thread serves the next call.
    expect(text(await ex.call('echo', 'echo', 'ok'))).toBe('ok');
  });

  it('throws a trapped instance away: guest globals are back to their initial value', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'echo');
    await ex.call('echo', 'bump');
    await ex.call('echo', 'bump');
    expect(u64(await ex.call('echo', 'get_global'))).toBe(2n);
    expect(await codeOf(ex.call('echo', 'bump_and_trap'))).toBe('PADDOCK_TRAP');
    expect(u64(await ex.call('echo', 'get_global'))).toBe(0n);
  });

  it('a plugin whose initialisation loops fails with PADDOCK_INIT_FAILED once, then fast without another worker kill', async () => {
    for (const fixtureName of ['loop-in-init', 'init-loop-initialize']) {
      const ex = await newExecutor({ pool: { workers: 1, spares: 1 }, limits: { timeoutMs: 300 } });
      await installFixture(ex, 'init', fixtureName);
      const restarts: string[] = [];
      ex.on('worker-restart', (e) => restarts.push(e.reason));
      expect(await codeOf(ex.call('init', 'run'))).toBe('PADDOCK_INIT_FAILED');
      const t0 = performance.now();
      expect(await codeOf(ex.call('init', 'run'))).toBe('PADDOCK_INIT_FAILED');
      expect(performance.now() - t0).toBeLessThan(100);
      expect(restarts).toEqual(['init-timeout']);
      expect(ex.get('init').broken).toMatch(/initialisation/);
      // Installing again (a fixed version) clears the mark.
      await installFixture(ex, 'init', 'echo', { version: '1.0.1' });
      expect(text(await ex.call('init', 'echo', 'fixed'))).toBe('fixed');
    }
  });

  it('a fresh worker that replaces a killed one joins with the hot plugins already instantiated', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 1 }, limits: { timeoutMs: 300 } });
    await installFixture(ex, 'echo');
    await installFixture(ex, 'loop', 'loop-forever');
    await ex.call('echo', 'echo', 'warm me');
    const created = once(ex, 'worker-created');
    expect(await codeOf(ex.call('loop', 'run'))).toBe('PADDOCK_TIMEOUT');
    const [{ warmed }] = (await created) as [{ warmed: number }];
    expect(warmed).toBeGreaterThanOrEqual(1);
  });

  it('evicts idle instances past the live-instance cap and still serves every plugin', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0, maxLiveInstances: 2 } });
    for (const n of ['p1', 'p2', 'p3']) await installFixture(ex, n, 'echo');
    const cold: boolean[] = [];
    ex.on('call', (e) => cold.push(Boolean(e.stats?.instantiated)));
    for (let round = 0; round < 3; round++) {
      for (const n of ['p1', 'p2', 'p3']) expect(text(await ex.call(n, 'echo', n))).toBe(n);
    }
    // With room for 2 instances and 3 plugins used round-robin, every call re-instantiates.
    expect(cold.every(Boolean)).toBe(true);
    expect(cold.length).toBe(9);
  });
});

describe('address space (each wasm memory reserves ~10 GiB)', () => {
  const underLimit = async (kib: number): Promise<{ code: number | null; outcomes: string[] }> => {
    const script = fileURLToPath(new URL('./fixtures/address-space.mjs', import.meta.url));
    const child = spawn('bash', ['-c', `ulimit -v ${kib} && exec "${process.execPath}" "${script}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, outcomes: out.trim() ? (JSON.parse(out.trim().split('\n').pop()!) as string[]) : [] };
  };

  it('when reservations run out, idle instances are evicted and the call retried: every plugin is still served', async () => {
    // 60 GB of address space holds only a handful of wasm memories next to Node itself.
    const r = await underLimit(60_000_000);
    expect(r.code).toBe(0);
    expect(r.outcomes).toEqual(Array(16).fill('OK'));
  });

  it('with no room even after eviction, calls are refused with PADDOCK_INSTANCE_LIMIT and the process stays up', async () => {
    const r = await underLimit(25_000_000);
    expect(r.code).toBe(0);
    expect(r.outcomes).toHaveLength(16);
    expect(r.outcomes.every((o) => o === 'OK' || o === 'PADDOCK_INSTANCE_LIMIT')).toBe(true);
    expect(r.outcomes).toContain('PADDOCK_INSTANCE_LIMIT');
  });
});

describe('batching', () => {
  it('a timeout in the middle of a batch keeps the results before it and re-queues, never re-runs, the calls after it', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 1 }, limits: { timeoutMs: 300 }, grants: { clock: true } });
    await installFixture(ex, 'ts', 'tick-or-spin', { capabilities: { clock: true } });
    const hostCalls = new Map<number, number>();
    ex.on('host-call', (e) => hostCalls.set(e.callId, (hostCalls.get(e.callId) ?? 0) + 1));
    const threads = new Map<number, number>();
    ex.on('call', (e) => e.stats && threads.set(e.callId, e.stats.threadId));
    // The first call leaves alone; the others wait, then leave together as one batch.
    const first = ex.call('ts', 'tick');
    const before = Array.from({ length: 5 }, () => ex.call('ts', 'tick'));
    const spin = codeOf(ex.call('ts', 'spin'));
    const after = Array.from({ length: 5 }, () => ex.call('ts', 'tick'));
    await first;
    await Promise.all(before);
    expect(await spin).toBe('PADDOCK_TIMEOUT');
    await Promise.all(after);
    // Every tick ran exactly once: one host call each.
    expect([...hostCalls.values()]).toEqual(Array(11).fill(1));
    // The batch's first five ran on the thread that was then killed; the last five on another.
    const ids = [...threads.values()];
    expect(new Set(ids.slice(1, 6)).size).toBe(1);
    expect(ids.slice(6).every((t) => t !== ids[1])).toBe(true);
  });

  it('an output too big for the shared results buffer ends its batch early; the rest still run', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0, batchBufferBytes: 4096 } });
    await installFixture(ex, 'echo');
    const big = new Uint8Array(10_000).fill(7);
    const outs = await Promise.all([ex.call('echo', 'echo', 'a'), ex.call('echo', 'echo', big), ex.call('echo', 'echo', 'b'), ex.call('echo', 'echo', big), ex.call('echo', 'echo', 'c')]);
    expect(outs.map((o) => o.byteLength)).toEqual([1, 10_000, 1, 10_000, 1]);
    expect(outs[1].every((b) => b === 7)).toBe(true);
  });
});

describe('executor lifecycle', () => {
  it('close() drains calls in flight, stops every worker, and later calls fail with PADDOCK_SHUTTING_DOWN', async () => {
    const ex = await newExecutor({ pool: { workers: 2, spares: 1 } });
    await installFixture(ex, 'echo');
    const inflight = Promise.all(Array.from({ length: 10 }, () => ex.call('echo', 'echo', 'x')));
    await ex.close();
    expect((await inflight).length).toBe(10);
    expect(ex.workerThreadIds).toEqual([]);
    expect(await codeOf(ex.call('echo', 'echo', 'late'))).toBe('PADDOCK_SHUTTING_DOWN');
    await ex.close(); // idempotent
  });

  it('leaves no worker or handle behind: a process that closes its executor exits by itself', async () => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./fixtures/close-exits.mjs', import.meta.url))], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(timer);
    expect(signal).toBe(null);
    expect(code).toBe(0);
    expect(out.trim()).toBe('echo:hi');
  });
});

import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { parseManifestText } from '../dist/index.js';
import type { Diagnostic } from '../dist/index.js';
import { codeOf, destroyAll, installFixture, newExecutor, text, u64 } from './helpers/executor.js';
import { fixture, watToWasm } from './helpers/wat.js';

afterEach(destroyAll);

const i64 = (b: Uint8Array) => BigInt.asIntN(64, u64(b));

describe('manifest', () => {
  it('accepts JSON and YAML, and names the offending field when invalid', () => {
    const yaml = parseManifestText('name: vowels\nversion: 1.0.0\nexports: [count_vowels]\ncapabilities:\n  kv: { read: true }\n');
    expect(yaml.capabilities.kv).toEqual({ read: true, write: false });
    expect(parseManifestText('{"name":"a","version":"1"}').name).toBe('a');
    const bad = (m: string) => {
      try {
        parseManifestText(m);
        return 'OK';
      } catch (e) {
        return `${(e as { code: string }).code} ${(e as Error).message}`;
      }
    };
    expect(bad('{"name":"a","version":"1","capabilities":{"http":{"hosts":[42]}}}')).toMatch(/^PADDOCK_INVALID_MANIFEST .*capabilities\.http\.hosts\[0\]/);
    expect(bad('{"name":"a","version":"1","limits":{"timeoutMs":-5}}')).toMatch(/limits\.timeoutMs/);
    expect(bad('{"name":"a","version":"1","surprise":true}')).toMatch(/PADDOCK_INVALID_MANIFEST/);
    expect(bad('name: [unclosed')).toMatch(/^PADDOCK_INVALID_MANIFEST/);
    expect(bad('{"name":"../etc","version":"1"}')).toMatch(/^PADDOCK_INVALID_MANIFEST .*name/);
  });
});

describe('effective rights never widen what is declared or granted', () => {
  it('refuses fs entries that are relative or not normalised, so ".." can never leave a granted root', () => {
    for (const entry of ['/srv/granted/../secret', '/srv/granted/../secret:/x', 'relative/dir', '/srv/./x', '/srv//x', '/srv/x/', '/srv/x:/g/../h']) {
      expect(() => parseManifestText(JSON.stringify({ name: 'a', version: '1', capabilities: { fs: { read: [entry] } } }))).toThrow(/capabilities\.fs\.read\[0\]/);
    }
    expect(parseManifestText(JSON.stringify({ name: 'a', version: '1', capabilities: { fs: { read: ['/srv/granted/sub:/data'] } } })).capabilities.fs?.read).toEqual(['/srv/granted/sub:/data']);
  });

  it('intersects intent patterns without widening: declared orders.> under a grant of orders.* keeps only orders.*', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { intents: { emit: ['orders.*'] } } });
    await installFixture(ex, 'wide', 'intent-loop', { capabilities: { intents: { emit: ['orders.>'] } } });
    expect(ex.get('wide').effective.intents?.emit).toEqual(['orders.*']);
    await installFixture(ex, 'narrow', 'intent-loop', { capabilities: { intents: { emit: ['orders.created', 'billing.*'] } } });
    expect(ex.get('narrow').effective.intents?.emit).toEqual(['orders.created']);
  });

  it('a sibling directory is not "inside" a granted one, and a HOST:GUEST grant counts by its host part', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { fs: { read: ['/srv/data:/data'], write: [] } } });
    await installFixture(ex, 'f', 'echo', { capabilities: { fs: { read: ['/srv/data/sub:/d', '/srv/data2', '/srv'] } } });
    expect(ex.get('f').effective.fs?.read).toEqual(['/srv/data/sub:/d']);
  });

  it('refuses at install a WASI module when WASI is not granted', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { log: true } });
    const wasi = await watToWasm('(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1) (func (export "run") (result i32) i32.const 0))');
    expect(await codeOf(ex.install({ name: 'w', version: '1', capabilities: { wasi: true } }, wasi))).toBe('PADDOCK_CAPABILITY_DENIED');
  });
});

describe('install-time audit (no plugin code runs)', () => {
  it('refuses undeclared and unknown imports, missing exports, digest mismatches and garbage, each with its code', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    expect(await codeOf(installFixture(ex, 'evil', 'undeclared-import'))).toBe('PADDOCK_UNDECLARED_IMPORT');
    // kv-probe imports paddock_kv_get, which needs "kv.read" declared.
    expect(await codeOf(installFixture(ex, 'probe', 'kv-probe'))).toBe('PADDOCK_UNDECLARED_IMPORT');
    const http = await watToWasm('(module (import "extism:host/env" "http_request" (func (param i64 i64) (result i64))) (func (export "run") (result i32) i32.const 0))');
    expect(await codeOf(ex.install({ name: 'h', version: '1' }, http))).toBe('PADDOCK_UNDECLARED_IMPORT');
    expect(await codeOf(ex.install({ name: 'h', version: '1', capabilities: { http: { hosts: [] } } }, http))).toBe('OK');
    expect(await codeOf(installFixture(ex, 'echo', 'echo', { exports: ['echo', 'not_there'] }))).toBe('PADDOCK_NO_SUCH_EXPORT');
    expect(await codeOf(installFixture(ex, 'echo', 'echo', { sha256: '0'.repeat(64) }))).toBe('PADDOCK_DIGEST_MISMATCH');
    expect(await codeOf(ex.install({ name: 'junk', version: '1' }, new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 200])))).toBe('PADDOCK_INVALID_WASM');
    expect(await codeOf(ex.install({ name: 'junk', version: '1' }, new TextEncoder().encode('not wasm')))).toBe('PADDOCK_INVALID_WASM');
    expect(ex.list().map((p) => p.name)).toEqual(['h']);
  });

  it('only declared exports are callable when the manifest lists them', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'echo', 'echo', { exports: ['echo'] });
    expect(text(await ex.call('echo', 'echo', 'x'))).toBe('x');
    expect(await codeOf(ex.call('echo', 'bump'))).toBe('PADDOCK_NO_SUCH_EXPORT');
  });

  it('installing never runs the start function; the first call does (the probe is real)', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    const logs: string[] = [];
    ex.on('log', (l) => logs.push(l.message));
    await installFixture(ex, 'side', 'start-side-effect', { capabilities: { log: true } });
    await new Promise((r) => setTimeout(r, 50));
    expect(logs).toEqual([]);
    await ex.call('side', 'run');
    expect(logs).toEqual(['start']);
  });
});

describe('broker: grants, policies, rate limits, budgets', () => {
  const kvProbe = (ex: Awaited<ReturnType<typeof newExecutor>>, tenant?: string) =>
    installFixture(ex, 'probe', 'kv-probe', { capabilities: { kv: { read: true } } }, tenant);

  it('serves a granted host call: kv read of a missing key returns 0', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { kv: { read: true, write: true } } });
    await kvProbe(ex);
    expect(i64(await ex.call('probe', 'get_once'))).toBe(0n);
  });

  it('declared but not granted: the plugin sees -1 and the error, a diagnostic is emitted (record policy)', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    const diags: Diagnostic[] = [];
    ex.on('diagnostic', (d) => diags.push(d));
    await kvProbe(ex);
    expect(i64(await ex.call('probe', 'get_once'))).toBe(-1n);
    expect(JSON.parse(text(await ex.call('probe', 'why')))).toEqual({ code: 'PADDOCK_CAPABILITY_DENIED', message: 'kv read is not granted to this plugin' });
    expect(diags[0]).toMatchObject({ kind: 'capability-denied', tenant: 'default', plugin: 'probe', capability: 'kv', reason: 'kv-read-not-granted' });
    expect(typeof diags[0].at).toBe('string');
    expect(ex.get('probe').quarantine.violations).toBe(2);
  });

  it('fail policy fails the call with PADDOCK_CAPABILITY_DENIED; kill policy also replaces the worker', async () => {
    const failing = await newExecutor({ pool: { workers: 1, spares: 0 }, policy: { onViolation: 'fail' } });
    await kvProbe(failing);
    expect(await codeOf(failing.call('probe', 'get_once'))).toBe('PADDOCK_CAPABILITY_DENIED');

    const strict = await newExecutor({ pool: { workers: 1, spares: 1 }, policy: { onViolation: 'kill' } });
    await kvProbe(strict);
    await installFixture(strict, 'echo');
    const restarts: string[] = [];
    strict.on('worker-restart', (e) => restarts.push(e.reason));
    const err = await strict.call('probe', 'get_once').catch((e) => e);
    expect(err.code).toBe('PADDOCK_CAPABILITY_DENIED');
    expect(err.message).toMatch(/kv read is not granted.*worker was replaced/);
    expect(restarts).toEqual(['violation']);
    expect(text(await strict.call('echo', 'echo', 'still here'))).toBe('still here');
  });

  it('rate-limits host calls per tenant and function: over the burst the plugin sees refusals', async () => {
    const ex = await newExecutor({
      pool: { workers: 1, spares: 0 },
      grants: { kv: { read: true } },
      policy: { hostCallRate: { perSecond: 0.001, burst: 3 }, quarantine: { threshold: 1000 } },
    });
    const reasons: string[] = [];
    ex.on('diagnostic', (d) => reasons.push(d.reason));
    await kvProbe(ex);
    expect(u64(await ex.call('probe', 'get_many'))).toBe(7n);
    expect(reasons).toEqual(Array(7).fill('host-rate-limit'));
    // Another tenant has its own bucket.
    ex.setTenant('acme', { grants: { kv: { read: true } } });
    await kvProbe(ex, 'acme');
    expect(u64(await ex.call('probe', 'get_many', '', { tenant: 'acme' }))).toBe(7n);
  });

  it('the bottleneck limiter adapter enforces the same per-tenant host-call limit', async () => {
    const ex = await newExecutor({
      pool: { workers: 1, spares: 0 },
      grants: { kv: { read: true } },
      policy: { limiter: 'bottleneck', hostCallRate: { perSecond: 0.001, burst: 3 }, quarantine: { threshold: 1000 } },
    });
    await kvProbe(ex);
    expect(u64(await ex.call('probe', 'get_many'))).toBe(7n);
  });

  it('caps bytes through host calls per invocation', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { kv: { read: true } }, limits: { maxHostCallBytes: 5 } });
    await kvProbe(ex);
    const err = await ex.call('probe', 'get_many').catch((e) => e);
    expect([err.code, err.details.reason]).toEqual(['PADDOCK_CAPABILITY_DENIED', 'host-call-bytes']);
  });

  it('caps host calls per invocation', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { kv: { read: true } }, limits: { maxHostCalls: 4 } });
    await kvProbe(ex);
    const err = await ex.call('probe', 'get_many').catch((e) => e);
    expect(err.code).toBe('PADDOCK_CAPABILITY_DENIED');
    expect(err.details.reason).toBe('host-call-budget');
  });

  it('cuts a chain of plugin-to-plugin intents at the maximum depth', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { intents: { emit: ['loop.*'] } }, policy: { maxIntentDepth: 3 } });
    await installFixture(ex, 'looper', 'intent-loop', { capabilities: { intents: { emit: ['loop.*'] } }, subscriptions: [{ topic: 'loop.*', function: 'again' }] });
    const denied = new Promise<Diagnostic>((resolve) => ex.on('diagnostic', (d) => d.reason === 'intent-depth' && resolve(d)));
    let processed = 0;
    ex.on('intent', () => processed++);
    const first = await ex.emitIntent('loop.x');
    expect(first.deliveries).toHaveLength(1);
    expect(i64(first.deliveries[0].output!)).toBe(0n);
    expect((await denied).plugin).toBe('looper');
    // depth 0 (emitIntent) emits at 1, 2, 3; the call at depth 3 is refused to go deeper.
    await ex.close();
    expect(processed).toBe(3);
  });
});

describe('quarantine', () => {
  it('quarantines a plugin after repeated violations, probes after the cool-down, and recovers', async () => {
    const ex = await newExecutor({
      pool: { workers: 1, spares: 1 },
      limits: { timeoutMs: 150 },
      policy: { quarantine: { threshold: 2, windowMs: 60_000, cooldownMs: 400 } },
    });
    await installFixture(ex, 'loop', 'loop-forever');
    const kinds: string[] = [];
    ex.on('diagnostic', (d) => kinds.push(d.kind));
    expect(await codeOf(ex.call('loop', 'run'))).toBe('PADDOCK_TIMEOUT');
    expect(await codeOf(ex.call('loop', 'run'))).toBe('PADDOCK_TIMEOUT');
    expect(kinds).toEqual(['timeout', 'timeout', 'quarantined']);
    expect(ex.get('loop').quarantine.state).toBe('open');
    const t0 = performance.now();
    expect(await codeOf(ex.call('loop', 'ok'))).toBe('PADDOCK_QUARANTINED');
    expect(performance.now() - t0).toBeLessThan(50);
    await new Promise((r) => setTimeout(r, 450));
    // Half-open: a failing probe opens the breaker again...
    expect(await codeOf(ex.call('loop', 'run'))).toBe('PADDOCK_TIMEOUT');
    expect(await codeOf(ex.call('loop', 'ok'))).toBe('PADDOCK_QUARANTINED');
    await new Promise((r) => setTimeout(r, 450));
    // ...and a good probe closes it.
    expect(await codeOf(ex.call('loop', 'ok'))).toBe('OK');
    expect(ex.get('loop').quarantine.state).toBe('closed');
    expect(await codeOf(ex.call('loop', 'ok'))).toBe('OK');
    expect(kinds.at(-1)).toBe('quarantine-lifted');
  });

  it('the operator can lift a quarantine, and a new version starts clean', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, policy: { quarantine: { threshold: 1, cooldownMs: 60_000 } } });
    await installFixture(ex, 'bad', 'unreachable');
    expect(await codeOf(ex.call('bad', 'run'))).toBe('PADDOCK_TRAP');
    expect(await codeOf(ex.call('bad', 'run'))).toBe('PADDOCK_QUARANTINED');
    ex.releaseQuarantine('bad');
    expect(await codeOf(ex.call('bad', 'run'))).toBe('PADDOCK_TRAP');
    expect(await codeOf(ex.call('bad', 'run'))).toBe('PADDOCK_QUARANTINED');
    await installFixture(ex, 'bad', 'echo', { version: '2.0.0' });
    expect(text(await ex.call('bad', 'echo', 'v2'))).toBe('v2');
  });
});

describe('hot reload', () => {
  it('a new version takes effect for new calls while calls in flight finish; no call fails', async () => {
    const greet = new Uint8Array(await readFile(new URL('../build/plugins/greet.wasm', import.meta.url)));
    const ex = await newExecutor({ pool: { workers: 2, spares: 1 } });
    await ex.install({ name: 'greet', version: '1.0.0', config: { greeting: 'v1' } }, greet);
    const calls: Array<Promise<string>> = [];
    for (let i = 0; i < 300; i++) {
      calls.push(ex.call('greet', 'greet', 'x').then(text));
      if (i === 150) await ex.install({ name: 'greet', version: '2.0.0', config: { greeting: 'v2' } }, greet);
    }
    const results = await Promise.all(calls);
    expect(results.every((r) => r === 'v1, x!' || r === 'v2, x!')).toBe(true);
    expect(results.slice(151).every((r) => r === 'v2, x!')).toBe(true);
    expect(results.filter((r) => r === 'v1, x!').length).toBeGreaterThan(0);
    expect(ex.get('greet').version).toBe('2.0.0');
  });
});

describe('isolation of plugin memory from the host', () => {
  it('an out-of-bounds access in guest memory never reads host data: it traps', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    await installFixture(ex, 'oob', 'oob-read');
    expect(await codeOf(ex.call('oob', 'run'))).toBe('PADDOCK_TRAP');
    expect((await fixture('oob-read')).byteLength).toBeGreaterThan(8);
  });
});

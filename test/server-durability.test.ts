import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { fixture } from './helpers/wat.js';
import { ADMIN, boot, client, install, newTenant, plugin, removeDir, tempDir } from './helpers/server.js';

const childScript = fileURLToPath(new URL('./fixtures/server-child.mjs', import.meta.url));
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function spawnServer(dataDir: string): Promise<{ child: ChildProcessWithoutNullStreams; url: string }> {
  const child = spawn(process.execPath, [childScript, dataDir], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = createInterface({ input: child.stdout });
  const [url] = (await once(lines, 'line')) as [string];
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  return { child, url };
}

describe('durability', () => {
  it('plugins, enable state, tenants, keys and KV survive a clean restart', async () => {
    const dir = await tempDir();
    cleanups.push(() => removeDir(dir));
    let server = await boot(dir);
    let api = client(server.url);
    const key = await newTenant(api, 'keep', { grants: { kv: { read: true, write: true } } });
    await install(api, key, { name: 'counter', version: '1.0.0', capabilities: { kv: { read: true, write: true } } }, await plugin('kv-counter'));
    await install(api, key, { name: 'off', version: '1.0.0' }, await plugin('echo'));
    await api('POST', '/v1/plugins/off/disable', { token: key });
    for (let i = 0; i < 3; i++) await api('POST', '/v1/plugins/counter/call/incr', { token: key, body: 'n' });
    await server.close();

    server = await boot(dir);
    cleanups.push(() => server.close());
    api = client(server.url);
    expect((await api('POST', '/v1/plugins/counter/call/incr', { token: key, body: 'n' })).text).toBe('4');
    expect((await api('GET', '/v1/plugins/off', { token: key })).json.enabled).toBe(false);
    expect((await api('GET', '/v1/tenants', { token: ADMIN })).json.tenants.map((t: { name: string }) => t.name)).toEqual(['keep']);
  });

  it('a kill -9 loses no acknowledged write', async () => {
    const dir = await tempDir();
    cleanups.push(() => removeDir(dir));
    const { child, url } = await spawnServer(dir);
    const api = client(url);
    const key = await newTenant(api, 'crash', { grants: { kv: { read: true, write: true } } });
    const installed = await install(api, key, { name: 'counter', version: '1.0.0', capabilities: { kv: { read: true, write: true } } }, await plugin('kv-counter'));
    expect(installed.status).toBe(201);
    const acked: string[] = [];
    for (let i = 0; i < 25; i++) {
      const r = await api('POST', '/v1/plugins/counter/call/incr', { token: key, body: `k${i}` });
      if (r.status === 200) acked.push(`k${i}`);
    }
    const killed = once(child, 'exit');
    child.kill('SIGKILL');
    await killed;

    const server = await boot(dir);
    cleanups.push(() => server.close());
    const api2 = client(server.url);
    const keys = (await api2('GET', '/v1/plugins/counter/kv?limit=100', { token: key })).json.keys;
    expect(acked.length).toBe(25);
    expect([...keys].sort()).toEqual([...acked].sort());
  });

  it('SIGTERM: stops accepting, lets calls in flight finish with 200, and exits 0', async () => {
    const dir = await tempDir();
    cleanups.push(() => removeDir(dir));
    const { child, url } = await spawnServer(dir);
    const api = client(url);
    const key = await newTenant(api, 'term');
    await install(api, key, { name: 'spin', version: '1.0.0' }, await fixture('spin'));
    // Each call spins ~100M iterations: long enough to be in flight when the signal lands.
    const inflight = [1, 2].map(() => api('POST', '/v1/plugins/spin/call/spin', { token: key, body: new Uint8Array([100]) }));
    await new Promise((r) => setTimeout(r, 50));
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const results = await Promise.all(inflight);
    expect(results.map((r) => [r.status, r.text])).toEqual([
      [200, 'done'],
      [200, 'done'],
    ]);
    const [code] = (await exited) as [number];
    expect(code).toBe(0);
  });
});

describe('tenants from the config file', () => {
  it('creates them at start-up with the configured grants, prints each key once, and keeps them on restart', async () => {
    const dir = await tempDir();
    cleanups.push(() => removeDir(dir));
    const tenants = [{ name: 'fromfile', grants: { kv: { read: true, write: true } }, quotas: { callsPerSecond: 7 } }];
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const { startServer } = await import('../dist/server/index.js');
    let server = await startServer({ port: 0, host: '127.0.0.1', dataDir: dir, adminToken: ADMIN, tenants }, { log: pino({ level: 'info' }, sink) });
    const printed = lines.find((l) => l.tenant === 'fromfile' && typeof l.apiKey === 'string');
    expect(printed).toBeDefined();
    let api = client(server.url);
    const listed = (await api('GET', '/v1/tenants', { token: ADMIN })).json.tenants;
    expect(listed).toMatchObject([{ name: 'fromfile', grants: { kv: { read: true, write: true } }, quotas: { callsPerSecond: 7 } }]);
    expect((await api('GET', '/v1/plugins', { token: printed!.apiKey as string })).status).toBe(200);
    await server.close();
    // A restart finds the tenant in the store: no second key is issued, the first still works.
    lines.length = 0;
    server = await startServer({ port: 0, host: '127.0.0.1', dataDir: dir, adminToken: ADMIN, tenants }, { log: pino({ level: 'info' }, sink) });
    cleanups.push(() => server.close());
    api = client(server.url);
    expect(lines.some((l) => typeof l.apiKey === 'string')).toBe(false);
    expect((await api('GET', '/v1/plugins', { token: printed!.apiKey as string })).status).toBe(200);
  });
});

describe('fair scheduling under a flood', () => {
  it("a flooding tenant gets 429s with Retry-After while another tenant's calls keep succeeding", async () => {
    const dir = await tempDir();
    cleanups.push(() => removeDir(dir));
    const server = await boot(dir);
    cleanups.push(() => server.close());
    const api = client(server.url);
    const flood = await newTenant(api, 'flood', { quotas: { callsPerSecond: 50, burst: 20, maxConcurrent: 2, maxQueued: 10 } });
    const calm = await newTenant(api, 'calm');
    const echo = await plugin('echo');
    await install(api, flood, { name: 'e', version: '1.0.0' }, echo);
    await install(api, calm, { name: 'e', version: '1.0.0' }, echo);
    const floodCalls = Array.from({ length: 300 }, () => api('POST', '/v1/plugins/e/call/echo', { token: flood, body: 'f' }));
    const calmCalls: Array<Promise<{ status: number }>> = [];
    for (let i = 0; i < 20; i++) calmCalls.push(api('POST', '/v1/plugins/e/call/echo', { token: calm, body: 'c' }));
    const floodResults = await Promise.all(floodCalls);
    const calmResults = await Promise.all(calmCalls);
    expect(calmResults.every((r) => r.status === 200)).toBe(true);
    const limited = floodResults.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(200);
    expect(floodResults.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(20);
    expect(floodResults.every((r) => r.status === 200 || r.status === 429)).toBe(true);
    for (const r of limited) {
      expect(['PADDOCK_RATE_LIMITED', 'PADDOCK_QUEUE_FULL']).toContain(r.json.error.code);
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    const metrics = await api('GET', '/metrics');
    expect(metrics.text).toMatch(/paddock_rate_limited_total\{tenant="flood",code="(rate_limited|queue_full)"\} \d+/);
  });
});

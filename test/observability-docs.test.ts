// Keeps docs/metrics.md and grafana/paddock-dashboard.json honest: both are checked against the
// metric families a real server exports after a few calls.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../dist/server/index.js';

const ROOT = new URL('../', import.meta.url);
const ADMIN = 'x'.repeat(20);

let dir: string;
let server: RunningServer;
/** family name → type, from the `# TYPE` lines of /metrics. */
const exported = new Map<string, string>();

async function api(method: string, path: string, token: string, body?: unknown, raw = false): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined && !raw) headers['content-type'] = 'application/json';
  return fetch(server.url + path, { method, headers, body: body === undefined ? undefined : raw ? (body as string) : JSON.stringify(body) });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'paddock-obs-'));
  server = await startServer({ port: 0, dataDir: dir, adminToken: ADMIN, logLevel: 'silent' });
  const tenant = await api('POST', '/v1/tenants', ADMIN, { name: 'obs' });
  expect(tenant.status).toBe(201);
  const { apiKey } = (await tenant.json()) as { apiKey: string };
  const wasm = await readFile(new URL('build/plugins/echo.wasm', ROOT));
  const installed = await api('POST', '/v1/plugins', apiKey, { manifest: { name: 'echo', version: '1.0.0' }, wasm: wasm.toString('base64') });
  expect(installed.status).toBe(201);
  for (let i = 0; i < 3; i++) {
    const call = await api('POST', '/v1/plugins/echo/call/echo', apiKey, `hello ${i}`, true);
    expect(call.status).toBe(200);
    expect(await call.text()).toBe(`hello ${i}`);
  }
  expect((await api('POST', '/v1/plugins/echo/call/missing', apiKey, 'x', true)).status).toBe(404);
  expect((await api('POST', '/v1/intents', apiKey, [{ topic: 'obs.test', payload: 'p' }])).status).toBe(200);

  const res = await fetch(`${server.url}/metrics`);
  expect(res.status).toBe(200);
  const text = await res.text();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) exported.set(m[1], m[2]);
  }
  // The labelled series the dashboard relies on exist.
  expect(text).toMatch(/^paddock_calls_total\{tenant="obs",plugin="echo",function="echo",outcome="ok"\} 3$/m);
  expect(text).toMatch(/^paddock_call_duration_seconds_bucket\{le="[^"]+",tenant="obs",outcome="ok"\} /m);
});

afterAll(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Map a series name (`x_bucket`, `x_sum`, `x_count`) back to its histogram family. */
function familyOf(name: string): string {
  if (exported.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return base !== name && exported.get(base) === 'histogram' ? base : name;
}

describe('docs/metrics.md', () => {
  it('documents exactly the metric families the server exports', async () => {
    const md = await readFile(new URL('docs/metrics.md', ROOT), 'utf8');
    const documented = new Map<string, { type: string; linuxOnly: boolean }>();
    for (const line of md.split('\n')) {
      const m = /^\|\s*`(paddock_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|(.*)$/.exec(line);
      if (m) documented.set(m[1], { type: m[2], linuxOnly: /\(Linux only\)/.test(m[3]) });
    }
    expect(exported.size).toBeGreaterThan(20);
    expect(documented.size).toBeGreaterThan(20);

    const undocumented = [...exported.keys()].filter((n) => !documented.has(n));
    const notExported = [...documented].filter(([n, d]) => !exported.has(n) && !(d.linuxOnly && process.platform !== 'linux')).map(([n]) => n);
    expect(undocumented, 'exported but missing from docs/metrics.md').toEqual([]);
    expect(notExported, 'documented in docs/metrics.md but not exported').toEqual([]);
    for (const [name, type] of exported) expect(documented.get(name)?.type, `type of ${name}`).toBe(type);
  });
});

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr?: string }>;
  panels?: Panel[];
}

describe('grafana/paddock-dashboard.json', () => {
  const load = async () => JSON.parse(await readFile(new URL('grafana/paddock-dashboard.json', ROOT), 'utf8'));
  const walk = (panels: Panel[]): Panel[] => panels.flatMap((p) => [p, ...walk(p.panels ?? [])]);

  it('is an importable dashboard with a prometheus datasource variable', async () => {
    const d = await load();
    expect(d.uid).toBe('paddock');
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    const ds = d.templating.list.find((v: { name: string }) => v.name === 'datasource');
    expect(ds).toMatchObject({ type: 'datasource', query: 'prometheus' });
  });

  it('queries only metric families the server exports', async () => {
    const panels = walk((await load()).panels).filter((p) => p.type !== 'row');
    const used = new Set<string>();
    for (const p of panels) {
      for (const t of p.targets ?? []) for (const name of (t.expr ?? '').match(/paddock_[a-z0-9_]+/g) ?? []) used.add(name);
    }
    expect(used.size).toBeGreaterThan(10);
    const unknown = [...used].filter((n) => !exported.has(familyOf(n)));
    expect(unknown, 'metrics queried by the dashboard that the server does not export').toEqual([]);
    // Histogram series are used through their buckets.
    expect(used).toContain('paddock_call_duration_seconds_bucket');
    expect(used).toContain('paddock_host_call_duration_seconds_bucket');
  });

  it('has the expected panels, each with at least one query', async () => {
    const panels = walk((await load()).panels).filter((p) => p.type !== 'row');
    const titles = panels.map((p) => p.title);
    for (const title of [
      'Throughput by outcome',
      'Error rate by code',
      'Call latency percentiles',
      'Host calls by function and outcome',
      'Host-call latency',
      'Policy denials',
      'Violations',
      'Worker restarts by reason',
      'Pool utilisation',
      'Queue depths',
      'Rate-limited per tenant',
      'Top tenants by calls',
      'Top tenants by busy seconds',
      'Intents by outcome',
      'Quarantined plugins',
      'Wasm memory',
      'Process memory',
      'Process CPU',
    ]) {
      expect(titles, `panel "${title}"`).toContain(title);
    }
    for (const p of panels) {
      const exprs = (p.targets ?? []).map((t) => t.expr ?? '').filter((e) => e.trim() !== '');
      expect(exprs.length, `targets of "${p.title}"`).toBeGreaterThan(0);
    }
    const latency = panels.find((p) => p.title === 'Call latency percentiles')!;
    const quantiles = latency.targets!.map((t) => /histogram_quantile\((0\.\d+)/.exec(t.expr!)?.[1]);
    expect(quantiles).toEqual(['0.5', '0.9', '0.99']);
    for (const title of ['Top tenants by calls', 'Top tenants by busy seconds']) {
      expect(panels.find((p) => p.title === title)!.targets![0].expr).toMatch(/^topk\(/);
    }
  });
});

import { Writable } from 'node:stream';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../dist/server/metrics.js';
import { destroyAll, installFixture, newExecutor } from './helpers/executor.js';
import { startServer } from '../dist/server/index.js';
import { ADMIN, client, install, newTenant, plugin, removeDir, tempDir } from './helpers/server.js';
import { fixture } from './helpers/wat.js';

/** Value of one sample in Prometheus text, 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{ ]+(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const got = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[2]);
  }
  return 0;
}

describe('metrics move exactly', () => {
  let dir: string;
  let logLines: Array<Record<string, unknown>>;
  let server: Awaited<ReturnType<typeof startServer>>;
  let api: ReturnType<typeof client>;
  let key: string;

  beforeAll(async () => {
    dir = await tempDir();
    logLines = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n').filter(Boolean)) logLines.push(JSON.parse(l));
        cb();
      },
    });
    // A server whose log lines we can read (boot() silences them).
    server = await startServer(
      { port: 0, host: '127.0.0.1', dataDir: dir, adminToken: ADMIN, pluginLogs: { linesPerSecond: 0.001, burst: 2 }, executor: { pool: { workers: 2, spares: 1 } } },
      { log: pino({ level: 'debug' }, sink) },
    );
    api = client(server.url);
    key = await newTenant(api, 'obs', { quotas: { maxTimeoutMs: 300, callsPerSecond: 10_000, burst: 10_000, maxConcurrent: 16 } });
    await install(api, key, { name: 'echo', version: '1.0.0' }, await plugin('echo'));
    await install(api, key, { name: 'loop', version: '1.0.0' }, await fixture('loop-forever'));
    await install(api, key, { name: 'probe', version: '1.0.0', capabilities: { kv: { read: true } } }, await fixture('kv-probe'));
    await install(api, key, { name: 'logger', version: '1.0.0', capabilities: { log: true }, logLevel: 'debug' }, await plugin('logger'));
  });
  afterAll(async () => {
    await server.close();
    await removeDir(dir);
  });

  it('N calls → +N; one timeout → one restart and one timeout outcome; one denial → one denial', async () => {
    const before = (await api('GET', '/metrics')).text;
    const N = 60;
    const calls = Array.from({ length: N }, () => api('POST', '/v1/plugins/echo/call/echo', { token: key, body: 'x' }));
    // Scrape while the load is running: the endpoint must answer under load.
    const during = await api('GET', '/metrics');
    expect(during.status).toBe(200);
    expect((await Promise.all(calls)).every((r) => r.status === 200)).toBe(true);
    expect((await api('POST', '/v1/plugins/loop/call/run', { token: key, body: '' })).json.error.code).toBe('PADDOCK_TIMEOUT');
    expect((await api('POST', '/v1/plugins/probe/call/get_once', { token: key, body: '' })).status).toBe(200);
    const after = (await api('GET', '/metrics')).text;

    const delta = (name: string, labels: Record<string, string>) => sample(after, name, labels) - sample(before, name, labels);
    expect(delta('paddock_calls_total', { tenant: 'obs', plugin: 'echo', function: 'echo', outcome: 'ok' })).toBe(N);
    expect(delta('paddock_call_duration_seconds_count', { tenant: 'obs', outcome: 'ok' })).toBe(N + 1);
    expect(delta('paddock_calls_total', { tenant: 'obs', plugin: 'loop', function: 'run', outcome: 'timeout' })).toBe(1);
    expect(delta('paddock_worker_restarts_total', { reason: 'timeout' })).toBe(1);
    expect(delta('paddock_policy_denials_total', { capability: 'kv', reason: 'kv-read-not-granted' })).toBe(1);
    expect(delta('paddock_host_calls_total', { function: 'kv_get', outcome: 'capability_denied' })).toBe(1);
    expect(delta('paddock_violations_total', { kind: 'timeout' })).toBe(1);
    expect(delta('paddock_violations_total', { kind: 'capability-denied' })).toBe(1);
    expect(delta('paddock_plugin_busy_seconds_total', { tenant: 'obs', plugin: 'echo' })).toBeGreaterThan(0);
    expect(sample(after, 'paddock_pool_workers', {})).toBe(3);
    expect(after).toMatch(/^paddock_process_cpu_user_seconds_total /m);
  });

  it('routes plugin logs at their own level with tenant, plugin and call id, rate-limited per plugin', async () => {
    const before = (await api('GET', '/metrics')).text;
    expect((await api('POST', '/v1/plugins/logger/call/log_all', { token: key, body: '' })).text).toBe('logged');
    const fromPlugin = logLines.filter((l) => l.source === 'plugin' && l.plugin === 'logger');
    // 4 lines logged by the plugin, a burst of 2 let through
    expect(fromPlugin.map((l) => l.level)).toEqual([30, 20]);
    expect(fromPlugin[0]).toMatchObject({ tenant: 'obs', plugin: 'logger', fn: 'log_all', msg: 'info from logger plugin' });
    expect(typeof fromPlugin[0].callId).toBe('number');
    const after = (await api('GET', '/metrics')).text;
    expect(sample(after, 'paddock_plugin_log_lines_dropped_total', { tenant: 'obs' }) - sample(before, 'paddock_plugin_log_lines_dropped_total', { tenant: 'obs' })).toBe(2);
    expect(logLines.some((l) => l.msg === 'worker replaced' && l.reason === 'timeout')).toBe(true);
  });
});

describe('label cardinality', () => {
  afterEach(destroyAll);

  it('bounds tenant and function labels: past the cap, values go to "other"', async () => {
    const ex = await newExecutor({ pool: { workers: 1, spares: 0 } });
    const metrics = new Metrics(ex, null, { maxTenants: 5, maxFunctions: 3 });
    for (let i = 0; i < 40; i++) {
      ex.setTenant(`t${i}`);
      await installFixture(ex, 'echo', 'echo', {}, `t${i}`);
      await ex.call('echo', `missing_${i}`, '', { tenant: `t${i}` }).catch(() => {});
    }
    const text = await metrics.render();
    const series = text.split('\n').filter((l) => l.startsWith('paddock_calls_total{'));
    expect(series.length).toBeLessThanOrEqual(6 * 4);
    expect(series.some((l) => l.includes('tenant="other"') && l.includes('function="other"'))).toBe(true);
    expect(series.reduce((n, l) => n + Number(l.split(' ').pop()), 0)).toBe(40);
  });
});

describe('tracing', () => {
  afterEach(destroyAll);

  it('emits a span per plugin call and a child span per host call when an OpenTelemetry SDK is registered', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    trace.setGlobalTracerProvider(provider);
    try {
      const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { kv: { read: true } } });
      await installFixture(ex, 'probe', 'kv-probe', { capabilities: { kv: { read: true } } });
      await ex.call('probe', 'get_once');
      await ex.call('probe', 'nope').catch(() => {});
      const spans = exporter.getFinishedSpans();
      const call = spans.find((s) => s.name === 'paddock.call probe.get_once')!;
      const host = spans.find((s) => s.name === 'paddock.hostcall kv_get')!;
      expect(call.attributes).toMatchObject({ 'paddock.tenant': 'default', 'paddock.plugin': 'probe', 'paddock.function': 'get_once', 'paddock.outcome': 'ok' });
      expect(host.parentSpanContext?.spanId).toBe(call.spanContext().spanId);
      const failed = spans.find((s) => s.name === 'paddock.call probe.nope')!;
      expect(failed.attributes['paddock.outcome']).toBe('PADDOCK_NO_SUCH_EXPORT');
      expect(failed.status.code).toBe(2);
    } finally {
      trace.disable();
      await provider.shutdown();
    }
  });
});

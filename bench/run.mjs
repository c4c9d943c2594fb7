#!/usr/bin/env node
// Paddock's benchmarks, every comparison in one run on one machine, each figure next to its
// baseline as a ratio. Writes bench/results/latest.json and latest.md.
//
//   node bench/run.mjs                       # everything, ~1 minute
//   node bench/run.mjs --only a,c            # some sections (a b c d e)
//   node bench/run.mjs --duration 3000       # ms per measurement (default 2000)
//   node bench/run.mjs --smoke --out /tmp/x  # tiny run that only checks the bench still works

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { createPlugin } from '@extism/extism';
import { Piscina } from 'piscina';
import wabtInit from 'wabt';
import { createExecutor } from '../dist/index.js';
import { closedLoop, percentile, sleep } from './lib/measure.mjs';

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const smoke = args.includes('--smoke');
const duration = Number(arg('duration', smoke ? 150 : 2000));
const only = new Set((arg('only', 'a,b,c,d,e')).split(','));
const outDir = arg('out', fileURLToPath(new URL('./results/', import.meta.url)));
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const plugins = (name) => here(`../build/plugins/${name}.wasm`);

const rows = [];
/** One line of the table: a figure, its baseline, the ratio, and the target it is held to. */
function row(section, name, value, unit, { baseline = null, baselineName = '', higherIsBetter = true, target = null, targetText = '' } = {}) {
  const ratio = baseline ? value / baseline : null;
  let met = null;
  if (target !== null) met = target(value, ratio);
  rows.push({ section, name, value: round(value), unit, baselineName, baseline: baseline === null ? null : round(baseline), ratio: ratio === null ? null : Math.round(ratio * 1000) / 1000, higherIsBetter, target: targetText, met });
  const r = ratio === null ? '' : `  (${ratio.toFixed(3)}× ${baselineName})`;
  console.log(`[${section}] ${name}: ${round(value)} ${unit}${r}${met === null ? '' : met ? '  ✓' : '  ✗ target ' + targetText}`);
}
const round = (x) => (Math.abs(x) >= 100 ? Math.round(x) : Math.round(x * 100) / 100);

const wasmEcho = new Uint8Array(await readFile(plugins('echo')));
const input = new TextEncoder().encode('hello, paddock');

async function wat(name) {
  const wabt = await wabtInit();
  const src = await readFile(name, 'utf8');
  const m = wabt.parseWat(name, src, {});
  m.resolveNames();
  const out = Uint8Array.from(m.toBinary({}).buffer);
  m.destroy();
  return out;
}

async function child(script, argv) {
  const p = spawn(process.execPath, [script, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [url] = await once(createInterface({ input: p.stdout }), 'line');
  return {
    url,
    async stop() {
      const exited = once(p, 'exit');
      p.kill('SIGTERM');
      await exited;
    },
  };
}

function cannon(opts) {
  return new Promise((resolve, reject) => {
    autocannon({ duration: Math.max(1, Math.round(duration / 1000)), ...opts }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// ── a. trivial-call throughput and latency ────────────────────────────────────────────────────
async function benchA() {
  const raw = await createPlugin({ wasm: [{ data: wasmEcho }] }, { useWasi: false });
  const rawRes = await closedLoop(() => raw.call('echo', input), { concurrency: 1, durationMs: duration });
  await raw.close();
  row('a', 'raw @extism/extism in-process (1 core, no isolation)', rawRes.rate, 'calls/s');
  row('a', 'raw @extism/extism p50 / p99', rawRes.p50, `µs p50, ${round(rawRes.p99)} µs p99`);

  const bg = await createPlugin({ wasm: [{ data: wasmEcho }] }, { useWasi: false, runInWorker: true });
  const bgRes = await closedLoop(() => bg.call('echo', input), { concurrency: 1, durationMs: duration });
  await bg.close();
  row('a', '@extism/extism runInWorker: true', bgRes.rate, 'calls/s', { baseline: rawRes.rate, baselineName: 'raw' });

  const naive = new Piscina({ filename: here('./fixtures/naive-worker.mjs'), minThreads: 2, maxThreads: 2, workerData: { wasm: plugins('echo') } });
  const naiveRes = await closedLoop(() => naive.run({ fn: 'echo', input }), { concurrency: 64, durationMs: duration });
  await naive.destroy();
  row('a', 'naive piscina + extism, one call per task (2 threads, 64 in flight)', naiveRes.rate, 'calls/s', { baseline: rawRes.rate, baselineName: 'raw' });

  const ex = await createExecutor({ pool: { workers: 2, spares: 1 } });
  await ex.install({ name: 'echo', version: '1.0.0' }, wasmEcho);
  const pd = await closedLoop(() => ex.call('echo', 'echo', input), { concurrency: 256, durationMs: duration });
  const pd1 = await closedLoop(() => ex.call('echo', 'echo', input), { concurrency: 1, durationMs: duration });
  await ex.close();
  row('a', 'Paddock createExecutor (2 workers, 256 in flight)', pd.rate, 'calls/s', { baseline: rawRes.rate, baselineName: 'raw', target: (_v, r) => r >= 1.0, targetText: '≥ 1.0× raw' });
  row('a', 'Paddock vs runInWorker', pd.rate, 'calls/s', { baseline: bgRes.rate, baselineName: 'runInWorker', target: (_v, r) => r >= 100, targetText: '≥ 100× runInWorker' });
  row('a', 'Paddock vs naive piscina', pd.rate, 'calls/s', { baseline: naiveRes.rate, baselineName: 'naive piscina' });
  row('a', 'Paddock p50 / p99 at 256 in flight', pd.p50, `µs p50, ${round(pd.p99)} µs p99`);
  row('a', 'Paddock p50 / p99, one call at a time', pd1.p50, `µs p50, ${round(pd1.p99)} µs p99`, { baseline: rawRes.p50, baselineName: 'raw p50', higherIsBetter: false });
}

// ── b. HTTP: Paddock's call route vs a minimal fastify + extism, no isolation ────────────────
async function benchB() {
  const dataDir = await mkdtemp(join(tmpdir(), 'paddock-bench-'));
  const base = await child(here('./fixtures/baseline-server.mjs'), [plugins('echo')]);
  const pd = await child(here('./fixtures/paddock-server.mjs'), [dataDir]);
  try {
    const admin = { authorization: 'Bearer bench-admin-token-0123456789', 'content-type': 'application/json' };
    const t = await (await fetch(`${pd.url}/v1/tenants`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'bench', quotas: { callsPerSecond: 1e6, burst: 1e6, maxConcurrent: 64, maxQueued: 100000 } }) })).json();
    const key = { authorization: `Bearer ${t.apiKey}` };
    await fetch(`${pd.url}/v1/plugins`, { method: 'POST', headers: { ...key, 'content-type': 'application/json' }, body: JSON.stringify({ manifest: { name: 'echo', version: '1.0.0' }, wasm: Buffer.from(wasmEcho).toString('base64') }) });
    const common = { method: 'POST', body: 'hello, paddock', connections: 32, pipelining: 1 };
    const bMax = await cannon({ ...common, url: `${base.url}/call/echo` });
    const pMax = await cannon({ ...common, url: `${pd.url}/v1/plugins/echo/call/echo`, headers: key });
    if (pMax.non2xx > 0) throw new Error(`paddock answered ${pMax.non2xx} non-2xx`);
    row('b', 'fastify + extism in-process (max)', bMax.requests.average, 'req/s');
    row('b', 'Paddock call route (max)', pMax.requests.average, 'req/s', { baseline: bMax.requests.average, baselineName: 'fastify+extism', target: (_v, r) => r >= 0.7, targetText: '≥ 0.7× baseline' });
    // Latency at a fixed overall rate both can sustain, so overload does not hide in the numbers.
    const rate = Math.max(100, Math.round(Math.min(bMax.requests.average, pMax.requests.average) * 0.5));
    const bFix = await cannon({ ...common, connections: 16, overallRate: rate, url: `${base.url}/call/echo` });
    const pFix = await cannon({ ...common, connections: 16, overallRate: rate, url: `${pd.url}/v1/plugins/echo/call/echo`, headers: key });
    row('b', `fastify + extism p50 at ${rate} req/s`, bFix.latency.p50, `ms (p99 ${bFix.latency.p99} ms)`);
    row('b', `Paddock p50 at ${rate} req/s`, pFix.latency.p50, `ms (p99 ${pFix.latency.p99} ms)`, { baseline: bFix.latency.p50, baselineName: 'baseline p50', higherIsBetter: false });
    row('b', `Paddock p99 at ${rate} req/s`, pFix.latency.p99, 'ms', { baseline: bFix.latency.p99, baselineName: 'baseline p99', higherIsBetter: false, target: (_v, r) => r <= 2, targetText: '≤ 2× baseline p99' });
  } finally {
    await base.stop();
    await pd.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

// ── c. host-call round trip: broker (main thread) vs answered inside the worker ──────────────
async function benchC() {
  const wasm = await wat(here('./fixtures/hostcall.wat'));
  const ex = await createExecutor({ pool: { workers: 1, spares: 0 }, grants: { clock: true, config: true }, policy: { hostCallRate: { perSecond: 1e9, burst: 1e9 } } });
  await ex.install({ name: 'hc', version: '1.0.0', capabilities: { clock: true }, config: { k: 'v' } }, wasm);
  const samples = { broker: [], local: [] };
  ex.on('call', (e) => {
    if (!e.stats) return;
    if (e.fn === 'broker') samples.broker.push(e.stats.brokerMicros);
    if (e.fn === 'local') samples.local.push(e.stats.localHostMicros);
  });
  await closedLoop(() => ex.call('hc', 'broker'), { concurrency: 1, durationMs: duration });
  await closedLoop(() => ex.call('hc', 'local'), { concurrency: 1, durationMs: duration });
  await ex.close();
  const b = Float64Array.from(samples.broker).sort();
  const l = Float64Array.from(samples.local).sort();
  row('c', 'host function inside the worker (config_get), median', percentile(l, 0.5), `µs (p99 ${round(percentile(l, 0.99))} µs)`);
  row('c', 'broker round trip (paddock_clock_now), median', percentile(b, 0.5), 'µs', { baseline: percentile(l, 0.5), baselineName: 'in-worker', higherIsBetter: false, target: (v) => v <= 15, targetText: '≤ 15 µs' });
  row('c', 'broker round trip, p99', percentile(b, 0.99), 'µs', { baseline: percentile(l, 0.99), baselineName: 'in-worker p99', higherIsBetter: false });
}

// ── d. noisy neighbour ─────────────────────────────────────────────────────────────────────────
async function benchD() {
  const dataDir = await mkdtemp(join(tmpdir(), 'paddock-bench-'));
  const pd = await child(here('./fixtures/paddock-server.mjs'), [dataDir]);
  try {
    const admin = { authorization: 'Bearer bench-admin-token-0123456789', 'content-type': 'application/json' };
    const mk = async (name, quotas) => (await (await fetch(`${pd.url}/v1/tenants`, { method: 'POST', headers: admin, body: JSON.stringify({ name, quotas }) })).json()).apiKey;
    const good = await mk('good', { callsPerSecond: 1e6, burst: 1e6, maxConcurrent: 32, maxQueued: 10000 });
    const bad = await mk('bad', { callsPerSecond: 1e6, burst: 1e6, maxConcurrent: 1, maxQueued: 100, maxTimeoutMs: 50, maxMemoryPages: 64 });
    const inst = async (key, name, wasm) => fetch(`${pd.url}/v1/plugins`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ manifest: { name, version: '1.0.0' }, wasm: Buffer.from(wasm).toString('base64') }) });
    await inst(good, 'echo', wasmEcho);
    await inst(bad, 'loop', await wat(here('../test/fixtures/wat/loop-forever.wat')));
    await inst(bad, 'bomb', await wat(here('../test/fixtures/wat/memory-bomb.wat')));
    const rate = smoke ? 200 : 1000;
    const goodRun = () => cannon({ url: `${pd.url}/v1/plugins/echo/call/echo`, method: 'POST', body: 'x', headers: { authorization: `Bearer ${good}` }, connections: 8, overallRate: rate });
    const alone = await goodRun();
    const badHeaders = { authorization: `Bearer ${bad}` };
    const noisy = cannon({
      url: pd.url,
      connections: 4,
      requests: [
        { method: 'POST', path: '/v1/plugins/loop/call/run', headers: badHeaders, body: '' },
        { method: 'POST', path: '/v1/plugins/bomb/call/run', headers: badHeaders, body: '' },
      ],
    });
    await sleep(100);
    const under = await goodRun();
    const noisyRes = await noisy;
    const success = (r) => (r.requests.total === 0 ? 0 : (r['2xx'] / (r['2xx'] + r.non2xx + r.errors + r.timeouts)) * 100);
    row('d', `well-behaved tenant alone at ${rate} req/s: success`, success(alone), `% (p50 ${alone.latency.p50} ms, p99 ${alone.latency.p99} ms)`);
    row('d', 'with a neighbour sending infinite loops and memory bombs: success', success(under), '%', { target: (v) => v >= 100, targetText: '100%' });
    row('d', 'with the neighbour: p50', under.latency.p50, 'ms', { baseline: alone.latency.p50, baselineName: 'alone', higherIsBetter: false });
    row('d', 'with the neighbour: p99', under.latency.p99, 'ms', { baseline: alone.latency.p99, baselineName: 'alone', higherIsBetter: false, target: (_v, r) => r <= 2, targetText: '≤ 2× alone' });
    row('d', 'neighbour requests answered (all failures, isolated)', noisyRes.requests.total, 'requests');
  } finally {
    await pd.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

// ── e. recovery and cold start ────────────────────────────────────────────────────────────────
async function benchE() {
  const loop = await wat(here('../test/fixtures/wat/loop-forever.wat'));
  // Repeated timeouts would quarantine the looping plugin; here they are the point.
  const ex = await createExecutor({ pool: { workers: 1, spares: 1 }, limits: { timeoutMs: 50 }, policy: { quarantine: { threshold: 1_000_000 } } });
  await ex.install({ name: 'echo', version: '1.0.0' }, wasmEcho);
  await ex.install({ name: 'loop', version: '1.0.0' }, loop);
  await ex.call('echo', 'echo', input);
  const serveAgain = [];
  const replaced = [];
  const rounds = smoke ? 2 : 20;
  for (let i = 0; i < rounds; i++) {
    const created = once(ex, 'worker-created');
    await ex.call('loop', 'run').catch(() => {});
    const killedAt = performance.now();
    await ex.call('echo', 'echo', input);
    serveAgain.push(performance.now() - killedAt);
    await created;
    replaced.push(performance.now() - killedAt);
  }
  const cold = [];
  const sources = ['count-vowels', 'greet', 'echo', 'failer', 'logger', 'kv-counter', 'clock', 'files', 'fetcher', 'order-router'];
  for (const [i, name] of sources.entries()) {
    const wasm = new Uint8Array(await readFile(plugins(name)));
    const t0 = performance.now();
    // Declare whatever the example may import; the default tenant's grants still apply.
    const capabilities = { log: true, clock: true, kv: { read: true, write: true }, intents: { emit: ['*'] }, http: { hosts: [] }, fs: { read: ['/tmp'] } };
    await ex.install({ name: `cold${i}`, version: '1.0.0', capabilities }, wasm);
    const fn = (await ex.get(`cold${i}`)).exports[0];
    await ex.call(`cold${i}`, fn, 'x').catch(() => {});
    cold.push(performance.now() - t0);
  }
  await ex.close();
  const s = Float64Array.from(serveAgain).sort();
  const w = Float64Array.from(replaced).sort();
  const c = Float64Array.from(cold).sort();
  row('e', 'kill (timeout) → next call served, median', percentile(s, 0.5), `ms (max ${round(s[s.length - 1])} ms)`, { target: () => s[s.length - 1] <= 50, targetText: 'max ≤ 50 ms' });
  row('e', 'kill → replacement worker ready and warm, median', percentile(w, 0.5), 'ms');
  row('e', 'install → first result of a new plugin, median', percentile(c, 0.5), `ms (max ${round(c[c.length - 1])} ms)`);
}

const sections = { a: benchA, b: benchB, c: benchC, d: benchD, e: benchE };
const started = new Date();
for (const [name, fn] of Object.entries(sections)) if (only.has(name)) await fn();

const meta = { date: started.toISOString(), node: process.version, cpus: availableParallelism(), cpuModel: cpus()[0]?.model ?? 'unknown', durationMs: duration, smoke };
await mkdir(outDir, { recursive: true });
await writeFile(join(outDir, 'latest.json'), `${JSON.stringify({ meta, rows }, null, 2)}\n`);
const md = [
  `# Paddock benchmarks`,
  '',
  `${meta.date} · Node ${meta.node} · ${meta.cpus} CPUs (${meta.cpuModel}) · ${duration} ms per measurement${smoke ? ' · SMOKE RUN (numbers meaningless)' : ''}`,
  '',
  '| § | measurement | value | unit | baseline | ratio | target | met |',
  '| --- | --- | ---: | --- | --- | ---: | --- | --- |',
  ...rows.map((r) => `| ${r.section} | ${r.name} | ${r.value} | ${r.unit} | ${r.baselineName ? `${r.baselineName}: ${r.baseline}` : ''} | ${r.ratio === null ? '' : `${r.ratio}×`} | ${r.target} | ${r.met === null ? '' : r.met ? 'yes' : 'no'} |`),
  '',
].join('\n');
await writeFile(join(outDir, 'latest.md'), md);
console.log(`\nwrote ${join(outDir, 'latest.json')} and latest.md`);
process.exit(0);

// Prometheus metrics. Only this module imports prom-client: the executor emits typed events
// (with what happened inside workers already carried back on the main thread), and this module
// turns them into counters. Label values from tenants and plugins are bounded: past a cap,
// new values are counted under "other", so a flood of names cannot blow up the series count.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Executor } from '../executor.js';
import type { TenantScheduler } from './scheduler.js';

export class BoundedLabel {
  #seen = new Set<string>();
  constructor(readonly cap: number) {}
  value(v: string): string {
    if (this.#seen.has(v)) return v;
    if (this.#seen.size >= this.cap) return 'other';
    this.#seen.add(v);
    return v;
  }
}

export interface MetricsOptions {
  maxTenants?: number;
  maxPlugins?: number;
  maxFunctions?: number;
  maxTopics?: number;
}

const outcomeOf = (code: string | null) => (code === null ? 'ok' : code.replace(/^PADDOCK_/, '').toLowerCase());

export class Metrics {
  readonly registry = new Registry();
  readonly contentType = this.registry.contentType;
  readonly tenants: BoundedLabel;
  readonly plugins: BoundedLabel;
  readonly functions: BoundedLabel;
  readonly topics: BoundedLabel;

  constructor(executor: Executor, scheduler: TenantScheduler | null, opts: MetricsOptions = {}) {
    this.tenants = new BoundedLabel(opts.maxTenants ?? 100);
    this.plugins = new BoundedLabel(opts.maxPlugins ?? 500);
    this.functions = new BoundedLabel(opts.maxFunctions ?? 200);
    this.topics = new BoundedLabel(opts.maxTopics ?? 200);
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'paddock_' });

    const calls = new Counter({ name: 'paddock_calls_total', help: 'Plugin calls by tenant, plugin, function and outcome (ok or error code).', labelNames: ['tenant', 'plugin', 'function', 'outcome'], registers });
    const duration = new Histogram({
      name: 'paddock_call_duration_seconds',
      help: 'Plugin call latency, queueing included, by tenant and outcome.',
      labelNames: ['tenant', 'outcome'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    const cpu = new Counter({ name: 'paddock_plugin_busy_seconds_total', help: 'Worker-thread time spent running plugin code (per call, instantiation included), by tenant and plugin.', labelNames: ['tenant', 'plugin'], registers });
    const hostCalls = new Counter({ name: 'paddock_host_calls_total', help: 'Host calls answered by the broker, by host function and outcome.', labelNames: ['function', 'outcome'], registers });
    const hostDuration = new Histogram({ name: 'paddock_host_call_duration_seconds', help: 'Broker time per host call (main thread), by host function.', labelNames: ['function'], buckets: [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1, 1], registers });
    const denials = new Counter({ name: 'paddock_policy_denials_total', help: 'Host calls refused by policy, by capability and reason.', labelNames: ['capability', 'reason'], registers });
    const violations = new Counter({ name: 'paddock_violations_total', help: 'Sandbox violations (strikes towards quarantine), by kind.', labelNames: ['kind'], registers });
    const quarantines = new Counter({ name: 'paddock_quarantines_total', help: 'Times a plugin was quarantined.', labelNames: ['tenant'], registers });
    const restarts = new Counter({ name: 'paddock_worker_restarts_total', help: 'Workers replaced, by reason (timeout, init-timeout, worker-heap, worker-exit, violation).', labelNames: ['reason'], registers });
    const intents = new Counter({ name: 'paddock_intents_total', help: 'Intents processed, by topic and outcome (ok: every delivery succeeded, partial, failed, none: no subscriber).', labelNames: ['topic', 'outcome'], registers });
    const compiles = new Counter({ name: 'paddock_compile_total', help: 'Module compilations at install, by cache result (hit, miss).', labelNames: ['result'], registers });
    const rateLimited = new Counter({ name: 'paddock_rate_limited_total', help: 'Calls refused at admission, by tenant and code (rate_limited, queue_full).', labelNames: ['tenant', 'code'], registers });
    const logsDropped = new Counter({ name: 'paddock_plugin_log_lines_dropped_total', help: 'Plugin log lines dropped by the per-plugin log rate limit, by tenant.', labelNames: ['tenant'], registers });
    this.countLogDropped = (tenant, _plugin, n) => logsDropped.inc({ tenant: this.tenants.value(tenant) }, n);
    const memory = new Map<string, number>();

    new Gauge({
      name: 'paddock_quarantined_plugins',
      help: 'Plugins whose quarantine breaker is open or half-open.',
      registers,
      collect() {
        let n = 0;
        for (const t of executor.tenantNames()) for (const p of executor.list({ tenant: t })) if (p.quarantine.state !== 'closed') n++;
        this.set(n);
      },
    });
    new Gauge({
      name: 'paddock_pool_workers',
      help: 'Worker threads alive (spares included).',
      registers,
      collect() {
        this.set(executor.stats.threads);
      },
    });
    new Gauge({
      name: 'paddock_pool_utilization',
      help: 'Fraction of call slots busy (running calls / workers).',
      registers,
      collect() {
        this.set(executor.stats.running / executor.options.pool.workers);
      },
    });
    new Gauge({
      name: 'paddock_pool_queue_depth',
      help: 'Calls waiting for a worker in the shared pool.',
      registers,
      collect() {
        this.set(executor.stats.queued);
      },
    });
    new Gauge({
      name: 'paddock_plugins_installed',
      help: 'Plugins installed, all tenants.',
      registers,
      collect() {
        this.set(executor.stats.plugins);
      },
    });
    const tenants = this.tenants;
    new Gauge({
      name: 'paddock_tenant_queue_depth',
      help: 'Calls waiting in a tenant queue, by tenant.',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        if (!scheduler) return;
        for (const t of executor.tenantNames()) this.inc({ tenant: tenants.value(t) }, scheduler.stats(t).queued);
      },
    });
    new Gauge({
      name: 'paddock_wasm_memory_bytes',
      help: 'Linear memory of each plugin\'s most recently used instance, summed over plugins (an estimate: warm instances on other workers are not counted twice).',
      registers,
      collect() {
        let sum = 0;
        for (const v of memory.values()) sum += v;
        this.set(sum);
      },
    });

    executor.on('call', (e) => {
      const tenant = this.tenants.value(e.tenant);
      const plugin = this.plugins.value(`${e.plugin}`);
      const outcome = outcomeOf(e.code);
      calls.inc({ tenant, plugin, function: this.functions.value(e.fn), outcome });
      duration.observe({ tenant, outcome }, e.durationMs / 1000);
      if (e.stats) {
        cpu.inc({ tenant, plugin }, e.stats.busyMicros / 1e6);
        memory.set(`${e.tenant}/${e.plugin}`, e.stats.memoryBytes);
      }
      if (e.code === 'PADDOCK_RATE_LIMITED' || e.code === 'PADDOCK_QUEUE_FULL') rateLimited.inc({ tenant, code: outcome });
    });
    executor.on('host-call', (e) => {
      hostCalls.inc({ function: e.fn, outcome: outcomeOf(e.outcome === 'ok' ? null : e.outcome) });
      hostDuration.observe({ function: e.fn }, e.durationMs / 1000);
    });
    executor.on('diagnostic', (d) => {
      if (d.kind === 'capability-denied') {
        denials.inc({ capability: d.capability ?? 'unknown', reason: d.reason });
        violations.inc({ kind: d.reason === 'host-rate-limit' ? 'host-rate-limit' : 'capability-denied' });
      } else if (d.kind === 'quarantined') {
        quarantines.inc({ tenant: this.tenants.value(d.tenant) });
      } else if (d.kind !== 'quarantine-lifted') {
        violations.inc({ kind: d.kind });
      }
    });
    executor.on('worker-restart', (e) => restarts.inc({ reason: e.reason }));
    executor.on('intent-processed', (e) => {
      const outcome = e.deliveries === 0 ? 'none' : e.failed === 0 ? 'ok' : e.failed === e.deliveries ? 'failed' : 'partial';
      intents.inc({ topic: this.topics.value(e.topic), outcome });
    });
    executor.on('compile', (e) => compiles.inc({ result: e.cached ? 'hit' : 'miss' }));
    this.countAdmission = (tenant, code) => rateLimited.inc({ tenant: this.tenants.value(tenant), code: outcomeOf(code) });
  }

  countLogDropped: (tenant: string, plugin: string, n: number) => void;

  /** Admission refusals happen before the executor sees the call: the service reports them here. */
  countAdmission: (tenant: string, code: string) => void;

  render(): Promise<string> {
    return this.registry.metrics();
  }
}

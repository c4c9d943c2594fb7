// createExecutor(): the orchestrator. Installs (audit → cap → compile once per digest), keeps
// the plugin registry per tenant, routes calls to the worker pool and answers host calls.

import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { context, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { z } from 'zod';
import { PaddockError, toPaddockError, type ErrorCode } from './errors.js';
import { Broker, type CallContext, type ViolationPolicy } from './hostfns/broker.js';
import { addressGranted } from './hostfns/egress.js';
import { FsAccess, type Mount } from './hostfns/fs.js';
import { auditModule } from './policy/audit.js';
import { BottleneckLimiter, type RateLimiter, TokenBucketLimiter } from './policy/limiter.js';
import { Quarantine, type QuarantineStatus } from './policy/quarantine.js';
import { topicCovers, topicMatches } from './policy/topics.js';
import { type KvStore, MemoryKvStore } from './store/kv.js';
import { type Capabilities, capabilitiesSchema, formatZodError, type Manifest, parseManifest } from './policy/manifest.js';
import { capWasmLimits } from './policy/wasm-module.js';
import { type CallOutcome, WorkerPool, type RestartReason } from './pool/pool.js';
import type { CallStats, HostCallRequest, LogLine, PluginSpec } from './pool/protocol.js';

const MiB = 1024 * 1024;
const tracer = trace.getTracer('paddock');
const utf8 = new TextEncoder();

export const executorOptionsSchema = z
  .object({
    pool: z
      .object({
        /** Calls run at once (one per worker thread). */
        workers: z.number().int().min(1).max(256).default(Math.max(1, Math.min(availableParallelism(), 8))),
        /** Idle threads kept beyond `workers`, so a killed worker's replacement is never waited for. */
        spares: z.number().int().min(0).max(16).default(1),
        maxQueued: z.number().int().min(0).default(10_000),
        /** Calls of one plugin that may share one trip to a worker when they are waiting anyway. */
        maxBatch: z.number().int().min(1).max(4096).default(128),
        /** Shared buffer per batch for results; an output that does not fit ends its batch early. */
        batchBufferBytes: z.number().int().min(4096).default(1024 * 1024),
        /** Live instances per process; divided among threads. Each wasm memory reserves ~10 GiB of address space. */
        maxLiveInstances: z.number().int().min(1).max(8192).default(1024),
        /** V8 heap cap of each worker (resourceLimits); wasm memory is capped separately. */
        heapMb: z.number().int().min(16).max(16384).default(256),
        stackMb: z.number().int().min(1).max(64).default(4),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        timeoutMs: z.number().int().positive().max(3_600_000).default(5_000),
        memoryPages: z.number().int().positive().max(65536).default(256),
        maxTableElements: z.number().int().positive().default(100_000),
        maxWasmBytes: z.number().int().positive().default(64 * MiB),
        maxInputBytes: z.number().int().positive().default(4 * MiB),
        maxOutputBytes: z.number().int().positive().default(4 * MiB),
        maxVarBytes: z.number().int().nonnegative().default(1 * MiB),
        maxHostCalls: z.number().int().nonnegative().default(1_000),
        maxHostCallBytes: z.number().int().nonnegative().default(64 * MiB),
        maxLogBytes: z.number().int().nonnegative().default(64 * 1024),
        maxHttpResponseBytes: z.number().int().positive().default(4 * MiB),
        httpTimeoutMs: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
    /** What the `default` tenant may be granted (the embedding application is its own operator). */
    grants: capabilitiesSchema.default({ log: true, config: true, wasi: true }),
    policy: z
      .object({
        /** What a refused host call does: the guest sees an error value (record), the call fails, or the worker is killed (strict). */
        onViolation: z.enum(['record', 'fail', 'kill']).default('record'),
        quarantine: z
          .object({
            threshold: z.number().int().min(1).default(5),
            windowMs: z.number().int().min(1).default(60_000),
            cooldownMs: z.number().int().min(0).default(30_000),
          })
          .strict()
          .prefault({}),
        /** Host calls per second (and burst) per tenant and host function. */
        hostCallRate: z.object({ perSecond: z.number().positive().default(10_000), burst: z.number().int().min(1).default(20_000) }).strict().prefault({}),
        limiter: z.enum(['token-bucket', 'bottleneck']).default('token-bucket'),
        maxIntentDepth: z.number().int().min(0).max(32).default(4),
        /** KV bytes per plugin (key + value), unless a tenant's quota says otherwise. */
        kvBytes: z.number().int().nonnegative().default(10 * MiB),
      })
      .strict()
      .prefault({}),
    /** Where plugin KV lives; in memory unless the application passes a store. */
    kv: z.custom<KvStore>((v) => typeof v === 'object' && v !== null && typeof (v as KvStore).get === 'function').optional(),
  })
  .strict();

export type ExecutorOptions = z.input<typeof executorOptionsSchema>;
type ResolvedOptions = z.output<typeof executorOptionsSchema>;

export interface CallOptions {
  tenant?: string;
  timeoutMs?: number;
}

export interface InstallOptions {
  tenant?: string;
  /**
   * WASI directories to map into the guest, guest path → host path. For embedders and
   * `paddock run` only (the operator's own choice); honoured only when WASI is effective.
   */
  preopens?: Record<string, string>;
}

export interface PluginInfo {
  tenant: string;
  name: string;
  version: string;
  digest: string;
  exports: string[];
  enabled: boolean;
  broken: string | null;
  installedAt: string;
  manifest: Manifest;
  quarantine: QuarantineStatus;
  /** Effective rights: declared ∩ granted. */
  effective: Capabilities;
}

export interface IntentDelivery {
  plugin: string;
  function: string;
  ok: boolean;
  code?: ErrorCode;
  message?: string;
  output?: Uint8Array;
}

export interface IntentResult {
  topic: string;
  deliveries: IntentDelivery[];
}

export interface CallEvent {
  callId: number;
  tenant: string;
  plugin: string;
  fn: string;
  /** null on success. */
  code: ErrorCode | null;
  reason?: string;
  durationMs: number;
  stats?: CallStats;
}

export interface Diagnostic {
  kind: string;
  tenant: string;
  plugin: string;
  capability?: string;
  reason: string;
  at: string;
}

export interface ExecutorEvents {
  call: [CallEvent];
  log: [{ callId: number; tenant: string; plugin: string; fn: string } & LogLine];
  diagnostic: [Diagnostic];
  'worker-restart': [{ reason: RestartReason; tenant: string; plugin: string }];
  /** A worker joined the pool, with `warmed` hot plugins handed to it to pre-instantiate. */
  'worker-created': [{ threadId: number; warmed: number }];
  /** An intent emitted by a plugin was processed (after the emitting call succeeded). */
  intent: [{ tenant: string; from: string; result: IntentResult }];
  /** Every intent processed (from the API or from a plugin), with how many deliveries failed. */
  'intent-processed': [{ tenant: string; topic: string; deliveries: number; failed: number }];
  /** A host call answered by the broker (outcome: 'ok' or an error code). */
  'host-call': [{ callId: number; tenant: string; plugin: string; fn: string; outcome: string; durationMs: number }];
  /** A module was compiled at install (cached: false) or found in the compile cache (cached: true). */
  compile: [{ digest: string; cached: boolean }];
}

interface PluginRecord {
  tenant: string;
  manifest: Manifest;
  digest: string;
  exports: Set<string>;
  spec: PluginSpec;
  enabled: boolean;
  broken: string | null;
  installedAt: string;
  /** Initialised at least once without failing: safe to pre-instantiate on a fresh worker. */
  initialisedOk: boolean;
  lastUsed: number;
  effective: Capabilities;
  fs: FsAccess | null;
  limits: { timeoutMs: number; maxInputBytes: number; maxOutputBytes: number; maxHostCalls: number; maxHostCallBytes: number; maxLogBytes: number };
}

interface TenantEntry {
  grants: Capabilities;
  kvBytes: number;
  maxTimeoutMs: number;
  maxMemoryPages: number;
  plugins: Map<string, PluginRecord>;
}

interface LiveCall {
  record: PluginRecord;
  ctx: CallContext;
  span: Span;
}

export interface TenantConfig {
  grants?: z.input<typeof capabilitiesSchema>;
  quotas?: { kvBytes?: number; maxTimeoutMs?: number; maxMemoryPages?: number };
}

export class Executor extends EventEmitter<ExecutorEvents> {
  readonly options: Readonly<ResolvedOptions>;
  #pool: WorkerPool;
  #tenants = new Map<string, TenantEntry>();
  #broker: Broker;
  #quarantine: Quarantine;
  #limiter: RateLimiter;
  readonly kv: KvStore;
  #modules = new Map<string, WebAssembly.Module>();
  #calls = new Map<number, LiveCall>();
  #nextCallId = 1;
  #installSeq = 0;
  #inflightIntents = 0;
  #intentsDrained: Array<() => void> = [];
  #closing = false;

  constructor(options: ExecutorOptions = {}) {
    super();
    const parsed = executorOptionsSchema.safeParse(options);
    if (!parsed.success) throw new PaddockError('PADDOCK_BAD_REQUEST', `invalid executor options: ${formatZodError(parsed.error)}`);
    this.options = Object.freeze(parsed.data);
    const p = this.options.pool;
    const threads = p.workers + p.spares;
    this.#pool = new WorkerPool(
      {
        workers: p.workers,
        spares: p.spares,
        maxQueued: p.maxQueued,
        maxBatch: p.maxBatch,
        batchBufferBytes: p.batchBufferBytes,
        maxInstancesPerWorker: Math.max(1, Math.floor(p.maxLiveInstances / threads)),
        heapMb: p.heapMb,
        stackMb: p.stackMb,
      },
      (req) => this.#onHostCall(req),
      () => this.#hotSpecs(),
    );
    this.#pool.on('worker-restart', ({ reason, key }) => {
      const rec = this.#recordByKey(key);
      this.emit('worker-restart', { reason, tenant: rec?.tenant ?? '?', plugin: rec?.manifest.name ?? '?' });
    });
    this.#pool.on('worker-created', (e) => this.emit('worker-created', e));
    const pol = this.options.policy;
    this.kv = this.options.kv ?? new MemoryKvStore();
    this.#limiter = pol.limiter === 'bottleneck' ? new BottleneckLimiter(pol.hostCallRate) : new TokenBucketLimiter(pol.hostCallRate);
    this.#quarantine = new Quarantine(pol.quarantine);
    this.#broker = new Broker({
      kv: this.kv,
      limiter: this.#limiter,
      policy: pol.onViolation as ViolationPolicy,
      maxIntentDepth: pol.maxIntentDepth,
      maxListEntries: 1000,
      http: { maxResponseBytes: this.options.limits.maxHttpResponseBytes, timeoutMs: this.options.limits.httpTimeoutMs },
      onViolation: (ctx, capability, reason) => this.#violation(ctx.tenant, ctx.plugin, 'capability-denied', capability, reason),
    });
    this.#tenants.set('default', {
      grants: this.options.grants,
      kvBytes: pol.kvBytes,
      maxTimeoutMs: this.options.limits.timeoutMs,
      maxMemoryPages: this.options.limits.memoryPages,
      plugins: new Map(),
    });
  }

  /** Threads currently alive in the pool (for health checks and tests). */
  get workerThreadIds(): number[] {
    return this.#pool.threadIds;
  }

  get stats(): { running: number; queued: number; threads: number; plugins: number } {
    let plugins = 0;
    for (const t of this.#tenants.values()) plugins += t.plugins.size;
    return { running: this.#pool.running, queued: this.#pool.queued, threads: this.#pool.threads, plugins };
  }

  /** Defines (or redefines) a tenant: what it may be granted and its quotas. */
  setTenant(name: string, opts: TenantConfig = {}): void {
    const grants = capabilitiesSchema.safeParse(opts.grants ?? { log: true });
    if (!grants.success) throw new PaddockError('PADDOCK_BAD_REQUEST', `invalid grants: ${formatZodError(grants.error, 'grants')}`);
    const q = opts.quotas ?? {};
    const kvBytes = q.kvBytes ?? this.options.policy.kvBytes;
    const maxTimeoutMs = Math.min(q.maxTimeoutMs ?? Infinity, this.options.limits.timeoutMs);
    const maxMemoryPages = Math.min(q.maxMemoryPages ?? Infinity, this.options.limits.memoryPages);
    const existing = this.#tenants.get(name);
    if (existing) {
      Object.assign(existing, { grants: grants.data, kvBytes, maxTimeoutMs, maxMemoryPages });
      // Grants changed: recompute every installed plugin's effective rights.
      for (const rec of existing.plugins.values()) rec.effective = intersectCapabilities(rec.manifest.capabilities, grants.data);
    } else {
      this.#tenants.set(name, { grants: grants.data, kvBytes, maxTimeoutMs, maxMemoryPages, plugins: new Map() });
    }
  }

  removeTenant(name: string): boolean {
    if (name === 'default') return false;
    return this.#tenants.delete(name);
  }

  tenantNames(): string[] {
    return [...this.#tenants.keys()];
  }

  #tenant(name: string) {
    const t = this.#tenants.get(name);
    if (!t) throw new PaddockError('PADDOCK_NOT_FOUND', `no tenant "${name}"`);
    return t;
  }

  /** Validates, audits and compiles a plugin. Never runs plugin code. */
  async install(manifestInput: unknown, wasm: Uint8Array | ArrayBuffer, opts: InstallOptions = {}): Promise<PluginInfo> {
    this.#assertOpen();
    const tenantName = opts.tenant ?? 'default';
    const tenant = this.#tenant(tenantName);
    const bytes = wasm instanceof Uint8Array ? wasm : new Uint8Array(wasm);
    const limits = this.options.limits;
    if (bytes.byteLength > limits.maxWasmBytes) {
      throw new PaddockError('PADDOCK_INVALID_WASM', `module is ${bytes.byteLength} bytes; the limit is ${limits.maxWasmBytes}`);
    }
    const manifest = parseManifest(manifestInput);
    const effective = intersectCapabilities(manifest.capabilities, tenant.grants);
    const report = auditModule(bytes, manifest);
    if (report.info.imports.some((i) => i.module === 'wasi_snapshot_preview1') && !effective.wasi) {
      // Without WASI the module cannot even be instantiated: refuse now rather than on every call.
      throw new PaddockError('PADDOCK_CAPABILITY_DENIED', 'the module imports WASI, which is not granted to this tenant');
    }
    const memoryPages = Math.min(manifest.limits.memoryPages ?? tenant.maxMemoryPages, tenant.maxMemoryPages);
    const moduleKey = `${report.digest}#p${memoryPages}`;
    let module = this.#modules.get(moduleKey);
    this.emit('compile', { digest: report.digest, cached: module !== undefined });
    if (!module) {
      const capped = capWasmLimits(bytes, { maxMemoryPages: memoryPages, maxTableElements: limits.maxTableElements });
      try {
        module = await WebAssembly.compile(capped as Uint8Array<ArrayBuffer>);
      } catch (err) {
        throw new PaddockError('PADDOCK_INVALID_WASM', `module does not compile: ${(err as Error).message}`, { cause: err });
      }
      this.#modules.set(moduleKey, module);
    }
    const maxInputBytes = Math.min(manifest.limits.maxInputBytes ?? limits.maxInputBytes, limits.maxInputBytes);
    const maxOutputBytes = Math.min(manifest.limits.maxOutputBytes ?? limits.maxOutputBytes, limits.maxOutputBytes);
    const spec: PluginSpec = {
      // Every install gets its own key: config or grants may change with the same digest.
      key: `${tenantName}/${manifest.name}@${moduleKey}#i${++this.#installSeq}`,
      module,
      config: manifest.config,
      wasi: Boolean(effective.wasi),
      http: Boolean(effective.http),
      maxVarBytes: Math.min(manifest.limits.maxVarBytes ?? limits.maxVarBytes, limits.maxVarBytes),
      memoryPages,
      // Input and output live in kernel memory for the whole call, plus the guest's own blocks.
      maxKernelBytes: maxInputBytes + maxOutputBytes + 16 * MiB,
      logLevel: effective.log ? (manifest.logLevel ?? 'info') : 'off',
      preopens: effective.wasi ? (opts.preopens ?? {}) : {},
    };
    const previous = tenant.plugins.get(manifest.name);
    const record: PluginRecord = {
      tenant: tenantName,
      manifest,
      digest: report.digest,
      exports: new Set(report.callable),
      spec,
      enabled: previous?.enabled ?? true,
      broken: null,
      installedAt: new Date().toISOString(),
      initialisedOk: false,
      lastUsed: 0,
      effective,
      fs: null,
      limits: {
        timeoutMs: Math.min(manifest.limits.timeoutMs ?? tenant.maxTimeoutMs, tenant.maxTimeoutMs),
        maxInputBytes,
        maxOutputBytes,
        maxHostCalls: Math.min(manifest.limits.maxHostCalls ?? limits.maxHostCalls, limits.maxHostCalls),
        maxHostCallBytes: Math.min(manifest.limits.maxHostCallBytes ?? limits.maxHostCallBytes, limits.maxHostCallBytes),
        maxLogBytes: Math.min(manifest.limits.maxLogBytes ?? limits.maxLogBytes, limits.maxLogBytes),
      },
    };
    // Calls in flight keep the old record (and its spec key); new calls see the new one.
    tenant.plugins.set(manifest.name, record);
    // New code gets a clean slate; the same bytes installed again do not escape quarantine.
    if (previous && previous.digest !== record.digest) this.#quarantine.forget(`${tenantName}/${manifest.name}`);
    this.#dropUnusedModules();
    return this.#info(record);
  }

  async uninstall(name: string, opts: InstallOptions = {}): Promise<boolean> {
    const tenant = this.#tenant(opts.tenant ?? 'default');
    const existed = tenant.plugins.delete(name);
    this.#dropUnusedModules();
    return existed;
  }

  list(opts: InstallOptions = {}): PluginInfo[] {
    return [...this.#tenant(opts.tenant ?? 'default').plugins.values()].map((r) => this.#info(r));
  }

  get(name: string, opts: InstallOptions = {}): PluginInfo {
    return this.#info(this.#record(opts.tenant ?? 'default', name));
  }

  setEnabled(name: string, enabled: boolean, opts: InstallOptions = {}): PluginInfo {
    const rec = this.#record(opts.tenant ?? 'default', name);
    rec.enabled = enabled;
    return this.#info(rec);
  }

  #record(tenant: string, name: string): PluginRecord {
    const rec = this.#tenant(tenant).plugins.get(name);
    if (!rec) throw new PaddockError('PADDOCK_NOT_FOUND', `no plugin "${name}"`);
    return rec;
  }

  #recordByKey(key: string): PluginRecord | undefined {
    const tenant = key.slice(0, key.indexOf('/'));
    const name = key.slice(key.indexOf('/') + 1, key.indexOf('@'));
    const rec = this.#tenants.get(tenant)?.plugins.get(name);
    return rec && rec.spec.key === key ? rec : undefined;
  }

  #info(r: PluginRecord): PluginInfo {
    return {
      tenant: r.tenant,
      name: r.manifest.name,
      version: r.manifest.version,
      digest: r.digest,
      exports: [...r.exports],
      enabled: r.enabled,
      broken: r.broken,
      installedAt: r.installedAt,
      manifest: r.manifest,
      quarantine: this.#quarantine.status(`${r.tenant}/${r.manifest.name}`),
      effective: r.effective,
    };
  }

  /** Durable part of a plugin's quarantine (null when closed), for a store to keep across restarts. */
  quarantineSnapshot(name: string, opts: InstallOptions = {}): { state: string; openedAt: number } | null {
    return this.#quarantine.snapshot(`${opts.tenant ?? 'default'}/${name}`);
  }

  restoreQuarantine(name: string, snap: { state: string; openedAt: number }, opts: InstallOptions = {}): void {
    this.#quarantine.restore(`${opts.tenant ?? 'default'}/${name}`, snap as { state: 'open'; openedAt: number });
  }

  /** Operator override: lift a plugin's quarantine now. */
  releaseQuarantine(name: string, opts: InstallOptions = {}): PluginInfo {
    const rec = this.#record(opts.tenant ?? 'default', name);
    this.#quarantine.release(`${rec.tenant}/${name}`);
    return this.#info(rec);
  }

  #dropUnusedModules(): void {
    const used = new Set<WebAssembly.Module>();
    for (const t of this.#tenants.values()) for (const r of t.plugins.values()) used.add(r.spec.module);
    for (const [k, m] of this.#modules) if (!used.has(m)) this.#modules.delete(k);
  }

  #hotSpecs(): PluginSpec[] {
    const recs: PluginRecord[] = [];
    for (const t of this.#tenants.values()) for (const r of t.plugins.values()) if (r.initialisedOk && r.enabled && !r.broken) recs.push(r);
    recs.sort((a, b) => b.lastUsed - a.lastUsed);
    return recs.slice(0, this.#pool.options.maxInstancesPerWorker).map((r) => r.spec);
  }

  /** Calls an exported function of an installed plugin; resolves with its output bytes. */
  async call(plugin: string, fn: string, input: Uint8Array | string = new Uint8Array(0), opts: CallOptions = {}): Promise<Uint8Array> {
    return this.#call(plugin, fn, input, opts, 0);
  }

  async #call(plugin: string, fn: string, input: Uint8Array | string, opts: CallOptions, depth: number): Promise<Uint8Array> {
    const callId = this.#nextCallId++;
    const tenant = opts.tenant ?? 'default';
    // A no-op unless the application registered an OpenTelemetry SDK.
    const span = tracer.startSpan(`paddock.call ${plugin}.${fn}`, {
      kind: SpanKind.INTERNAL,
      attributes: { 'paddock.tenant': tenant, 'paddock.plugin': plugin, 'paddock.function': fn, 'paddock.call_id': callId, 'paddock.depth': depth },
    });
    try {
      const out = await this.#callInner(plugin, fn, input, opts, depth, callId, span);
      span.setAttribute('paddock.outcome', 'ok');
      return out;
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'PADDOCK_INTERNAL';
      span.setAttribute('paddock.outcome', code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      throw err;
    } finally {
      span.end();
    }
  }

  async #callInner(plugin: string, fn: string, input: Uint8Array | string, opts: CallOptions, depth: number, callId: number, span: Span): Promise<Uint8Array> {
    this.#assertOpen();
    const tenant = opts.tenant ?? 'default';
    const started = performance.now();
    const rec = this.#record(tenant, plugin);
    const bytes = typeof input === 'string' ? utf8.encode(input) : input;
    const fail = (code: ErrorCode, message: string, details?: { reason: string; retryAfter?: number }): never => {
      this.emit('call', { callId, tenant, plugin, fn, code, reason: details?.reason, durationMs: performance.now() - started });
      throw new PaddockError(code, message, details ? { details } : {});
    };
    if (!rec.enabled) fail('PADDOCK_DISABLED', `plugin "${plugin}" is disabled`);
    if (rec.broken) fail('PADDOCK_INIT_FAILED', rec.broken);
    if (!rec.exports.has(fn)) fail('PADDOCK_NO_SUCH_EXPORT', `plugin "${plugin}" has no callable function "${fn}"`);
    if (bytes.byteLength > rec.limits.maxInputBytes) {
      fail('PADDOCK_INPUT_TOO_LARGE', `input of ${bytes.byteLength} bytes exceeds the cap of ${rec.limits.maxInputBytes}`);
    }
    const qkey = `${tenant}/${plugin}`;
    const admission = this.#quarantine.admit(qkey);
    if (!admission.ok) {
      const retryAfter = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
      fail('PADDOCK_QUARANTINED', `plugin "${plugin}" is quarantined after repeated violations; retry in ${retryAfter} s`, { reason: 'quarantined', retryAfter });
    }
    const probe = admission.ok && admission.probe;
    const timeoutMs = Math.min(opts.timeoutMs ?? rec.limits.timeoutMs, rec.limits.timeoutMs);
    rec.lastUsed = Date.now();
    const ctx: CallContext = {
      tenant,
      plugin,
      effective: rec.effective,
      deadline: Date.now() + timeoutMs,
      depth,
      kvQuotaBytes: this.#tenants.get(tenant)?.kvBytes ?? this.options.policy.kvBytes,
      fs: this.#fsFor(rec),
      emitted: [],
      violated: false,
    };
    const live: LiveCall = { record: rec, ctx, span };
    this.#calls.set(callId, live);
    let outcome: CallOutcome;
    try {
      outcome = await this.#pool.call(
        rec.spec.key,
        {
          callId,
          fn,
          timeoutMs,
          input: bytes,
          maxOutputBytes: rec.limits.maxOutputBytes,
          maxHostCalls: rec.limits.maxHostCalls,
          maxHostCallBytes: rec.limits.maxHostCallBytes,
          maxLogBytes: rec.limits.maxLogBytes,
          deadline: 0,
        },
        () => rec.spec,
      );
    } catch (err) {
      this.#quarantine.finished(qkey, probe, false);
      const e = toPaddockError(err);
      return fail(e.code, e.message);
    } finally {
      this.#calls.delete(callId);
    }
    const logs = outcome.ok ? outcome.result.logs : (outcome.result?.logs ?? []);
    for (const line of logs) this.emit('log', { callId, tenant, plugin, fn, ...line });
    const durationMs = performance.now() - started;
    if (outcome.ok) {
      rec.initialisedOk = true;
      if (this.#quarantine.finished(qkey, probe, ctx.violated)) {
        this.#diagnose({ kind: 'quarantine-lifted', tenant, plugin, reason: 'probe call succeeded' });
      }
      this.emit('call', { callId, tenant, plugin, fn, code: null, durationMs, stats: outcome.result.stats });
      // Effects of a call (its intents) happen only if the call succeeded, and after it:
      // a host function never calls back into the plugin that is waiting on it.
      for (const intent of ctx.emitted) this.#dispatchEmitted(tenant, plugin, intent.topic, intent.payload, depth + 1);
      return outcome.result.output;
    }
    let error = outcome.error;
    if (ctx.killedFor && outcome.restart) {
      error = { code: ctx.killedFor.code as typeof error.code, message: `${ctx.killedFor.message} (strict policy: the worker was replaced)`, reason: 'violation-kill' };
    }
    if (error.code === 'PADDOCK_INIT_FAILED') {
      // Do not respawn-loop on a plugin whose initialisation hangs or traps: every call would
      // cost a worker. Installing again (a fixed version) clears this.
      if (rec === this.#tenants.get(tenant)?.plugins.get(plugin)) rec.broken = error.message;
    } else if (outcome.result && error.code !== 'PADDOCK_INSTANCE_LIMIT') {
      rec.initialisedOk = true;
    }
    const counts = !ctx.violated && isSandboxViolation(error.code, error.reason);
    if (counts) {
      ctx.violated = true;
      this.#violation(tenant, plugin, violationKind(error.code), undefined, error.reason ?? error.code);
    }
    this.#quarantine.finished(qkey, probe, ctx.violated);
    this.emit('call', { callId, tenant, plugin, fn, code: error.code as ErrorCode, reason: error.reason, durationMs, stats: outcome.result?.stats });
    throw new PaddockError(error.code as ErrorCode, error.message, { details: { reason: error.reason } });
  }

  /**
   * Processes an intent: calls every enabled plugin of the tenant subscribed to a matching topic,
   * highest priority first, one after the other. Resolves with each delivery's outcome.
   */
  async emitIntent(topic: string, payload: Uint8Array | string = new Uint8Array(0), opts: { tenant?: string } = {}): Promise<IntentResult> {
    return this.#processIntent(opts.tenant ?? 'default', topic, typeof payload === 'string' ? utf8.encode(payload) : payload, 0);
  }

  async #processIntent(tenant: string, topic: string, payload: Uint8Array, depth: number): Promise<IntentResult> {
    const subs: Array<{ rec: PluginRecord; fn: string; priority: number }> = [];
    for (const rec of this.#tenant(tenant).plugins.values()) {
      if (!rec.enabled) continue;
      for (const sub of rec.manifest.subscriptions) if (topicMatches(sub.topic, topic)) subs.push({ rec, fn: sub.function, priority: sub.priority });
    }
    subs.sort((a, b) => b.priority - a.priority || a.rec.manifest.name.localeCompare(b.rec.manifest.name));
    const deliveries: IntentDelivery[] = [];
    for (const { rec, fn } of subs) {
      const name = rec.manifest.name;
      try {
        const output = await this.#call(name, fn, payload, { tenant }, depth);
        deliveries.push({ plugin: name, function: fn, ok: true, output });
      } catch (err) {
        const e = toPaddockError(err);
        deliveries.push({ plugin: name, function: fn, ok: false, code: e.code, message: e.message });
      }
    }
    this.emit('intent-processed', { tenant, topic, deliveries: deliveries.length, failed: deliveries.filter((d) => !d.ok).length });
    return { topic, deliveries };
  }

  #dispatchEmitted(tenant: string, from: string, topic: string, payload: Uint8Array, depth: number): void {
    if (this.#closing) return;
    this.#inflightIntents++;
    setImmediate(() => {
      this.#processIntent(tenant, topic, payload, depth)
        .then((result) => this.emit('intent', { tenant, from, result }))
        .catch(() => {})
        .finally(() => {
          if (--this.#inflightIntents === 0) for (const done of this.#intentsDrained.splice(0)) done();
        });
    });
  }

  #fsFor(rec: PluginRecord): FsAccess | null {
    const fs = rec.effective.fs;
    if (!fs || (fs.read.length === 0 && fs.write.length === 0)) return null;
    if (!rec.fs) {
      const mounts: Mount[] = [
        ...fs.read.map((e) => ({ ...parseMount(e), writable: false })),
        ...fs.write.map((e) => ({ ...parseMount(e), writable: true })),
      ];
      rec.fs = new FsAccess(mounts, { maxReadBytes: rec.limits.maxOutputBytes, maxWriteBytes: rec.limits.maxInputBytes, maxListEntries: 1000 });
    }
    return rec.fs;
  }

  async #onHostCall(req: HostCallRequest): Promise<unknown> {
    const live = this.#calls.get(req.callId);
    if (!live) throw new PaddockError('PADDOCK_HOST_CALL_FAILED', 'host call for a call that is no longer running');
    const t0 = performance.now();
    const span = tracer.startSpan(`paddock.hostcall ${req.fn}`, { kind: SpanKind.INTERNAL, attributes: { 'paddock.host_function': req.fn } }, trace.setSpan(context.active(), live.span));
    const base = { callId: req.callId, tenant: live.ctx.tenant, plugin: live.ctx.plugin, fn: req.fn };
    try {
      const value = await this.#broker.handle(req, live.ctx);
      this.emit('host-call', { ...base, outcome: 'ok', durationMs: performance.now() - t0 });
      return value;
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'PADDOCK_INTERNAL';
      this.emit('host-call', { ...base, outcome: code, durationMs: performance.now() - t0 });
      span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      throw err;
    } finally {
      span.end();
    }
  }

  #violation(tenant: string, plugin: string, kind: string, capability: string | undefined, reason: string): void {
    this.#diagnose({ kind, tenant, plugin, capability, reason });
    if (this.#quarantine.violation(`${tenant}/${plugin}`)) {
      this.#diagnose({ kind: 'quarantined', tenant, plugin, capability, reason: `repeated violations (last: ${reason})` });
    }
  }

  #diagnose(d: Omit<Diagnostic, 'at'>): void {
    const event: Diagnostic = { ...d, at: new Date().toISOString() };
    if (event.capability === undefined) delete event.capability;
    this.emit('diagnostic', event);
  }

  #assertOpen(): void {
    if (this.#closing) throw new PaddockError('PADDOCK_SHUTTING_DOWN', 'the executor is closed');
  }

  /** Lets calls in flight finish, then stops every worker. Idempotent. */
  async close(): Promise<void> {
    if (this.#inflightIntents > 0) await new Promise<void>((resolve) => this.#intentsDrained.push(resolve));
    this.#closing = true;
    await this.#pool.close();
    await this.#limiter.close();
  }

  /** Stops every worker now; calls in flight fail. Idempotent. */
  async destroy(): Promise<void> {
    this.#closing = true;
    await this.#pool.destroy();
    await this.#limiter.close();
  }
}

/** Effective rights = declared ∩ granted; numeric limits take the smaller value. */
export function intersectCapabilities(declared: Capabilities, granted: Capabilities): Capabilities {
  const out: Capabilities = {};
  if (declared.log && granted.log) out.log = true;
  if (declared.config && granted.config) out.config = true;
  if (declared.clock && granted.clock) out.clock = true;
  if (declared.wasi && granted.wasi) out.wasi = true;
  if (declared.kv && granted.kv) {
    out.kv = { read: declared.kv.read && granted.kv.read, write: declared.kv.write && granted.kv.write };
  }
  if (declared.http && granted.http) {
    const hosts = intersectHosts(declared.http.hosts, granted.http.hosts);
    const methods = declared.http.methods && granted.http.methods
      ? declared.http.methods.filter((m) => granted.http!.methods!.includes(m))
      : (declared.http.methods ?? granted.http.methods);
    out.http = {
      hosts,
      methods,
      maxResponseBytes: minDefined(declared.http.maxResponseBytes, granted.http.maxResponseBytes),
      timeoutMs: minDefined(declared.http.timeoutMs, granted.http.timeoutMs),
    };
  }
  if (declared.intents && granted.intents) {
    // Pattern ∩ pattern: keep what the grant covers, or the narrower grant entry inside what is asked.
    const emit = new Set<string>();
    for (const d of declared.intents.emit) {
      for (const g of granted.intents.emit) {
        if (topicCovers(g, d)) emit.add(d);
        else if (topicCovers(d, g)) emit.add(g);
      }
    }
    out.intents = { emit: [...emit] };
  }
  if (declared.fs && granted.fs) {
    // Both sides are absolute, normalised paths (the schema refuses "..", "." and "//"), so a
    // prefix test on whole segments is exact. Grants may be written HOST:GUEST; only HOST counts.
    const within = (entry: string, roots: string[]) => {
      const p = parseMount(entry).host;
      return roots.some((root) => {
        const r = parseMount(root).host;
        return p === r || r === '/' || p.startsWith(`${r}/`);
      });
    };
    const write = declared.fs.write.filter((p) => within(p, granted.fs!.write));
    const writeHosts = new Set(write.map((p) => parseMount(p).host));
    out.fs = {
      // A directory granted for writing need not be mounted twice.
      read: declared.fs.read.filter((p) => !writeHosts.has(parseMount(p).host) && (within(p, granted.fs!.read) || within(p, granted.fs!.write))),
      write,
    };
  }
  return out;
}

/** Whether allowlist pattern `p` admits everything pattern `q` admits. */
function covers(p: string, q: string): boolean {
  if (p === '*' || p === q) return true;
  if (p.startsWith('*.') && q.endsWith(p.slice(1))) return true;
  const ip = q.replace(/^\[|\](:\d+)?$/g, '').replace(/^(\d+\.\d+\.\d+\.\d+):\d+$/, '$1');
  return isIP(ip) !== 0 && addressGranted(ip, [p]);
}

/** Hosts a plugin may reach: those its manifest asks for that the grant covers, or the narrower grant entries inside what it asks for. */
export function intersectHosts(declared: string[], granted: string[]): string[] {
  const out = new Set<string>();
  for (const d of declared) {
    for (const g of granted) {
      if (covers(g, d)) out.add(d);
      else if (covers(d, g)) out.add(g);
    }
  }
  return [...out];
}

/** Outcomes that count as sandbox violations (a strike towards quarantine). Plugin-reported errors do not. */
function isSandboxViolation(code: string, reason?: string): boolean {
  switch (code) {
    case 'PADDOCK_TIMEOUT':
    case 'PADDOCK_MEMORY_LIMIT':
    case 'PADDOCK_TRAP':
    case 'PADDOCK_OUTPUT_TOO_LARGE':
    case 'PADDOCK_INIT_FAILED':
    case 'PADDOCK_WORKER_CRASHED':
      return true;
    case 'PADDOCK_CAPABILITY_DENIED':
      // the worker's own budgets; refusals from the broker were counted when they happened
      return reason === 'host-call-budget' || reason === 'host-call-bytes';
    default:
      return false;
  }
}

function violationKind(code: string): string {
  return code.replace(/^PADDOCK_/, '').toLowerCase().replace(/_/g, '-');
}

/** "HOST_DIR" or "HOST_DIR:GUEST_DIR" (the guest sees HOST_DIR at GUEST_DIR). */
export function parseMount(entry: string): { host: string; guest: string } {
  const i = entry.indexOf(':');
  return i < 0 ? { host: entry, guest: entry } : { host: entry.slice(0, i), guest: entry.slice(i + 1) };
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

export async function createExecutor(options: ExecutorOptions = {}): Promise<Executor> {
  return new Executor(options);
}

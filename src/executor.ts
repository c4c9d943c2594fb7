// createExecutor(): the orchestrator. Installs (audit → cap → compile once per digest), keeps
// the plugin registry per tenant, routes calls to the worker pool and answers host calls.

import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { PaddockError, toPaddockError, type ErrorCode } from './errors.js';
import { httpRequest } from './hostfns/http.js';
import { auditModule } from './policy/audit.js';
import { type Capabilities, capabilitiesSchema, formatZodError, type Manifest, parseManifest } from './policy/manifest.js';
import { capWasmLimits } from './policy/wasm-module.js';
import { type CallOutcome, WorkerPool, type RestartReason } from './pool/pool.js';
import type { CallStats, HostCallRequest, HttpRequestPayload, LogLine, PluginSpec } from './pool/protocol.js';

const MiB = 1024 * 1024;

export const executorOptionsSchema = z
  .object({
    pool: z
      .object({
        /** Calls run at once (one per worker thread). */
        workers: z.number().int().min(1).max(256).default(Math.max(1, Math.min(availableParallelism(), 8))),
        /** Idle threads kept beyond `workers`, so a killed worker's replacement is never waited for. */
        spares: z.number().int().min(0).max(16).default(1),
        maxQueued: z.number().int().min(0).default(10_000),
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
        maxLogBytes: z.number().int().nonnegative().default(64 * 1024),
        maxHttpResponseBytes: z.number().int().positive().default(4 * MiB),
        httpTimeoutMs: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
    /** What the `default` tenant may be granted (the embedding application is its own operator). */
    grants: capabilitiesSchema.default({ log: true, config: true, wasi: true }),
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
}

export interface CallEvent {
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
  log: [{ tenant: string; plugin: string; fn: string } & LogLine];
  diagnostic: [Diagnostic];
  'worker-restart': [{ reason: RestartReason; tenant: string; plugin: string }];
  /** A worker joined the pool, with `warmed` hot plugins handed to it to pre-instantiate. */
  'worker-created': [{ threadId: number; warmed: number }];
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
  limits: { timeoutMs: number; maxInputBytes: number; maxOutputBytes: number; maxHostCalls: number; maxLogBytes: number };
}

interface LiveCall {
  record: PluginRecord;
  fn: string;
  deadline: number;
}

export class Executor extends EventEmitter<ExecutorEvents> {
  readonly options: Readonly<ResolvedOptions>;
  #pool: WorkerPool;
  #tenants = new Map<string, { grants: Capabilities; plugins: Map<string, PluginRecord> }>();
  #modules = new Map<string, WebAssembly.Module>();
  #calls = new Map<number, LiveCall>();
  #nextCallId = 1;
  #installSeq = 0;
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
    this.#tenants.set('default', { grants: this.options.grants, plugins: new Map() });
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

  /** Defines (or redefines) a tenant and what it may be granted. */
  setTenant(name: string, opts: { grants?: z.input<typeof capabilitiesSchema> } = {}): void {
    const grants = capabilitiesSchema.safeParse(opts.grants ?? { log: true });
    if (!grants.success) throw new PaddockError('PADDOCK_BAD_REQUEST', `invalid grants: ${formatZodError(grants.error, 'grants')}`);
    const existing = this.#tenants.get(name);
    if (existing) existing.grants = grants.data;
    else this.#tenants.set(name, { grants: grants.data, plugins: new Map() });
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
    const memoryPages = Math.min(manifest.limits.memoryPages ?? limits.memoryPages, limits.memoryPages);
    const moduleKey = `${report.digest}#p${memoryPages}`;
    let module = this.#modules.get(moduleKey);
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
      limits: {
        timeoutMs: Math.min(manifest.limits.timeoutMs ?? limits.timeoutMs, limits.timeoutMs),
        maxInputBytes,
        maxOutputBytes,
        maxHostCalls: Math.min(manifest.limits.maxHostCalls ?? limits.maxHostCalls, limits.maxHostCalls),
        maxLogBytes: Math.min(manifest.limits.maxLogBytes ?? limits.maxLogBytes, limits.maxLogBytes),
      },
    };
    // Calls in flight keep the old record (and its spec key); new calls see the new one.
    tenant.plugins.set(manifest.name, record);
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
    };
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
    this.#assertOpen();
    const tenant = opts.tenant ?? 'default';
    const started = performance.now();
    const rec = this.#record(tenant, plugin);
    const bytes = typeof input === 'string' ? new TextEncoder().encode(input) : input;
    const fail = (code: ErrorCode, message: string, reason?: string): never => {
      this.emit('call', { tenant, plugin, fn, code, reason, durationMs: performance.now() - started });
      throw new PaddockError(code, message, reason ? { details: { reason } } : {});
    };
    if (!rec.enabled) fail('PADDOCK_DISABLED', `plugin "${plugin}" is disabled`);
    if (rec.broken) fail('PADDOCK_INIT_FAILED', rec.broken);
    if (!rec.exports.has(fn)) fail('PADDOCK_NO_SUCH_EXPORT', `plugin "${plugin}" has no callable function "${fn}"`);
    if (bytes.byteLength > rec.limits.maxInputBytes) {
      fail('PADDOCK_INPUT_TOO_LARGE', `input of ${bytes.byteLength} bytes exceeds the cap of ${rec.limits.maxInputBytes}`);
    }
    const timeoutMs = Math.min(opts.timeoutMs ?? rec.limits.timeoutMs, rec.limits.timeoutMs);
    const callId = this.#nextCallId++;
    rec.lastUsed = Date.now();
    this.#calls.set(callId, { record: rec, fn, deadline: Date.now() + timeoutMs });
    let outcome: CallOutcome;
    try {
      outcome = await this.#pool.call(
        {
          type: 'run',
          key: rec.spec.key,
          call: {
            callId,
            fn,
            input: bytes,
            maxOutputBytes: rec.limits.maxOutputBytes,
            maxHostCalls: rec.limits.maxHostCalls,
            maxLogBytes: rec.limits.maxLogBytes,
            deadline: 0,
          },
        },
        () => rec.spec,
        timeoutMs,
      );
    } catch (err) {
      const e = toPaddockError(err);
      return fail(e.code, e.message);
    } finally {
      this.#calls.delete(callId);
    }
    const logs = outcome.ok ? outcome.result.logs : (outcome.result?.logs ?? []);
    for (const line of logs) this.emit('log', { tenant, plugin, fn, ...line });
    const durationMs = performance.now() - started;
    if (outcome.ok) {
      rec.initialisedOk = true;
      this.emit('call', { tenant, plugin, fn, code: null, durationMs, stats: outcome.result.stats });
      return outcome.result.output;
    }
    const { error } = outcome;
    if (error.code === 'PADDOCK_INIT_FAILED') {
      // Do not respawn-loop on a plugin whose initialisation hangs or traps: every call would
      // cost a worker. Installing again (a fixed version) clears this.
      if (rec === this.#tenants.get(tenant)?.plugins.get(plugin)) rec.broken = error.message;
    } else if (outcome.result && error.code !== 'PADDOCK_INSTANCE_LIMIT') {
      rec.initialisedOk = true;
    }
    this.emit('call', { tenant, plugin, fn, code: error.code as ErrorCode, reason: error.reason, durationMs, stats: outcome.result?.stats });
    throw new PaddockError(error.code as ErrorCode, error.message, { details: { reason: error.reason } });
  }

  async #onHostCall(req: HostCallRequest): Promise<unknown> {
    const live = this.#calls.get(req.callId);
    if (!live) throw new PaddockError('PADDOCK_HOST_CALL_FAILED', 'host call for a call that is no longer running');
    const { record } = live;
    switch (req.fn) {
      case 'http_request': {
        const http = record.effective.http;
        if (!http) {
          this.#diagnose('capability-denied', record, 'http', 'http is not granted');
          throw new PaddockError('PADDOCK_CAPABILITY_DENIED', 'http is not granted to this plugin');
        }
        try {
          return await httpRequest(
            req.payload as HttpRequestPayload,
            {
              hosts: http.hosts,
              methods: http.methods,
              maxResponseBytes: Math.min(http.maxResponseBytes ?? this.options.limits.maxHttpResponseBytes, this.options.limits.maxHttpResponseBytes),
              timeoutMs: Math.min(http.timeoutMs ?? this.options.limits.httpTimeoutMs, this.options.limits.httpTimeoutMs),
            },
            live.deadline,
          );
        } catch (err) {
          if ((err as PaddockError).code === 'PADDOCK_CAPABILITY_DENIED') this.#diagnose('capability-denied', record, 'http', (err as Error).message);
          throw err;
        }
      }
      default:
        throw new PaddockError('PADDOCK_CAPABILITY_DENIED', `unknown host function ${String(req.fn)}`);
    }
  }

  #diagnose(kind: string, record: PluginRecord, capability: string | undefined, reason: string): void {
    this.emit('diagnostic', { kind, tenant: record.tenant, plugin: record.manifest.name, capability, reason, at: new Date().toISOString() });
  }

  #assertOpen(): void {
    if (this.#closing) throw new PaddockError('PADDOCK_SHUTTING_DOWN', 'the executor is closed');
  }

  /** Lets calls in flight finish, then stops every worker. Idempotent. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#pool.close();
  }

  /** Stops every worker now; calls in flight fail. Idempotent. */
  async destroy(): Promise<void> {
    this.#closing = true;
    await this.#pool.destroy();
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
    // A host must match both lists: we keep the declared patterns and check the grant's at call time by
    // intersecting here only the patterns the grant covers verbatim or by wildcard.
    const grantedHosts = granted.http.hosts;
    const hosts = declared.http.hosts.filter((h) => grantedHosts.some((g) => g === '*' || g === h || (g.startsWith('*.') && h.endsWith(g.slice(1)))));
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
    const g = granted.intents.emit;
    out.intents = { emit: declared.intents.emit.filter((t) => g.includes('*') || g.includes(t)) };
  }
  if (declared.fs && granted.fs) {
    const within = (p: string, roots: string[]) => roots.some((r) => p === r || p.startsWith(r.endsWith('/') ? r : `${r}/`));
    out.fs = {
      read: declared.fs.read.filter((p) => within(p, granted.fs!.read) || within(p, granted.fs!.write)),
      write: declared.fs.write.filter((p) => within(p, granted.fs!.write)),
    };
  }
  return out;
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

export async function createExecutor(options: ExecutorOptions = {}): Promise<Executor> {
  return new Executor(options);
}

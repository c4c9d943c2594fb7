// The only module shared by the main thread and the workers. Keep it free of imports so the
// worker side never pulls main-side code in.
//
//   main thread                                   worker thread (piscina)
//   ───────────                                   ──────────────────────
//   Executor ── piscina task (BatchTask) ───────▶ worker.ts → Runner → wasm
//            ◀── BatchResult (+ shared buffers) ─
//   Broker   ◀── HostCallRequest (private port) ── wasm calls http_request ...
//            ── HostCallReply (same port) ───────▶ (worker blocked in Atomics.wait on
//            ── Atomics.add+notify(flag) ────────▶  the flag; wakes, receiveMessageOnPort)
//
// The private port and the flag buffer are created by the worker at start-up and handed over
// once in a WorkerHello through piscina's parentPort ('message' event on the pool).

/** Error codes a worker may report. A subset of src/errors.ts, duplicated on purpose (see above). */
export type WorkerErrorCode =
  | 'PADDOCK_TIMEOUT'
  | 'PADDOCK_MEMORY_LIMIT'
  | 'PADDOCK_OUTPUT_TOO_LARGE'
  | 'PADDOCK_INPUT_TOO_LARGE'
  | 'PADDOCK_TRAP'
  | 'PADDOCK_PLUGIN_ERROR'
  | 'PADDOCK_NO_SUCH_EXPORT'
  | 'PADDOCK_INIT_FAILED'
  | 'PADDOCK_INVALID_WASM'
  | 'PADDOCK_CAPABILITY_DENIED'
  | 'PADDOCK_HOST_CALL_FAILED'
  | 'PADDOCK_INSTANCE_LIMIT'
  | 'PADDOCK_WORKER_CRASHED'
  | 'PADDOCK_RATE_LIMITED'
  | 'PADDOCK_QUOTA_EXCEEDED'
  | 'PADDOCK_NOT_FOUND'
  | 'PADDOCK_BAD_REQUEST'
  | 'PADDOCK_QUARANTINED'
  | 'PADDOCK_SHUTTING_DOWN'
  | 'PADDOCK_INTERNAL';

export interface WireError {
  code: WorkerErrorCode;
  message: string;
  /** Finer classification for metrics and quarantine: 'unreachable', 'stack-overflow', ... */
  reason?: string;
  stack?: string;
}

/** Everything a worker needs to instantiate one installed plugin. Sent only when the worker lacks it. */
export interface PluginSpec {
  /** Unique per installation and version: tenant/plugin@digest#limits. */
  key: string;
  module: WebAssembly.Module;
  config: Record<string, string>;
  wasi: boolean;
  /** HTTP goes through the broker; the worker only needs to know whether to ask. */
  http: boolean;
  maxVarBytes: number;
  /** Pages the module's memory was capped to, used to classify a trap as a memory-limit stop. */
  memoryPages: number;
  /** Max bytes of kernel (Extism host-side) memory per call. */
  maxKernelBytes: number;
  logLevel: LogLevelName;
  /** Directories mapped into a WASI guest: guest path → host path. */
  preopens: Record<string, string>;
}

export type LogLevelName = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'off';

export interface CallSpec {
  callId: number;
  fn: string;
  /** Wall-clock budget; the worker starts the clock when the call starts. */
  timeoutMs: number;
  input: Uint8Array;
  maxOutputBytes: number;
  maxHostCalls: number;
  /** Bytes in and out of host calls, summed over the call. */
  maxHostCallBytes: number;
  maxLogBytes: number;
  /** Absolute deadline (Date.now() ms), set by the worker when the call starts; bounds host-call waits. */
  deadline: number;
}

/**
 * Several calls of one plugin (one key) in one piscina task: the pool's transport cost is paid
 * once per batch. Results go into `results` (see the batch buffer below) as each call ends, so
 * when a call in the middle is killed, the calls before it keep their results and the calls after
 * it were never started (the main side re-queues them): nothing runs twice, nothing is lost.
 */
export interface BatchTask {
  type: 'batch';
  key: string;
  spec?: PluginSpec;
  /** How many calls are encoded in `requests` (see writeBatchRequests). */
  count: number;
  /** The calls, encoded: posting a buffer handle costs nothing per call, cloning objects does. */
  requests: SharedArrayBuffer;
  results: SharedArrayBuffer;
}

export type Task = BatchTask;

export interface LogLine {
  level: Exclude<LogLevelName, 'off'>;
  message: string;
}

export interface CallStats {
  /** Time the worker thread spent running the call (instantiation included), microseconds.
   *  Node 20 has no per-thread CPU clock; a worker runs one call at a time, so this is its busy time. */
  busyMicros: number;
  hostCalls: number;
  /** Time the call spent blocked on the broker (host-call round trips), microseconds. */
  brokerMicros: number;
  /** Time spent in host functions answered inside the worker (config, vars, logs), microseconds. */
  localHostMicros: number;
  /** Wasm linear memory size after the call, bytes. */
  memoryBytes: number;
  /** The instance was created for this call (cold start). */
  instantiated: boolean;
  threadId: number;
}

export type CallResult =
  | { type: 'ok'; output: Uint8Array; logs: LogLine[]; stats: CallStats }
  | { type: 'error'; error: WireError; logs: LogLine[]; stats: CallStats };

export type BatchResult =
  | { type: 'batch-done'; count: number; overflow?: CallResult }
  /** The worker does not hold this plugin: resend with `spec`. */
  | { type: 'missing'; key: string };

export interface WorkerHello {
  type: 'paddock:hello';
  threadId: number;
  port: MessagePort;
  /** Int32Array over it: [0] = a counter the main thread bumps (and notifies) after each reply it posts. */
  flag: SharedArrayBuffer;
}

/** Host functions served by the main-thread broker. */
export type HostFunctionName =
  | 'http_request'
  | 'kv_get'
  | 'kv_set'
  | 'kv_delete'
  | 'kv_list'
  | 'intent_emit'
  | 'clock_now'
  | 'fs_read'
  | 'fs_write'
  | 'fs_list';

/**
 * Paddock's own host functions, imported from module `extism:host/user` as `paddock_<name>`.
 * Arguments and results are Extism kernel-memory blocks (i64 addresses). Results: a block
 * address (0 = nothing), or -1 on a refused/failed call, whose {code, message} JSON the guest
 * reads with paddock_last_error().
 */
export const PADDOCK_USER_MODULE = 'extism:host/user';
export const PADDOCK_USER_FUNCTIONS = {
  paddock_kv_get: { fn: 'kv_get', capability: 'kv.read' },
  paddock_kv_list: { fn: 'kv_list', capability: 'kv.read' },
  paddock_kv_set: { fn: 'kv_set', capability: 'kv.write' },
  paddock_kv_delete: { fn: 'kv_delete', capability: 'kv.write' },
  paddock_intent_emit: { fn: 'intent_emit', capability: 'intents' },
  paddock_clock_now: { fn: 'clock_now', capability: 'clock' },
  paddock_fs_read: { fn: 'fs_read', capability: 'fs' },
  paddock_fs_write: { fn: 'fs_write', capability: 'fs' },
  paddock_fs_list: { fn: 'fs_list', capability: 'fs' },
  paddock_last_error: { fn: null, capability: null },
} as const satisfies Record<string, { fn: HostFunctionName | null; capability: string | null }>;

/** What the guest sees when the broker refuses or fails a host call, by policy. */
export type ViolationAction = 'return' | 'fail' | 'kill';

export interface HostCallRequest {
  type: 'hostcall';
  seq: number;
  callId: number;
  fn: HostFunctionName;
  /** Arguments already decoded from guest memory by the worker (bounded by caps). */
  payload: unknown;
}

export type HostCallReply =
  | { type: 'hostreply'; seq: number; ok: true; value: unknown }
  | { type: 'hostreply'; seq: number; ok: false; error: WireError; action: ViolationAction };

export interface HttpRequestPayload {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: Uint8Array | null;
}

export interface HttpResponsePayload {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** The extism:host/env functions Paddock implements (worker runtime) and accepts (install audit). */
export const EXTISM_ENV_FUNCTIONS = [
  'alloc', 'free', 'length', 'length_unsafe', 'load_u8', 'load_u64', 'store_u8', 'store_u64',
  'input_offset', 'input_length', 'input_load_u8', 'input_load_u64', 'output_set', 'error_set', 'error_get',
  'config_get', 'var_get', 'var_set', 'http_request', 'http_status_code', 'http_headers',
  'log_trace', 'log_debug', 'log_info', 'log_warn', 'log_error', 'get_log_level', 'reset', 'memory_bytes',
] as const;

export const EXTISM_ENV_MODULE = 'extism:host/env';
export const WASI_MODULE = 'wasi_snapshot_preview1';

/** Exit code of a worker that ended itself because the broker ruled a violation fatal (strict mode). */
export const VIOLATION_EXIT_CODE = 86;

// ── Batch results buffer ─────────────────────────────────────────────────────────────────────
// A SharedArrayBuffer per batch, written by the worker, read by the main thread. It outlives the
// worker, which is the point: after a kill the main side still reads what completed.
//
//   Int32[0]  calls completed (Atomics.store after each result is fully written)
//   Int32[1]  index of the call running now, -1 when none
//   Int32[2]  bytes used in the data area
//   Float64[2] (bytes 16..23)  Date.now() when the running call started
//   bytes 32..  results, each: u8 kind (0 ok, 1 error) | u8 hasMeta | u16 0 | u32 outputLen |
//               f64 busyMicros | u32 hostCalls | u32 threadId | f64 memoryBytes | u8 instantiated |
//               3×u8 0 | u32 metaLen | f64 brokerMicros | f64 localHostMicros | output bytes |
//               meta JSON ({ error?, logs? })

export const BATCH_HEADER = 32;
const RESULT_FIXED = 56;

export function batchBufferFor(bytes: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(BATCH_HEADER + bytes);
  resetBatchBuffer(sab);
  return sab;
}

export function resetBatchBuffer(sab: SharedArrayBuffer): void {
  const h = new Int32Array(sab, 0, 8);
  Atomics.store(h, 0, 0);
  Atomics.store(h, 1, -1);
  Atomics.store(h, 2, 0);
  new Float64Array(sab, 16, 1)[0] = 0;
}

const metaEncoder = new TextEncoder();
const metaDecoder = new TextDecoder();

/** Worker side: writes a batch's results and progress; the views are made once per batch. */
export class BatchWriter {
  readonly #sab: SharedArrayBuffer;
  readonly #header: Int32Array;
  readonly #started: Float64Array;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;

  constructor(sab: SharedArrayBuffer) {
    this.#sab = sab;
    this.#header = new Int32Array(sab, 0, 8);
    this.#started = new Float64Array(sab, 16, 1);
    this.#bytes = new Uint8Array(sab);
    this.#view = new DataView(sab);
  }

  /** Marks call `index` as started now; returns the start time (Date.now()). */
  start(index: number): number {
    const now = Date.now();
    this.#started[0] = now;
    Atomics.store(this.#header, 1, index);
    return now;
  }

  /** Appends a result; false when it does not fit (the caller stops the batch). */
  write(r: CallResult): boolean {
    const h = this.#header;
    const used = h[2];
    const output = r.type === 'ok' ? r.output : null;
    const hasMeta = r.type === 'error' || r.logs.length > 0;
    const meta = hasMeta ? metaEncoder.encode(JSON.stringify(r.type === 'error' ? { error: r.error, logs: r.logs } : { logs: r.logs })) : null;
    const outLen = output?.byteLength ?? 0;
    const size = RESULT_FIXED + outLen + (meta?.byteLength ?? 0);
    const at = BATCH_HEADER + used;
    if (at + size > this.#sab.byteLength) return false;
    const v = this.#view;
    v.setUint8(at, r.type === 'ok' ? 0 : 1);
    v.setUint8(at + 1, hasMeta ? 1 : 0);
    v.setUint32(at + 4, outLen, true);
    v.setFloat64(at + 8, r.stats.busyMicros, true);
    v.setUint32(at + 16, r.stats.hostCalls, true);
    v.setUint32(at + 20, r.stats.threadId, true);
    v.setFloat64(at + 24, r.stats.memoryBytes, true);
    v.setUint8(at + 32, r.stats.instantiated ? 1 : 0);
    v.setUint32(at + 36, meta?.byteLength ?? 0, true);
    v.setFloat64(at + 40, r.stats.brokerMicros, true);
    v.setFloat64(at + 48, r.stats.localHostMicros, true);
    if (output) this.#bytes.set(output, at + RESULT_FIXED);
    if (meta) this.#bytes.set(meta, at + RESULT_FIXED + outLen);
    h[2] = used + size;
    Atomics.store(h, 0, h[0] + 1);
    return true;
  }
}

/** Main side: the results completed so far, in call order. */
export function readBatchResults(sab: SharedArrayBuffer): CallResult[] {
  const h = new Int32Array(sab, 0, 8);
  const count = Atomics.load(h, 0);
  const out: CallResult[] = [];
  const bytes = new Uint8Array(sab);
  let at = BATCH_HEADER;
  for (let i = 0; i < count; i++) {
    const v = new DataView(sab, at, RESULT_FIXED);
    const outputLen = v.getUint32(4, true);
    const metaLen = v.getUint32(36, true);
    const stats: CallStats = {
      busyMicros: v.getFloat64(8, true),
      hostCalls: v.getUint32(16, true),
      threadId: v.getUint32(20, true),
      memoryBytes: v.getFloat64(24, true),
      instantiated: v.getUint8(32) === 1,
      brokerMicros: v.getFloat64(40, true),
      localHostMicros: v.getFloat64(48, true),
    };
    const start = at + RESULT_FIXED;
    const meta = v.getUint8(1) === 1 ? (JSON.parse(metaDecoder.decode(bytes.slice(start + outputLen, start + outputLen + metaLen))) as { error?: WireError; logs?: LogLine[] }) : {};
    if (v.getUint8(0) === 0) out.push({ type: 'ok', output: bytes.slice(start, start + outputLen), logs: meta.logs ?? [], stats });
    else out.push({ type: 'error', error: meta.error!, logs: meta.logs ?? [], stats });
    at = start + outputLen + metaLen;
  }
  return out;
}

/** Main side: which call is running and since when (Date.now() ms), or null. */
export function batchProgress(sab: SharedArrayBuffer): { completed: number; running: number; startedAt: number } {
  const h = new Int32Array(sab, 0, 8);
  return { completed: Atomics.load(h, 0), running: Atomics.load(h, 1), startedAt: new Float64Array(sab, 16, 1)[0] };
}

// ── Batch requests buffer ────────────────────────────────────────────────────────────────────
// Each call: u32 callId | u32 timeoutMs | u32 maxOutputBytes | u32 maxHostCalls |
//            f64 maxHostCallBytes | u32 maxLogBytes | u16 fnLength | u16 0 | u32 inputLength |
//            fn (UTF-8) | input, padded to 8 bytes.

const REQUEST_FIXED = 36;
const fnEncoder = new TextEncoder();
const fnDecoder = new TextDecoder();
// Function names repeat: encode each once (bounded, names are validated short identifiers).
const fnBytes = new Map<string, Uint8Array>();
function encodeFn(fn: string): Uint8Array {
  let b = fnBytes.get(fn);
  if (!b) {
    b = fnEncoder.encode(fn);
    if (fnBytes.size < 4096) fnBytes.set(fn, b);
  }
  return b;
}

export function encodedRequestSize(call: CallSpec): number {
  return (REQUEST_FIXED + call.fn.length * 3 + call.input.byteLength + 7) & ~7;
}

/** Main side: encodes calls; returns how many fit (at least one is expected to). */
export function writeBatchRequests(sab: SharedArrayBuffer, calls: CallSpec[]): number {
  const bytes = new Uint8Array(sab);
  let at = 0;
  let n = 0;
  for (const call of calls) {
    const fn = encodeFn(call.fn);
    const size = (REQUEST_FIXED + fn.byteLength + call.input.byteLength + 7) & ~7;
    if (at + size > sab.byteLength) break;
    const v = new DataView(sab, at, REQUEST_FIXED);
    v.setUint32(0, call.callId, true);
    v.setUint32(4, call.timeoutMs, true);
    v.setUint32(8, call.maxOutputBytes, true);
    v.setUint32(12, call.maxHostCalls, true);
    v.setFloat64(16, call.maxHostCallBytes, true);
    v.setUint32(24, call.maxLogBytes, true);
    v.setUint16(28, fn.byteLength, true);
    v.setUint32(32, call.input.byteLength, true);
    bytes.set(fn, at + REQUEST_FIXED);
    bytes.set(call.input, at + REQUEST_FIXED + fn.byteLength);
    at += size;
    n++;
  }
  return n;
}

/** Worker side: decodes `count` calls (inputs are views into the shared buffer). */
export function readBatchRequests(sab: SharedArrayBuffer, count: number): CallSpec[] {
  const bytes = new Uint8Array(sab);
  const calls: CallSpec[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const v = new DataView(sab, at, REQUEST_FIXED);
    const fnLength = v.getUint16(28, true);
    const inputLength = v.getUint32(32, true);
    const start = at + REQUEST_FIXED;
    calls.push({
      callId: v.getUint32(0, true),
      timeoutMs: v.getUint32(4, true),
      maxOutputBytes: v.getUint32(8, true),
      maxHostCalls: v.getUint32(12, true),
      maxHostCallBytes: v.getFloat64(16, true),
      maxLogBytes: v.getUint32(24, true),
      fn: fnDecoder.decode(bytes.subarray(start, start + fnLength)),
      // A view, not a copy: the runtime copies the input into kernel memory anyway, and the main
      // side does not touch this buffer until the batch has settled.
      input: bytes.subarray(start + fnLength, start + fnLength + inputLength),
      deadline: 0,
    });
    at += (REQUEST_FIXED + fnLength + inputLength + 7) & ~7;
  }
  return calls;
}

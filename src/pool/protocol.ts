// The only module shared by the main thread and the workers. Keep it free of imports so the
// worker side never pulls main-side code in.
//
//   main thread                                   worker thread (piscina)
//   ───────────                                   ──────────────────────
//   Executor ── piscina task (RunTask) ─────────▶ worker.ts → Runner → wasm
//            ◀── RunResult ──────────────────────
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
  input: Uint8Array;
  maxOutputBytes: number;
  maxHostCalls: number;
  /** Bytes in and out of host calls, summed over the call. */
  maxHostCallBytes: number;
  maxLogBytes: number;
  /** Absolute deadline (Date.now() ms) — used only to bound host-call waits in the worker. */
  deadline: number;
}

export interface RunTask {
  type: 'run';
  key: string;
  /** Present when the main side knows (or learned) the worker lacks this plugin. */
  spec?: PluginSpec;
  call: CallSpec;
}

export interface WarmTask {
  type: 'warm';
  specs: PluginSpec[];
}

export type Task = RunTask | WarmTask;

export interface LogLine {
  level: Exclude<LogLevelName, 'off'>;
  message: string;
}

export interface CallStats {
  /** Time the worker thread spent running the call (instantiation included), microseconds.
   *  Node 20 has no per-thread CPU clock; a worker runs one call at a time, so this is its busy time. */
  busyMicros: number;
  hostCalls: number;
  /** Wasm linear memory size after the call, bytes. */
  memoryBytes: number;
  /** The instance was created for this call (cold start). */
  instantiated: boolean;
  threadId: number;
}

export type RunResult =
  | { type: 'ok'; output: Uint8Array; logs: LogLine[]; stats: CallStats }
  | { type: 'error'; error: WireError; logs: LogLine[]; stats: CallStats }
  /** The worker does not hold this plugin: resend with `spec`. */
  | { type: 'missing'; key: string }
  | { type: 'warmed'; count: number; threadId: number };

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

// One live instance of one installed plugin, with its own implementation of the
// `extism:host/env` ABI (what @extism/extism's CallContext provides). We implement it here
// rather than wrapping the SDK so that every cap is ours to enforce: kernel memory, var bytes,
// output size, log volume and host-call budget — and so http_request goes to the broker.
//
// Not re-entrant: a worker runs one call at a time (piscina concurrentTasksPerWorker: 1).

import { openSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { WASI as WasiClass } from 'node:wasi';
import {
  EXTISM_ENV_MODULE as EXTISM_ENV,
  PADDOCK_USER_FUNCTIONS,
  PADDOCK_USER_MODULE,
  WASI_MODULE,
  type CallSpec,
  type HostFunctionName,
  type HttpRequestPayload,
  type HttpResponsePayload,
  type LogLevelName,
  type LogLine,
  type PluginSpec,
  type CallResult,
  type WireError,
} from '../protocol.js';
import { GuestFault, HostRefusal, KernelMemory, toAddress } from './kernel-memory.js';

export interface HostBridge {
  call(callId: number, fn: HostFunctionName, payload: unknown, deadline: number): unknown;
}

const PAGE = 65536;
const LEVELS: Record<Exclude<LogLevelName, 'off'>, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };
const MAX_LOG_LINE = 4096;
const MAX_ERROR_MESSAGE = 4096;

const decoder = new TextDecoder('utf-8', { fatal: false });
const encoder = new TextEncoder();

// node:wasi prints an ExperimentalWarning when loaded: load it only for plugins that use WASI.
const require = createRequire(import.meta.url);
let wasiClass: typeof WasiClass | undefined;
const loadWasi = () => (wasiClass ??= (require('node:wasi') as typeof import('node:wasi')).WASI);

let devNull: number | undefined;
function nullFd(): number {
  // WASI stdio goes nowhere by default (as in the Extism SDK): a guest must not write to our terminal.
  devNull ??= openSync('/dev/null', 'r+');
  return devNull;
}

interface CallState {
  spec: CallSpec;
  inputAddr: number;
  inputLen: number;
  outputAddr: number;
  outputLen: number;
  errorAddr: number;
  logs: LogLine[];
  logBytes: number;
  hostCalls: number;
  httpStatus: number;
  httpHeaders: Record<string, string> | null;
  hostBytes: number;
  brokerMicros: number;
  localHostMicros: number;
  lastError: { code: string; message: string } | null;
}

export class PluginInstance {
  readonly spec: PluginSpec;
  readonly key: string;
  #instance!: WebAssembly.Instance;
  #memory: WebAssembly.Memory | null = null;
  #kernel: KernelMemory;
  #vars = new Map<string, Uint8Array>();
  #varBytes = 0;
  #state: CallState | null = null;
  #bridge: HostBridge | null;
  #logThreshold: number;
  #initLogs: LogLine[] = [];
  /** Set after a trap or any fault that may have left guest state inconsistent. */
  poisoned = false;

  private constructor(spec: PluginSpec, bridge: HostBridge | null) {
    this.spec = spec;
    this.key = spec.key;
    this.#bridge = bridge;
    this.#kernel = new KernelMemory(spec.maxKernelBytes);
    this.#logThreshold = spec.logLevel === 'off' ? Infinity : LEVELS[spec.logLevel];
  }

  /**
   * Instantiates and runs the module's initialisation (start section, _initialize, or WASI set-up).
   * Throws a WireError-shaped GuestFault with PADDOCK_INIT_FAILED when the guest traps there.
   */
  static create(spec: PluginSpec, bridge: HostBridge | null): PluginInstance {
    const self = new PluginInstance(spec, bridge);
    self.#instantiate();
    return self;
  }

  #instantiate(): void {
    const imports: WebAssembly.Imports = {};
    const env = this.#env();
    let wasi: WasiClass | null = null;
    for (const imp of WebAssembly.Module.imports(this.spec.module)) {
      if (imp.module === EXTISM_ENV && imp.kind === 'function' && Object.hasOwn(env, imp.name)) {
        (imports[EXTISM_ENV] ??= {})[imp.name] = env[imp.name];
      } else if (imp.module === PADDOCK_USER_MODULE && imp.kind === 'function' && Object.hasOwn(PADDOCK_USER_FUNCTIONS, imp.name)) {
        (imports[PADDOCK_USER_MODULE] ??= {})[imp.name] = this.#userFunction(imp.name as keyof typeof PADDOCK_USER_FUNCTIONS);
      } else if (imp.module === WASI_MODULE && this.spec.wasi) {
        wasi ??= new (loadWasi())({
          version: 'preview1',
          args: [],
          env: {},
          preopens: this.spec.preopens,
          returnOnExit: true,
          stdin: nullFd(),
          stdout: nullFd(),
          stderr: nullFd(),
        });
        imports[WASI_MODULE] ??= (wasi.getImportObject() as Record<string, WebAssembly.ModuleImports>)[WASI_MODULE];
      } else {
        // The install-time audit already refuses these; this is the last line of defence.
        throw new GuestFault('PADDOCK_INVALID_WASM', `unsupported import ${imp.module}.${imp.name} (${imp.kind})`, 'link');
      }
    }
    // A start section runs inside the constructor: that is plugin code, so it is init.
    this.#beginInitState();
    try {
      this.#instance = new WebAssembly.Instance(this.spec.module, imports);
      const exports = this.#instance.exports;
      this.#memory = exports.memory instanceof WebAssembly.Memory ? exports.memory : null;
      if (wasi) {
        if (!this.#memory) throw new GuestFault('PADDOCK_INVALID_WASM', 'a WASI module must export its memory', 'link');
        if (typeof exports._initialize === 'function') wasi.initialize(this.#instance);
        else wasi.start({ exports: { memory: this.#memory, _start: () => {} } } as unknown as WebAssembly.Instance);
      } else if (typeof exports._initialize === 'function') {
        (exports._initialize as () => void)();
      }
      if (typeof exports.hs_init === 'function') (exports.hs_init as () => void)();
    } catch (err) {
      if (err instanceof GuestFault && err.code === 'PADDOCK_INVALID_WASM') throw err;
      // V8 reserves ~10 GiB of address space per memory; running out is a capacity problem, not the plugin's fault.
      if (err instanceof RangeError && /Cannot allocate Wasm memory/i.test(err.message)) {
        throw new GuestFault('PADDOCK_INSTANCE_LIMIT', `no address space for another instance: ${err.message}`, 'address-space');
      }
      const wire = this.#classify(err);
      throw new GuestFault('PADDOCK_INIT_FAILED', `plugin initialisation failed: ${wire.message}`, wire.reason ?? 'init');
    } finally {
      // Logs written during initialisation are reported with the first call.
      this.#initLogs = this.#state?.logs ?? [];
      this.#state = null;
    }
  }

  #beginInitState(): void {
    this.#kernel.reset();
    this.#state = {
      spec: { callId: 0, fn: '(init)', timeoutMs: 0, input: new Uint8Array(0), maxOutputBytes: 0, maxHostCalls: 0, maxHostCallBytes: 0, maxLogBytes: 16 * 1024, deadline: Number.MAX_SAFE_INTEGER },
      inputAddr: 0,
      inputLen: 0,
      outputAddr: 0,
      outputLen: 0,
      errorAddr: 0,
      logs: [],
      logBytes: 0,
      hostCalls: 0,
      httpStatus: 0,
      httpHeaders: null,
      hostBytes: 0,
      brokerMicros: 0,
      localHostMicros: 0,
      lastError: null,
    };
  }

  get memoryBytes(): number {
    return this.#memory ? this.#memory.buffer.byteLength : 0;
  }

  run(call: CallSpec): CallResult {
    const started = performance.now();
    const fn = this.#instance.exports[call.fn];
    const stats = () => ({
      busyMicros: Math.round((performance.now() - started) * 1000),
      hostCalls: this.#state?.hostCalls ?? 0,
      brokerMicros: this.#state?.brokerMicros ?? 0,
      localHostMicros: this.#state?.localHostMicros ?? 0,
      memoryBytes: this.memoryBytes,
      instantiated: false,
      threadId: 0,
    });
    if (typeof fn !== 'function') {
      return { type: 'error', error: { code: 'PADDOCK_NO_SUCH_EXPORT', message: `plugin has no exported function "${call.fn}"` }, logs: [], stats: stats() };
    }
    this.#kernel.reset();
    const state: CallState = {
      spec: call,
      inputAddr: 0,
      inputLen: call.input.byteLength,
      outputAddr: 0,
      outputLen: 0,
      errorAddr: 0,
      logs: this.#initLogs,
      logBytes: 0,
      hostCalls: 0,
      httpStatus: 0,
      httpHeaders: null,
      hostBytes: 0,
      brokerMicros: 0,
      localHostMicros: 0,
      lastError: null,
    };
    this.#initLogs = [];
    this.#state = state;
    try {
      state.inputAddr = this.#kernel.store(call.input);
      const rc = (fn as () => unknown)();
      if (state.errorAddr !== 0) {
        const msg = decoder.decode(this.#kernel.block(state.errorAddr).subarray(0, MAX_ERROR_MESSAGE));
        return { type: 'error', error: { code: 'PADDOCK_PLUGIN_ERROR', message: msg || 'plugin reported an error', reason: 'error-set' }, logs: state.logs, stats: stats() };
      }
      if (typeof rc === 'number' && rc !== 0) {
        return { type: 'error', error: { code: 'PADDOCK_PLUGIN_ERROR', message: `plugin function "${call.fn}" returned status ${rc}`, reason: 'status' }, logs: state.logs, stats: stats() };
      }
      // Copy out of the arena: the arena is reused by the next call.
      const output = state.outputAddr === 0 ? new Uint8Array(0) : this.#kernel.block(state.outputAddr, state.outputLen).slice();
      return { type: 'ok', output, logs: state.logs, stats: stats() };
    } catch (err) {
      const error = this.#classify(err);
      // AssemblyScript (and other PDKs) set an error message right before trapping on abort.
      if (state.errorAddr !== 0 && error.code === 'PADDOCK_TRAP') {
        try {
          error.message += ` (plugin error: ${decoder.decode(this.#kernel.block(state.errorAddr).subarray(0, MAX_ERROR_MESSAGE))})`;
        } catch {
          // the block is gone or invalid: the trap alone is the story
        }
      }
      // Output/log caps are enforced before any guest state is corrupted, but a GuestFault
      // unwinds through guest frames all the same: never reuse an instance that was unwound.
      this.poisoned = true;
      return { type: 'error', error, logs: state.logs, stats: stats() };
    } finally {
      this.#state = null;
    }
  }

  #classify(err: unknown): WireError {
    if (err instanceof GuestFault) return { code: err.code, message: err.message, reason: err.reason };
    const atCap = this.#memory !== null && this.#memory.buffer.byteLength >= this.spec.memoryPages * PAGE;
    const message = err instanceof Error ? err.message : String(err);
    if (err instanceof RangeError && /call stack/i.test(message)) {
      return { code: 'PADDOCK_TRAP', message: 'stack overflow (unbounded recursion?)', reason: 'stack-overflow' };
    }
    if (err instanceof RangeError && /memory|allocation failed/i.test(message)) {
      return { code: 'PADDOCK_MEMORY_LIMIT', message: `out of memory: ${message}`, reason: 'allocation' };
    }
    if (err instanceof WebAssembly.RuntimeError) {
      if (atCap) {
        return { code: 'PADDOCK_MEMORY_LIMIT', message: `plugin trapped at its memory cap of ${this.spec.memoryPages} pages (${message})`, reason: 'linear-memory' };
      }
      const reason = /unreachable/i.test(message)
        ? 'unreachable'
        : /divide by zero|division by zero/i.test(message)
          ? 'divide-by-zero'
          : /out of bounds/i.test(message)
            ? 'out-of-bounds'
            : /stack/i.test(message)
              ? 'stack-overflow'
              : 'trap';
      return { code: 'PADDOCK_TRAP', message: `plugin trapped: ${message}`, reason };
    }
    // WASI proc_exit and anything else a host import threw on the guest's behalf.
    return { code: 'PADDOCK_TRAP', message: `plugin aborted: ${message}`, reason: 'host-exception' };
  }

  #cur(): CallState {
    const s = this.#state;
    if (!s) throw new GuestFault('PADDOCK_TRAP', 'host function called outside a call', 'invalid-host-call');
    return s;
  }

  #readString(addr: bigint, what: string, max = 64 * 1024): string {
    const bytes = this.#kernel.block(toAddress(addr));
    if (bytes.byteLength > max) throw new GuestFault('PADDOCK_TRAP', `${what} is longer than ${max} bytes`, 'invalid-host-call-argument');
    return decoder.decode(bytes);
  }

  #log(level: Exclude<LogLevelName, 'off'>, addr: bigint): void {
    const s = this.#cur();
    const bytes = this.#kernel.block(toAddress(addr));
    if (LEVELS[level] < this.#logThreshold) return;
    // A log flood costs the guest its own budget, never the service: past the cap, drop.
    if (s.logBytes >= s.spec.maxLogBytes) return;
    const slice = bytes.subarray(0, Math.min(bytes.byteLength, MAX_LOG_LINE, s.spec.maxLogBytes - s.logBytes));
    s.logBytes += slice.byteLength;
    s.logs.push({ level, message: decoder.decode(slice) });
  }

  /** Sends a host call to the broker, enforcing the per-call count and byte budgets. */
  #hostCall(fn: HostFunctionName, payload: unknown, bytesIn: number): unknown {
    const s = this.#cur();
    if (++s.hostCalls > s.spec.maxHostCalls) {
      throw new GuestFault('PADDOCK_CAPABILITY_DENIED', `more than ${s.spec.maxHostCalls} host calls in one call`, 'host-call-budget');
    }
    this.#spendHostBytes(s, bytesIn);
    if (!this.#bridge) throw new GuestFault('PADDOCK_CAPABILITY_DENIED', `${fn} is not available here`, 'no-broker');
    const t0 = performance.now();
    try {
      return this.#bridge.call(s.spec.callId, fn, payload, s.spec.deadline);
    } finally {
      s.brokerMicros += (performance.now() - t0) * 1000;
    }
  }

  #spendHostBytes(s: CallState, n: number): void {
    s.hostBytes += n;
    if (s.hostBytes > s.spec.maxHostCallBytes) {
      throw new GuestFault('PADDOCK_CAPABILITY_DENIED', `more than ${s.spec.maxHostCallBytes} bytes through host calls in one call`, 'host-call-bytes');
    }
  }

  /** A Paddock host function: block-address arguments in, block address (or -1 + last error) out. */
  #userFunction(name: keyof typeof PADDOCK_USER_FUNCTIONS): (...args: bigint[]) => bigint {
    const k = this.#kernel;
    if (name === 'paddock_last_error') {
      return () => {
        const err = this.#cur().lastError;
        return err ? BigInt(k.store(encoder.encode(JSON.stringify(err)))) : 0n;
      };
    }
    const fn = PADDOCK_USER_FUNCTIONS[name].fn;
    return (...args: bigint[]) => {
      const s = this.#cur();
      s.lastError = null;
      // Arguments are copied out of kernel memory here; the broker never sees guest addresses.
      const blocks = args.map((a) => {
        const addr = toAddress(a);
        return addr === 0 ? null : k.block(addr).slice();
      });
      const bytesIn = blocks.reduce((n, b) => n + (b?.byteLength ?? 0), 0);
      try {
        const value = this.#hostCall(fn, blocks, bytesIn);
        if (value === null || value === undefined) return 0n;
        if (typeof value === 'number') return BigInt(value);
        const bytes = value instanceof Uint8Array ? value : encoder.encode(JSON.stringify(value));
        this.#spendHostBytes(s, bytes.byteLength);
        return BigInt(k.store(bytes));
      } catch (err) {
        if (err instanceof HostRefusal) {
          s.lastError = { code: err.code, message: err.message };
          return -1n;
        }
        throw err;
      }
    };
  }

  #env(): Record<string, (...args: never[]) => unknown> {
    const k = this.#kernel;
    return {
      alloc: (n: bigint) => BigInt(k.alloc(toAddress(n))),
      free: (addr: bigint) => k.free(toAddress(addr)),
      length: (addr: bigint) => BigInt(k.length(toAddress(addr))),
      length_unsafe: (addr: bigint) => BigInt(k.length(toAddress(addr))),
      load_u8: (addr: bigint) => k.loadU8(toAddress(addr)),
      load_u64: (addr: bigint) => k.loadU64(toAddress(addr)),
      store_u8: (addr: bigint, v: number) => k.storeU8(toAddress(addr), v & 0xff),
      store_u64: (addr: bigint, v: bigint) => k.storeU64(toAddress(addr), BigInt.asUintN(64, v)),
      input_offset: () => BigInt(this.#cur().inputAddr),
      input_length: () => BigInt(this.#cur().inputLen),
      input_load_u8: (off: bigint) => {
        const s = this.#cur();
        const o = toAddress(off);
        if (o >= s.inputLen) throw new GuestFault('PADDOCK_TRAP', `input read out of bounds at ${o}`, 'invalid-host-call-argument');
        return k.loadU8(s.inputAddr + o);
      },
      input_load_u64: (off: bigint) => {
        const s = this.#cur();
        const o = toAddress(off);
        if (o + 8 > s.inputLen) throw new GuestFault('PADDOCK_TRAP', `input read out of bounds at ${o}`, 'invalid-host-call-argument');
        return k.loadU64(s.inputAddr + o);
      },
      output_set: (addr: bigint, len: bigint) => {
        const s = this.#cur();
        // Checked before anything is copied: the cap holds even against a forged length
        // (a negative i64 is a huge u64 to the guest).
        if (len < 0n || len > BigInt(s.spec.maxOutputBytes)) {
          throw new GuestFault('PADDOCK_OUTPUT_TOO_LARGE', `output of ${BigInt.asUintN(64, len)} bytes exceeds the cap of ${s.spec.maxOutputBytes}`, 'output-cap');
        }
        const n = Number(len);
        const a = toAddress(addr);
        k.block(a, n); // validates block and length
        s.outputAddr = a;
        s.outputLen = n;
      },
      error_set: (addr: bigint) => {
        const a = toAddress(addr);
        k.block(a);
        this.#cur().errorAddr = a;
      },
      error_get: () => BigInt(this.#cur().errorAddr),
      config_get: (addr: bigint) => {
        const s = this.#cur();
        const t0 = performance.now();
        const key = this.#readString(addr, 'config key');
        const value = Object.hasOwn(this.spec.config, key) ? BigInt(k.store(encoder.encode(this.spec.config[key]))) : 0n;
        s.localHostMicros += (performance.now() - t0) * 1000;
        return value;
      },
      var_get: (addr: bigint) => {
        const value = this.#vars.get(this.#readString(addr, 'var name'));
        return value ? BigInt(k.store(value)) : 0n;
      },
      var_set: (addr: bigint, valueAddr: bigint) => {
        const name = this.#readString(addr, 'var name');
        const old = this.#vars.get(name);
        const v = toAddress(valueAddr);
        if (v === 0) {
          if (old) {
            this.#varBytes -= old.byteLength + name.length;
            this.#vars.delete(name);
          }
          return;
        }
        const value = k.block(v);
        const next = this.#varBytes - (old ? old.byteLength + name.length : 0) + value.byteLength + name.length;
        if (next > this.spec.maxVarBytes) {
          throw new GuestFault('PADDOCK_MEMORY_LIMIT', `var memory limit exceeded: ${next} bytes requested, ${this.spec.maxVarBytes} allowed`, 'var-bytes');
        }
        this.#varBytes = next;
        this.#vars.set(name, value.slice());
      },
      http_request: (reqAddr: bigint, bodyAddr: bigint) => {
        const s = this.#cur();
        let req: { url?: unknown; method?: unknown; headers?: unknown; header?: unknown };
        try {
          req = JSON.parse(this.#readString(reqAddr, 'http request')) as typeof req;
        } catch (err) {
          if (err instanceof GuestFault) throw err;
          throw new GuestFault('PADDOCK_TRAP', 'http_request: request is not valid JSON', 'invalid-host-call-argument');
        }
        if (typeof req !== 'object' || req === null || typeof req.url !== 'string') {
          throw new GuestFault('PADDOCK_TRAP', 'http_request: request needs a "url" string', 'invalid-host-call-argument');
        }
        const method = typeof req.method === 'string' ? req.method.toUpperCase() : 'GET';
        const rawHeaders = (req.headers ?? req.header ?? {}) as Record<string, unknown>;
        const headers: Record<string, string> = {};
        if (typeof rawHeaders === 'object' && rawHeaders !== null) {
          for (const [name, value] of Object.entries(rawHeaders)) if (typeof value === 'string') headers[name] = value;
        }
        const b = toAddress(bodyAddr);
        const body = b === 0 || method === 'GET' || method === 'HEAD' ? null : k.block(b).slice();
        s.lastError = null;
        const payload: HttpRequestPayload = { url: req.url, method, headers, body };
        let res: HttpResponsePayload;
        try {
          res = this.#hostCall('http_request', payload, (body?.byteLength ?? 0) + req.url.length) as HttpResponsePayload;
        } catch (err) {
          // Extism's ABI has no error channel for http_request: a refused request reads as
          // status 0 with no body, and the reason is in paddock_last_error.
          if (!(err instanceof HostRefusal)) throw err;
          s.lastError = { code: err.code, message: err.message };
          s.httpStatus = 0;
          s.httpHeaders = null;
          return 0n;
        }
        this.#spendHostBytes(s, res.body.byteLength);
        s.httpStatus = res.status;
        s.httpHeaders = res.headers;
        return BigInt(k.store(res.body));
      },
      http_status_code: () => this.#cur().httpStatus,
      http_headers: () => {
        const h = this.#cur().httpHeaders;
        return h ? BigInt(k.store(encoder.encode(JSON.stringify(h)))) : 0n;
      },
      log_trace: (addr: bigint) => this.#log('trace', addr),
      log_debug: (addr: bigint) => this.#log('debug', addr),
      log_info: (addr: bigint) => this.#log('info', addr),
      log_warn: (addr: bigint) => this.#log('warn', addr),
      log_error: (addr: bigint) => this.#log('error', addr),
      get_log_level: () => (Number.isFinite(this.#logThreshold) ? this.#logThreshold : -1),
      reset: () => k.reset(),
      memory_bytes: () => BigInt(k.used),
    };
  }
}

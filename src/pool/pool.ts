// Main-side worker pool: piscina owns the threads; we own admission, deadlines and healing.
//
// - At most `workers` calls run at once, but piscina keeps `workers + spares` threads alive.
//   A call therefore always starts on an idle, already-running thread, so its deadline (which
//   starts at dispatch) never pays for a respawn, and a replacement for a killed worker is
//   spawned off the request path.
// - A timeout aborts the piscina task, which terminates that worker (a timeout kills the
//   thread, not the promise: V8 interrupts even a `(loop (br 0))`). piscina then starts a
//   replacement; when it loads it asks us for the hot plugins and instantiates them before it
//   reports ready, so it joins warm.
// - Each worker hands us a private MessagePort + flag (WorkerHello) for host calls; the
//   HostCallHandler answers them (see broker-client.ts for the diagram).

import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { PaddockError } from '../errors.js';
import type {
  HostCallReply,
  HostCallRequest,
  PluginSpec,
  RunResult,
  Task,
  ViolationAction,
  WireError,
  WorkerHello,
} from './protocol.js';
import { VIOLATION_EXIT_CODE } from './protocol.js';

export interface PoolOptions {
  workers: number;
  spares: number;
  maxQueued: number;
  maxInstancesPerWorker: number;
  heapMb: number;
  stackMb: number;
}

export interface HostCallHandler {
  (request: HostCallRequest): Promise<unknown>;
}

export type RestartReason = 'timeout' | 'init-timeout' | 'worker-heap' | 'worker-exit' | 'violation';

export interface PoolEvents {
  'worker-restart': [{ reason: RestartReason; key: string }];
  'worker-created': [{ threadId: number; warmed: number }];
}

interface Channel {
  port: MessagePort & { on(event: 'message', fn: (m: unknown) => void): void; close(): void; unref?(): void };
  flag: Int32Array;
}

/** What a finished call reports to the executor. */
export type CallOutcome =
  | { ok: true; result: Extract<RunResult, { type: 'ok' }> }
  | { ok: false; error: WireError; result?: Extract<RunResult, { type: 'error' }>; restart?: RestartReason };

export class WorkerPool extends EventEmitter<PoolEvents> {
  readonly options: PoolOptions;
  #piscina: Piscina;
  #channels = new Map<number, Channel>();
  #running = 0;
  #waiting: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  #closed = false;
  #hostCall: HostCallHandler;
  #hotSpecs: () => PluginSpec[];
  /** callIds currently inside plugin initialisation (reported by the worker). */
  #initPhase = new Set<number>();
  #drained: Array<() => void> = [];

  constructor(options: PoolOptions, hostCall: HostCallHandler, hotSpecs: () => PluginSpec[]) {
    super();
    this.options = options;
    this.#hostCall = hostCall;
    this.#hotSpecs = hotSpecs;
    const threads = options.workers + options.spares;
    this.#piscina = new Piscina({
      filename: fileURLToPath(new URL('./worker.js', import.meta.url)),
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Infinity,
      // One call per thread: an abort terminates the thread, so it must not hold anyone else's call.
      concurrentTasksPerWorker: 1,
      resourceLimits: {
        maxOldGenerationSizeMb: options.heapMb,
        maxYoungGenerationSizeMb: Math.max(4, Math.floor(options.heapMb / 8)),
        stackSizeMb: options.stackMb,
      },
      workerData: { maxInstances: options.maxInstancesPerWorker },
      // Our own admission keeps piscina's queue near-empty; this only bounds respawn gaps.
      maxQueue: Infinity,
      // Keep NODE_OPTIONS (e.g. --max-old-space-size) from overriding resourceLimits (nodejs/node#43991).
      env: {},
      execArgv: [],
    });
    this.#piscina.on('message', (m: unknown) => this.#onWorkerMessage(m));
    this.#piscina.on('workerDestroy', (w: { threadId?: number; worker?: { threadId: number } }) => {
      const id = w.threadId ?? w.worker?.threadId;
      if (id === undefined) return;
      const ch = this.#channels.get(id);
      ch?.port.close();
      this.#channels.delete(id);
    });
    // piscina emits 'error' for worker failures that had no task; they are already healed.
    this.#piscina.on('error', () => {});
  }

  get threads(): number {
    return this.#piscina.threads.length;
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  get threadIds(): number[] {
    return this.#piscina.threads.map((t) => t.threadId);
  }

  #onWorkerMessage(message: unknown): void {
    const hello = message as WorkerHello;
    if (!hello || hello.type !== 'paddock:hello') return;
    const port = hello.port as unknown as Channel['port'];
    const channel: Channel = { port, flag: new Int32Array(hello.flag) };
    this.#channels.set(hello.threadId, channel);
    port.on('message', (m: unknown) => this.#onChannelMessage(channel, m));
    port.unref?.();
    // The new worker waits (bounded) for this before reporting ready: it joins with the hot
    // plugins already instantiated.
    const specs = this.#closed ? [] : this.#hotSpecs();
    port.postMessage({ type: 'warm', specs });
    this.#wake(channel);
    this.emit('worker-created', { threadId: hello.threadId, warmed: specs.length });
  }

  #wake(channel: Channel): void {
    Atomics.add(channel.flag, 0, 1);
    Atomics.notify(channel.flag, 0);
  }

  #onChannelMessage(channel: Channel, message: unknown): void {
    const m = message as { type?: string; callId?: number; phase?: string };
    if (m.type === 'phase') {
      if (m.phase === 'init') this.#initPhase.add(m.callId!);
      else this.#initPhase.delete(m.callId!);
      return;
    }
    if (m.type !== 'hostcall') return;
    const request = message as HostCallRequest;
    this.#hostCall(request).then(
      (value): HostCallReply => ({ type: 'hostreply', seq: request.seq, ok: true, value }),
      (err: unknown): HostCallReply => ({
        type: 'hostreply',
        seq: request.seq,
        ok: false,
        error: {
          code: (err as PaddockError).code ?? 'PADDOCK_HOST_CALL_FAILED',
          message: err instanceof Error ? err.message : String(err),
          reason: (err as { reason?: string }).reason ?? 'host-call',
        } as WireError,
        action: (err as { action?: ViolationAction }).action ?? 'return',
      }),
    ).then((reply) => {
      try {
        channel.port.postMessage(reply);
        this.#wake(channel);
      } catch {
        // The worker died while we were answering; its call is already failed.
      }
    });
  }

  async #acquire(): Promise<void> {
    if (this.#closed) throw new PaddockError('PADDOCK_SHUTTING_DOWN', 'the executor is closed');
    if (this.#running < this.options.workers) {
      this.#running++;
      return;
    }
    if (this.#waiting.length >= this.options.maxQueued) {
      throw new PaddockError('PADDOCK_QUEUE_FULL', `${this.#waiting.length} calls already queued`, { details: { retryAfter: 1 } });
    }
    await new Promise<void>((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next.resolve();
    else if (--this.#running === 0) for (const done of this.#drained.splice(0)) done();
  }

  /**
   * Runs one call. `spec` is attached only if the worker turns out not to hold the plugin.
   * The deadline starts when the call leaves our queue.
   */
  async call(task: Extract<Task, { type: 'run' }>, spec: () => PluginSpec, timeoutMs: number): Promise<CallOutcome> {
    await this.#acquire();
    const ac = new AbortController();
    const started = Date.now();
    task.call.deadline = started + timeoutMs;
    const timer = setTimeout(() => ac.abort(), timeoutMs);
    const callId = task.call.callId;
    try {
      let result = (await this.#piscina.run(task, { signal: ac.signal })) as RunResult;
      if (result.type === 'missing') {
        result = (await this.#piscina.run({ ...task, spec: spec() }, { signal: ac.signal })) as RunResult;
      }
      if (result.type === 'ok') return { ok: true, result };
      if (result.type === 'error') return { ok: false, error: result.error, result };
      return { ok: false, error: { code: 'PADDOCK_INTERNAL', message: `unexpected worker result ${result.type}` } };
    } catch (err) {
      if (ac.signal.aborted) {
        const inInit = this.#initPhase.has(callId);
        const restart: RestartReason = inInit ? 'init-timeout' : 'timeout';
        this.emit('worker-restart', { reason: restart, key: task.key });
        return {
          ok: false,
          restart,
          error: inInit
            ? { code: 'PADDOCK_INIT_FAILED', message: `plugin initialisation ran past the ${timeoutMs} ms deadline; it will not be retried until a new version is installed`, reason: 'init-timeout' }
            : { code: 'PADDOCK_TIMEOUT', message: `call ran past its ${timeoutMs} ms deadline; the worker was replaced`, reason: 'deadline' },
        };
      }
      const code = (err as { code?: string }).code;
      if (code === 'ERR_WORKER_OUT_OF_MEMORY') {
        this.emit('worker-restart', { reason: 'worker-heap', key: task.key });
        return { ok: false, restart: 'worker-heap', error: { code: 'PADDOCK_MEMORY_LIMIT', message: `the worker ran out of heap (${this.options.heapMb} MB) and was replaced`, reason: 'worker-heap' } };
      }
      if (this.#closed) return { ok: false, error: { code: 'PADDOCK_SHUTTING_DOWN' as WireError['code'], message: 'the executor closed during the call' } };
      if (new RegExp(`exited with code:? ${VIOLATION_EXIT_CODE}\\b`).test(String((err as Error).message))) {
        this.emit('worker-restart', { reason: 'violation', key: task.key });
        return { ok: false, restart: 'violation', error: { code: 'PADDOCK_CAPABILITY_DENIED', message: 'the worker was ended after a violation (strict policy)', reason: 'violation-kill' } };
      }
      this.emit('worker-restart', { reason: 'worker-exit', key: task.key });
      return { ok: false, restart: 'worker-exit', error: { code: 'PADDOCK_WORKER_CRASHED', message: `worker failed: ${err instanceof Error ? err.message : String(err)}`, reason: 'worker-exit' } };
    } finally {
      clearTimeout(timer);
      this.#initPhase.delete(callId);
      this.#release();
    }
  }

  /** Waits for calls in flight and queued to finish, then stops every worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#running > 0) await new Promise<void>((resolve) => this.#drained.push(resolve));
    await this.destroy();
  }

  /** Stops now: queued calls reject, running ones are cut off. */
  async destroy(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) w.reject(new PaddockError('PADDOCK_SHUTTING_DOWN', 'the executor was destroyed'));
    for (const ch of this.#channels.values()) ch.port.close();
    this.#channels.clear();
    await this.#piscina.destroy();
  }
}

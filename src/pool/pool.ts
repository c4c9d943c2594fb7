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
import {
  type BatchResult,
  type BatchTask,
  batchBufferFor,
  batchProgress,
  type CallSpec,
  encodedRequestSize,
  readBatchResults,
  resetBatchBuffer,
  writeBatchRequests,
} from './protocol.js';
import type {
  HostCallReply,
  HostCallRequest,
  PluginSpec,
  CallResult,
  ViolationAction,
  WireError,
  WorkerHello,
} from './protocol.js';
import { VIOLATION_EXIT_CODE } from './protocol.js';

export interface PoolOptions {
  /** Most calls of one plugin sent to a worker in one task. */
  maxBatch: number;
  /** Size of each batch's shared results buffer; a bigger output ends its batch early. */
  batchBufferBytes: number;
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

interface BatchBuffers {
  requests: SharedArrayBuffer;
  results: SharedArrayBuffer;
  oneOff?: boolean;
}

interface Pending {
  key: string;
  call: CallSpec;
  spec: () => PluginSpec;
  resolve: (o: CallOutcome) => void;
}

/** What a finished call reports to the executor. */
export type CallOutcome =
  | { ok: true; result: Extract<CallResult, { type: 'ok' }> }
  | { ok: false; error: WireError; result?: Extract<CallResult, { type: 'error' }>; restart?: RestartReason };

export class WorkerPool extends EventEmitter<PoolEvents> {
  readonly options: PoolOptions;
  #piscina: Piscina;
  #channels = new Map<number, Channel>();
  #running = 0;
  #queues = new Map<string, Pending[]>();
  #order: string[] = [];
  #queued = 0;
  #spareBuffers: BatchBuffers[] = [];
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
      // We measure what we need ourselves; piscina's histograms cost time on every task.
      recordTiming: false,
      workerHistogram: false,
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
    return this.#queued;
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

  /**
   * Queues one call. Calls of the same plugin that are waiting when a worker frees up leave
   * together as one batch (up to `maxBatch`): under load the transport cost is shared, when idle
   * a call leaves alone at once. Plugins take turns (round robin by key).
   */
  call(key: string, call: CallSpec, spec: () => PluginSpec): Promise<CallOutcome> {
    if (this.#closed) return Promise.reject(new PaddockError('PADDOCK_SHUTTING_DOWN', 'the executor is closed'));
    if (this.#queued >= this.options.maxQueued && this.#running >= this.options.workers) {
      return Promise.reject(new PaddockError('PADDOCK_QUEUE_FULL', `${this.#queued} calls already queued`, { details: { retryAfter: 1 } }));
    }
    return new Promise<CallOutcome>((resolve) => {
      this.#enqueue({ key, call, spec, resolve }, false);
      this.#pump();
    });
  }

  #enqueue(p: Pending, front: boolean): void {
    let q = this.#queues.get(p.key);
    if (!q) {
      q = [];
      this.#queues.set(p.key, q);
    }
    if (q.length === 0) {
      if (front) this.#order.unshift(p.key);
      else this.#order.push(p.key);
    }
    if (front) q.unshift(p);
    else q.push(p);
    this.#queued++;
  }

  #pump(): void {
    while (this.#running < this.options.workers && this.#order.length > 0) {
      const key = this.#order.shift()!;
      const q = this.#queues.get(key)!;
      const batch = q.splice(0, this.options.maxBatch);
      this.#queued -= batch.length;
      if (q.length > 0) this.#order.push(key);
      else this.#queues.delete(key);
      this.#running++;
      void this.#runBatch(key, batch).finally(() => {
        this.#running--;
        this.#pump();
        if (this.#running === 0 && this.#queued === 0) for (const done of this.#drained.splice(0)) done();
      });
    }
  }

  #buffers(): BatchBuffers {
    const b = this.#spareBuffers.pop() ?? { requests: new SharedArrayBuffer(this.options.batchBufferBytes), results: batchBufferFor(this.options.batchBufferBytes) };
    resetBatchBuffer(b.results);
    return b;
  }

  async #runBatch(key: string, queued: Pending[]): Promise<void> {
    let buffers = this.#buffers();
    let count = writeBatchRequests(buffers.requests, queued.map((p) => p.call));
    if (count === 0) {
      // One call whose input alone exceeds the buffer: it travels in a buffer of its own.
      this.#spareBuffers.push(buffers);
      const size = encodedRequestSize(queued[0].call);
      buffers = { requests: new SharedArrayBuffer(size), results: batchBufferFor(this.options.batchBufferBytes), oneOff: true };
      count = writeBatchRequests(buffers.requests, [queued[0].call]);
    }
    // Calls that did not fit wait for the next batch.
    for (let i = queued.length - 1; i >= count; i--) this.#enqueue(queued[i], true);
    const batch = queued.slice(0, count);
    const { requests, results } = buffers;
    const ac = new AbortController();
    const calls = batch.map((p) => p.call);
    const dispatchedAt = Date.now();
    // Watchdog: each call's deadline counts from when it starts in the worker (the worker
    // records the index and start time in the shared buffer); a timeout kills the thread.
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      const { running, startedAt } = batchProgress(results);
      const index = running < 0 ? 0 : running;
      const start = running < 0 ? dispatchedAt : startedAt;
      const wait = start + calls[index].timeoutMs - Date.now();
      if (wait <= 0 && running >= 0) {
        ac.abort();
        return;
      }
      timer = setTimeout(arm, Math.max(1, wait));
    };
    arm();
    let outcome: BatchResult | null = null;
    let failure: unknown = null;
    try {
      outcome = (await this.#piscina.run({ type: 'batch', key, count, requests, results } satisfies BatchTask, { signal: ac.signal })) as BatchResult;
      if (outcome.type === 'missing') {
        outcome = (await this.#piscina.run({ type: 'batch', key, count, requests, results, spec: batch[0].spec() } satisfies BatchTask, { signal: ac.signal })) as BatchResult;
      }
    } catch (err) {
      failure = err;
    } finally {
      clearTimeout(timer);
    }
    const done = readBatchResults(results);
    done.forEach((r, i) => batch[i].resolve(r.type === 'ok' ? { ok: true, result: r } : { ok: false, error: r.error, result: r }));
    let next = done.length;
    if (failure === null && outcome?.type === 'batch-done' && outcome.overflow) {
      const r = outcome.overflow;
      batch[next].resolve(r.type === 'ok' ? { ok: true, result: r } : { ok: false, error: r.error, result: r });
      next++;
    } else if (failure !== null || outcome?.type !== 'batch-done') {
      // The call that was running when the worker died or was killed gets the failure.
      const culprit = batch[next];
      if (culprit) culprit.resolve(this.#failureOutcome(failure, ac.signal.aborted, culprit));
      next++;
    }
    // Buffers of a killed worker are safe to reuse: nobody writes to them any more.
    if (!buffers.oneOff) this.#spareBuffers.push(buffers);
    // Calls after the one that failed never started: they go back to the front of the line.
    for (let i = batch.length - 1; i >= next; i--) this.#enqueue(batch[i], true);
  }

  #failureOutcome(err: unknown, aborted: boolean, p: Pending): CallOutcome {
    const callId = p.call.callId;
    const timeoutMs = p.call.timeoutMs;
    if (aborted) {
      const inInit = this.#initPhase.has(callId);
      this.#initPhase.delete(callId);
      const restart: RestartReason = inInit ? 'init-timeout' : 'timeout';
      this.emit('worker-restart', { reason: restart, key: p.key });
      return {
        ok: false,
        restart,
        error: inInit
          ? { code: 'PADDOCK_INIT_FAILED', message: `plugin initialisation ran past the ${timeoutMs} ms deadline; it will not be retried until a new version is installed`, reason: 'init-timeout' }
          : { code: 'PADDOCK_TIMEOUT', message: `call ran past its ${timeoutMs} ms deadline; the worker was replaced`, reason: 'deadline' },
      };
    }
    this.#initPhase.delete(callId);
    if (err === null) return { ok: false, error: { code: 'PADDOCK_INTERNAL', message: 'the worker returned no result' } };
    const code = (err as { code?: string }).code;
    if (code === 'ERR_WORKER_OUT_OF_MEMORY') {
      this.emit('worker-restart', { reason: 'worker-heap', key: p.key });
      return { ok: false, restart: 'worker-heap', error: { code: 'PADDOCK_MEMORY_LIMIT', message: `the worker ran out of heap (${this.options.heapMb} MB) and was replaced`, reason: 'worker-heap' } };
    }
    if (this.#closed) return { ok: false, error: { code: 'PADDOCK_SHUTTING_DOWN', message: 'the executor closed during the call' } };
    if (new RegExp(`exited with code:? ${VIOLATION_EXIT_CODE}\\b`).test(String((err as Error).message))) {
      this.emit('worker-restart', { reason: 'violation', key: p.key });
      return { ok: false, restart: 'violation', error: { code: 'PADDOCK_CAPABILITY_DENIED', message: 'the worker was ended after a violation (strict policy)', reason: 'violation-kill' } };
    }
    this.emit('worker-restart', { reason: 'worker-exit', key: p.key });
    return { ok: false, restart: 'worker-exit', error: { code: 'PADDOCK_WORKER_CRASHED', message: `worker failed: ${err instanceof Error ? err.message : String(err)}`, reason: 'worker-exit' } };
  }

  /** Waits for calls in flight and queued to finish, then stops every worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#running > 0 || this.#queued > 0) await new Promise<void>((resolve) => this.#drained.push(resolve));
    await this.destroy();
  }

  /** Stops now: queued calls reject, running ones are cut off. */
  async destroy(): Promise<void> {
    this.#closed = true;
    for (const q of this.#queues.values()) {
      for (const p of q) p.resolve({ ok: false, error: { code: 'PADDOCK_SHUTTING_DOWN', message: 'the executor was destroyed' } });
    }
    this.#queues.clear();
    this.#order = [];
    this.#queued = 0;
    for (const ch of this.#channels.values()) ch.port.close();
    this.#channels.clear();
    await this.#piscina.destroy();
  }
}

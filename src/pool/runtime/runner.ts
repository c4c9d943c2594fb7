// The in-thread runner: keeps compiled plugin specs and warm instances for one thread and
// executes calls. It knows nothing about threads, so tests can drive it directly; the worker
// entry (../worker.ts) is a thin reactor around it.

import { type BatchResult, type BatchTask, BatchWriter, type CallResult, type CallSpec, type PluginSpec, readBatchRequests, type WireError } from '../protocol.js';
import { GuestFault } from './kernel-memory.js';
import { type HostBridge, PluginInstance } from './plugin-instance.js';

export interface RunnerOptions {
  /** Live instances kept by this thread; the least recently used idle one is evicted past it. */
  maxInstances: number;
  bridge: HostBridge | null;
  threadId: number;
  /** Told when a call enters plugin initialisation and leaves it, so a timeout there can be told apart. */
  onPhase?: (callId: number, phase: 'init' | 'call') => void;
}

const MAX_SPECS = 4096;

export class Runner {
  #specs = new Map<string, PluginSpec>();
  #instances = new Map<string, PluginInstance>();
  #opts: RunnerOptions;

  constructor(opts: RunnerOptions) {
    this.#opts = opts;
  }

  remember(spec: PluginSpec): void {
    this.#specs.delete(spec.key);
    this.#specs.set(spec.key, spec);
    if (this.#specs.size > MAX_SPECS) {
      const oldest = this.#specs.keys().next().value as string;
      this.#specs.delete(oldest);
      this.#instances.delete(oldest);
    }
  }

  /** Runs one call of a plugin whose spec this thread holds (runBatch checks that first). */
  #runCall(key: string, spec: PluginSpec, call: CallSpec): CallResult {
    let instance = this.#instances.get(key);
    let instantiated = false;
    if (instance) {
      // Map order is our LRU order.
      this.#instances.delete(key);
      this.#instances.set(key, instance);
    } else {
      const created = this.#create(spec, call.callId);
      if ('error' in created) {
        return { type: 'error', error: created.error, logs: [], stats: { busyMicros: 0, hostCalls: 0, brokerMicros: 0, localHostMicros: 0, memoryBytes: 0, instantiated: true, threadId: this.#opts.threadId } };
      }
      instance = created.instance;
      instantiated = true;
    }
    const result = instance.run(call);
    // A trapped instance is thrown away; the next call gets a fresh one from the cached module.
    if (instance.poisoned) this.#instances.delete(key);
    result.stats.instantiated = instantiated;
    result.stats.threadId = this.#opts.threadId;
    return result;
  }

  /**
   * Runs a batch of calls of one plugin in order, writing each result into the shared buffer as
   * it ends. Stops early (the rest are re-queued by the main side) when a result does not fit.
   */
  runBatch(task: BatchTask): BatchResult {
    if (task.spec) this.remember(task.spec);
    const spec = this.#specs.get(task.key);
    if (!spec) return { type: 'missing', key: task.key };
    const calls = readBatchRequests(task.requests, task.count);
    const out = new BatchWriter(task.results);
    for (let i = 0; i < calls.length; i++) {
      const call = calls[i];
      call.deadline = out.start(i) + call.timeoutMs;
      const result = this.#runCall(task.key, spec, call);
      if (!out.write(result)) return { type: 'batch-done', count: i, overflow: result };
    }
    return { type: 'batch-done', count: calls.length };
  }

  /** Instantiates the given plugins ahead of need (a fresh worker replacing a dead one). */
  warm(specs: PluginSpec[]): number {
    let count = 0;
    for (const spec of specs) {
      this.remember(spec);
      if (this.#instances.has(spec.key)) continue;
      if ('instance' in this.#create(spec, 0)) count++;
    }
    return count;
  }

  #create(spec: PluginSpec, callId: number): { instance: PluginInstance } | { error: WireError } {
    for (let attempt = 0; ; attempt++) {
      while (this.#instances.size >= this.#opts.maxInstances) this.#evictOldest();
      this.#opts.onPhase?.(callId, 'init');
      try {
        const instance = PluginInstance.create(spec, this.#opts.bridge);
        this.#instances.set(spec.key, instance);
        return { instance };
      } catch (err) {
        if (err instanceof GuestFault) {
          if (err.code === 'PADDOCK_INSTANCE_LIMIT' && attempt === 0 && this.#instances.size > 0) {
            // Free every idle instance's reservation and try once more before refusing.
            while (this.#instances.size > 0) this.#evictOldest();
            continue;
          }
          return { error: { code: err.code, message: err.message, reason: err.reason } };
        }
        return { error: { code: 'PADDOCK_INTERNAL', message: err instanceof Error ? err.message : String(err) } };
      } finally {
        this.#opts.onPhase?.(callId, 'call');
      }
    }
  }

  #evictOldest(): void {
    const oldest = this.#instances.keys().next().value;
    if (oldest === undefined) return;
    this.#instances.delete(oldest);
  }
}

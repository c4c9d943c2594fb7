// Per-tenant admission in front of the shared pool. Each tenant has its own token bucket
// (calls per second, burst) and its own p-queue (maxConcurrent running, maxQueued waiting). A
// tenant never holds more than maxConcurrent calls in the shared pool's queue, so one tenant's
// flood waits in its own queue (or is refused with 429) while other tenants' calls go through.

import PQueue from 'p-queue';
import { PaddockError } from '../errors.js';
import { TokenBucketLimiter } from '../policy/limiter.js';

export interface TenantQuotas {
  callsPerSecond: number;
  burst: number;
  maxConcurrent: number;
  maxQueued: number;
}

interface Gate {
  quotas: TenantQuotas;
  queue: PQueue;
  bucket: TokenBucketLimiter;
}

export class TenantScheduler {
  #gates = new Map<string, Gate>();

  configure(tenant: string, quotas: TenantQuotas): void {
    const existing = this.#gates.get(tenant);
    if (existing) {
      existing.quotas = quotas;
      existing.queue.concurrency = quotas.maxConcurrent;
      existing.bucket = new TokenBucketLimiter({ perSecond: quotas.callsPerSecond, burst: quotas.burst }, 1);
      return;
    }
    this.#gates.set(tenant, {
      quotas,
      queue: new PQueue({ concurrency: quotas.maxConcurrent }),
      bucket: new TokenBucketLimiter({ perSecond: quotas.callsPerSecond, burst: quotas.burst }, 1),
    });
  }

  remove(tenant: string): void {
    this.#gates.get(tenant)?.queue.clear();
    this.#gates.delete(tenant);
  }

  stats(tenant: string): { running: number; queued: number } {
    const g = this.#gates.get(tenant);
    return { running: g?.queue.pending ?? 0, queued: g?.queue.size ?? 0 };
  }

  /** Runs `work` under the tenant's quotas, or refuses at once with 429 codes (and a Retry-After). */
  run<T>(tenant: string, work: () => Promise<T>): Promise<T> {
    const g = this.#gates.get(tenant);
    if (!g) return Promise.reject(new PaddockError('PADDOCK_NOT_FOUND', `no tenant "${tenant}"`));
    if (g.queue.size >= g.quotas.maxQueued) {
      return Promise.reject(new PaddockError('PADDOCK_QUEUE_FULL', `tenant has ${g.queue.size} calls queued (max ${g.quotas.maxQueued})`, { details: { retryAfter: 1 } }));
    }
    if (!g.bucket.take(tenant)) {
      const retryAfter = Math.max(1, g.bucket.retryAfter(tenant));
      return Promise.reject(new PaddockError('PADDOCK_RATE_LIMITED', `over ${g.quotas.callsPerSecond} calls/s`, { details: { retryAfter } }));
    }
    return g.queue.add(work) as Promise<T>;
  }

  /** Resolves when every tenant's queue is empty and idle. */
  async drain(): Promise<void> {
    await Promise.all([...this.#gates.values()].map((g) => g.queue.onIdle()));
  }
}

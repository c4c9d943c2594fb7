// Per-plugin circuit breaker. Violations (denied host calls, timeouts, memory-limit stops,
// traps, worker kills) are counted in a sliding window; `threshold` of them opens the
// breaker (PADDOCK_QUARANTINED). After `cooldownMs` it lets exactly one probe call through
// (half-open): a probe without violation closes it, a violation opens it again.

export interface QuarantineOptions {
  threshold: number;
  windowMs: number;
  cooldownMs: number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface QuarantineStatus {
  state: BreakerState;
  violations: number;
  /** When an open breaker lets a probe through (ISO time), null otherwise. */
  until: string | null;
}

interface Entry {
  times: number[];
  state: BreakerState;
  openedAt: number;
  probing: boolean;
}

export type Admission = { ok: true; probe: boolean } | { ok: false; retryAfterMs: number };

export class Quarantine {
  #opts: QuarantineOptions;
  #entries = new Map<string, Entry>();
  #now: () => number;

  constructor(opts: QuarantineOptions, now: () => number = Date.now) {
    this.#opts = opts;
    this.#now = now;
  }

  #entry(key: string): Entry {
    let e = this.#entries.get(key);
    if (!e) {
      e = { times: [], state: 'closed', openedAt: 0, probing: false };
      this.#entries.set(key, e);
    }
    return e;
  }

  admit(key: string): Admission {
    const e = this.#entries.get(key);
    if (!e || e.state === 'closed') return { ok: true, probe: false };
    const now = this.#now();
    if (e.state === 'open') {
      const wait = e.openedAt + this.#opts.cooldownMs - now;
      if (wait > 0) return { ok: false, retryAfterMs: wait };
      e.state = 'half-open';
      e.probing = false;
    }
    // half-open: one probe at a time
    if (e.probing) return { ok: false, retryAfterMs: Math.min(1000, this.#opts.cooldownMs) };
    e.probing = true;
    return { ok: true, probe: true };
  }

  /** Records a violation; returns true when this one opened the breaker. */
  violation(key: string): boolean {
    const e = this.#entry(key);
    const now = this.#now();
    if (e.state === 'half-open') {
      e.state = 'open';
      e.openedAt = now;
      e.probing = false;
      return true;
    }
    e.times.push(now);
    while (e.times.length > 0 && e.times[0] <= now - this.#opts.windowMs) e.times.shift();
    if (e.times.length > this.#opts.threshold) e.times.splice(0, e.times.length - this.#opts.threshold);
    if (e.state === 'closed' && e.times.length >= this.#opts.threshold) {
      e.state = 'open';
      e.openedAt = now;
      return true;
    }
    return false;
  }

  /** A call finished; a probe that finished without violation closes the breaker. */
  finished(key: string, probe: boolean, violated: boolean): boolean {
    const e = this.#entries.get(key);
    if (!e || !probe) return false;
    e.probing = false;
    if (!violated && e.state === 'half-open') {
      this.#entries.delete(key);
      return true;
    }
    return false;
  }

  status(key: string): QuarantineStatus {
    const e = this.#entries.get(key);
    if (!e) return { state: 'closed', violations: 0, until: null };
    const now = this.#now();
    const violations = e.times.filter((t) => t > now - this.#opts.windowMs).length;
    const until = e.state === 'open' ? new Date(e.openedAt + this.#opts.cooldownMs).toISOString() : null;
    return { state: e.state, violations, until };
  }

  /** Operator override: close the breaker now. */
  release(key: string): void {
    this.#entries.delete(key);
  }

  /** The persistent part of an open breaker (for a durable store), or null when closed. */
  snapshot(key: string): { state: BreakerState; openedAt: number } | null {
    const e = this.#entries.get(key);
    return e && e.state !== 'closed' ? { state: e.state, openedAt: e.openedAt } : null;
  }

  restore(key: string, snap: { state: BreakerState; openedAt: number }): void {
    // A probe that was in flight when the process died is over: resume as open.
    this.#entries.set(key, { times: [], state: 'open', openedAt: snap.openedAt, probing: false });
  }

  forget(key: string): void {
    this.#entries.delete(key);
  }
}

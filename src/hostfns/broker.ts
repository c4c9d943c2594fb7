// The policy broker: every host call a plugin makes (from inside its worker) is answered here,
// on the main thread, in this order: rate limit (per tenant and host function) → capability
// check against the effective grant → handler. A refusal is a violation: it is reported (the
// executor turns it into a diagnostic and a quarantine strike) and answered with the action the
// operator's policy chose: return an error the guest can see, fail the call, or kill the worker.

import { PaddockError } from '../errors.js';
import type { Capabilities } from '../policy/manifest.js';
import type { RateLimiter } from '../policy/limiter.js';
import { anyTopicMatches } from '../policy/topics.js';
import type { HostCallRequest, HttpRequestPayload, ViolationAction } from '../pool/protocol.js';
import type { KvStore } from '../store/kv.js';
import type { FsAccess } from './fs.js';
import { httpRequest } from './http.js';

export type ViolationPolicy = 'record' | 'fail' | 'kill';

/** What the broker knows about the call a host call belongs to. */
export interface CallContext {
  tenant: string;
  plugin: string;
  effective: Capabilities;
  deadline: number;
  /** 0 for a call from outside; n for a call caused by an intent emitted at depth n-1. */
  depth: number;
  kvQuotaBytes: number;
  fs: FsAccess | null;
  /** Intents emitted during the call; dispatched only if the call succeeds. */
  emitted: Array<{ topic: string; payload: Uint8Array }>;
  /** A refusal during this call was already counted as a violation (one strike per call). */
  violated: boolean;
  /** Set when a violation was ruled fatal (strict mode): why the worker is going away. */
  killedFor?: PaddockError;
}

export interface BrokerOptions {
  kv: KvStore;
  limiter: RateLimiter;
  policy: ViolationPolicy;
  maxIntentDepth: number;
  maxListEntries: number;
  http: { maxResponseBytes: number; timeoutMs: number };
  /** Called for every refusal that counts as a violation. */
  onViolation(ctx: CallContext, capability: string, reason: string, error: PaddockError): void;
}

const ACTIONS: Record<ViolationPolicy, ViolationAction> = { record: 'return', fail: 'fail', kill: 'kill' };
const strict = new TextDecoder('utf-8', { fatal: true });

type Blocks = Array<Uint8Array | null>;

function text(block: Uint8Array | null | undefined, what: string): string {
  if (!block) throw new PaddockError('PADDOCK_BAD_REQUEST', `${what} is missing`);
  try {
    return strict.decode(block);
  } catch {
    throw new PaddockError('PADDOCK_BAD_REQUEST', `${what} is not valid UTF-8`);
  }
}

function tag<E extends PaddockError>(err: E, reason: string, action: ViolationAction): E {
  Object.assign(err, { reason, action });
  return err;
}

export class Broker {
  #o: BrokerOptions;

  constructor(options: BrokerOptions) {
    this.#o = options;
  }

  #refuse(ctx: CallContext, capability: string, reason: string, error: PaddockError): never {
    ctx.violated = true;
    this.#o.onViolation(ctx, capability, reason, error);
    const action = ACTIONS[this.#o.policy];
    if (action === 'kill') ctx.killedFor = error;
    throw tag(error, reason, action);
  }

  #deny(ctx: CallContext, capability: string, reason: string, message: string): never {
    return this.#refuse(ctx, capability, reason, new PaddockError('PADDOCK_CAPABILITY_DENIED', message));
  }

  async handle(req: HostCallRequest, ctx: CallContext): Promise<unknown> {
    const capability = req.fn.startsWith('kv_') ? 'kv' : req.fn.startsWith('fs_') ? 'fs' : req.fn === 'intent_emit' ? 'intents' : req.fn === 'clock_now' ? 'clock' : 'http';
    const allowed = await this.#o.limiter.take(`${ctx.tenant}\u0000${req.fn}`);
    if (!allowed) {
      this.#refuse(ctx, capability, 'host-rate-limit', new PaddockError('PADDOCK_RATE_LIMITED', `host function ${req.fn} is over its rate limit for tenant ${ctx.tenant}`));
    }
    try {
      return await this.#dispatch(req, ctx);
    } catch (err) {
      // Failures that are not violations (missing key, upstream error, quota) reach the guest as values.
      if (err instanceof PaddockError && (err as { action?: string }).action === undefined) tag(err, (err as { reason?: string }).reason ?? 'host-call', 'return');
      throw err;
    }
  }

  async #dispatch(req: HostCallRequest, ctx: CallContext): Promise<unknown> {
    const e = ctx.effective;
    const ns = `${ctx.tenant}/${ctx.plugin}`;
    const args = req.payload as Blocks;
    switch (req.fn) {
      case 'kv_get':
        if (!e.kv?.read) this.#deny(ctx, 'kv', 'kv-read-not-granted', 'kv read is not granted to this plugin');
        return this.#o.kv.get(ns, text(args[0], 'key'));
      case 'kv_list': {
        if (!e.kv?.read) this.#deny(ctx, 'kv', 'kv-read-not-granted', 'kv read is not granted to this plugin');
        return this.#o.kv.list(ns, args[0] ? text(args[0], 'prefix') : '', this.#o.maxListEntries);
      }
      case 'kv_set':
        if (!e.kv?.write) this.#deny(ctx, 'kv', 'kv-write-not-granted', 'kv write is not granted to this plugin');
        await this.#o.kv.set(ns, text(args[0], 'key'), args[1] ?? new Uint8Array(0), ctx.kvQuotaBytes);
        return 0;
      case 'kv_delete':
        if (!e.kv?.write) this.#deny(ctx, 'kv', 'kv-write-not-granted', 'kv write is not granted to this plugin');
        return (await this.#o.kv.delete(ns, text(args[0], 'key'))) ? 1 : 0;
      case 'intent_emit': {
        const topic = text(args[0], 'topic');
        if (!e.intents || !anyTopicMatches(e.intents.emit, topic)) {
          this.#deny(ctx, 'intents', 'intent-topic-not-granted', `emitting to "${topic}" is not granted to this plugin`);
        }
        if (ctx.depth + 1 > this.#o.maxIntentDepth) {
          this.#deny(ctx, 'intents', 'intent-depth', `intent chain deeper than ${this.#o.maxIntentDepth}`);
        }
        ctx.emitted.push({ topic, payload: args[1] ?? new Uint8Array(0) });
        return 0;
      }
      case 'clock_now':
        if (!e.clock) this.#deny(ctx, 'clock', 'clock-not-granted', 'the clock is not granted to this plugin');
        // Millisecond resolution only: a plugin needs the time, not a timer for side channels.
        return Date.now();
      case 'fs_read':
      case 'fs_write':
      case 'fs_list': {
        if (!ctx.fs) this.#deny(ctx, 'fs', 'fs-not-granted', 'the filesystem is not granted to this plugin');
        const path = text(args[0], 'path');
        try {
          if (req.fn === 'fs_read') return await ctx.fs.read(path);
          if (req.fn === 'fs_list') return await ctx.fs.list(path);
          await ctx.fs.write(path, args[1] ?? new Uint8Array(0));
          return 0;
        } catch (err) {
          if (err instanceof PaddockError && err.code === 'PADDOCK_CAPABILITY_DENIED') {
            this.#refuse(ctx, 'fs', (err as { reason?: string }).reason ?? 'fs-denied', err);
          }
          throw err;
        }
      }
      case 'http_request': {
        if (!e.http) this.#deny(ctx, 'http', 'http-not-granted', 'http is not granted to this plugin');
        try {
          return await httpRequest(
            req.payload as HttpRequestPayload,
            {
              hosts: e.http.hosts,
              methods: e.http.methods,
              maxResponseBytes: Math.min(e.http.maxResponseBytes ?? this.#o.http.maxResponseBytes, this.#o.http.maxResponseBytes),
              timeoutMs: Math.min(e.http.timeoutMs ?? this.#o.http.timeoutMs, this.#o.http.timeoutMs),
            },
            ctx.deadline,
          );
        } catch (err) {
          if (err instanceof PaddockError && err.code === 'PADDOCK_CAPABILITY_DENIED') {
            this.#refuse(ctx, 'http', (err as { reason?: string }).reason ?? 'http-not-allowed', err);
          }
          throw err;
        }
      }
      default:
        throw new PaddockError('PADDOCK_BAD_REQUEST', `unknown host function ${String(req.fn)}`);
    }
  }
}

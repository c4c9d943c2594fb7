// Plugin key-value storage. Namespaces are "<tenant>/<plugin>": a plugin sees only its own
// keys, and a tenant's plugins never see another tenant's. Quotas count key + value bytes.

import { PaddockError } from '../errors.js';

export interface KvStore {
  get(ns: string, key: string): Promise<Uint8Array | null>;
  /** Writes unless the namespace would exceed `quotaBytes`; throws PADDOCK_QUOTA_EXCEEDED. */
  set(ns: string, key: string, value: Uint8Array, quotaBytes: number): Promise<void>;
  delete(ns: string, key: string): Promise<boolean>;
  list(ns: string, prefix: string, limit: number): Promise<string[]>;
  usage(ns: string): Promise<number>;
  /** Drops a whole namespace (plugin removed). */
  clear(ns: string): Promise<void>;
  close(): Promise<void>;
}

export const MAX_KEY_BYTES = 1024;

export function validateKey(key: string): void {
  if (key.length === 0 || Buffer.byteLength(key) > MAX_KEY_BYTES) {
    throw new PaddockError('PADDOCK_BAD_REQUEST', `KV keys are 1 to ${MAX_KEY_BYTES} bytes`);
  }
}

export function quotaError(needed: number, quota: number): PaddockError {
  const err = new PaddockError('PADDOCK_QUOTA_EXCEEDED', `KV write needs ${needed} bytes; the quota is ${quota}`);
  (err as PaddockError & { reason: string }).reason = 'kv-quota';
  return err;
}

export class MemoryKvStore implements KvStore {
  #data = new Map<string, Map<string, Uint8Array>>();
  #usage = new Map<string, number>();

  async get(ns: string, key: string): Promise<Uint8Array | null> {
    return this.#data.get(ns)?.get(key) ?? null;
  }

  async set(ns: string, key: string, value: Uint8Array, quotaBytes: number): Promise<void> {
    validateKey(key);
    let space = this.#data.get(ns);
    const old = space?.get(key);
    const keyBytes = Buffer.byteLength(key);
    const next = (this.#usage.get(ns) ?? 0) - (old ? old.byteLength + keyBytes : 0) + value.byteLength + keyBytes;
    if (next > quotaBytes) throw quotaError(next, quotaBytes);
    if (!space) {
      space = new Map();
      this.#data.set(ns, space);
    }
    space.set(key, value.slice());
    this.#usage.set(ns, next);
  }

  async delete(ns: string, key: string): Promise<boolean> {
    const space = this.#data.get(ns);
    const old = space?.get(key);
    if (!space || !old) return false;
    space.delete(key);
    this.#usage.set(ns, (this.#usage.get(ns) ?? 0) - old.byteLength - Buffer.byteLength(key));
    return true;
  }

  async list(ns: string, prefix: string, limit: number): Promise<string[]> {
    const out: string[] = [];
    for (const key of [...(this.#data.get(ns)?.keys() ?? [])].sort()) {
      if (!key.startsWith(prefix)) continue;
      out.push(key);
      if (out.length >= limit) break;
    }
    return out;
  }

  async usage(ns: string): Promise<number> {
    return this.#usage.get(ns) ?? 0;
  }

  async clear(ns: string): Promise<void> {
    this.#data.delete(ns);
    this.#usage.delete(ns);
  }

  async close(): Promise<void> {}
}

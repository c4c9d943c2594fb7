// Extism's "kernel memory": the host-side byte blocks a plugin reaches through
// alloc/load/store/length. Guests treat addresses as opaque i64 handles plus offsets, so any
// linear scheme works; we use one arena per instance, bump-allocated and reset at the start
// of every call (Extism semantics: blocks do not outlive a call; vars live elsewhere).
//
// Every address and length comes from the guest and is hostile: each access is bounds-checked
// against the live region, and failures throw a GuestFault (turned into a trap for this call
// only) — never an exception that could take the worker down.

import type { WorkerErrorCode } from '../protocol.js';

export class GuestFault extends Error {
  constructor(readonly code: WorkerErrorCode, message: string, readonly reason: string) {
    super(message);
  }
}

/** A host call the broker refused or failed, to be returned to the guest as an error value. */
export class HostRefusal extends Error {
  constructor(readonly code: WorkerErrorCode, message: string, readonly reason: string) {
    super(message);
  }
}

/** Lowest valid address: 0 means "no block" in the Extism ABI. */
const BASE = 8;
const MAX_ADDRESS = 2 ** 48;
const MAX_ADDRESS_BIG = BigInt(MAX_ADDRESS);

export class KernelMemory {
  #bytes: Uint8Array;
  #view: DataView;
  #top = BASE;
  /** Block start → length. Blocks are never resized, so a start identifies a block. */
  #lengths = new Map<number, number>();
  readonly maxBytes: number;

  constructor(maxBytes: number, initialBytes = 64 * 1024) {
    this.maxBytes = maxBytes;
    this.#bytes = new Uint8Array(Math.min(initialBytes, maxBytes));
    this.#view = new DataView(this.#bytes.buffer);
  }

  reset(): void {
    this.#top = BASE;
    this.#lengths.clear();
  }

  /** Bytes handed out in the current call. */
  get used(): number {
    return this.#top - BASE;
  }

  alloc(size: number, zero = true): number {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new GuestFault('PADDOCK_TRAP', `alloc: invalid size ${size}`, 'invalid-host-call-argument');
    }
    const start = this.#top;
    // 8-byte alignment keeps load_u64/store_u64 on natural boundaries.
    const end = start + Math.max(size, 1);
    const next = (end + 7) & ~7;
    if (next > this.maxBytes || end > this.maxBytes) {
      throw new GuestFault('PADDOCK_MEMORY_LIMIT', `kernel memory limit reached: ${size} bytes requested, ${this.maxBytes - this.#top} available`, 'kernel-memory');
    }
    if (next > this.#bytes.byteLength) this.#grow(next);
    // The arena is reused across calls; a new block must not reveal a previous call's bytes.
    if (zero) this.#bytes.fill(0, start, end);
    this.#top = next;
    this.#lengths.set(start, size);
    return start;
  }

  #grow(needed: number): void {
    let size = this.#bytes.byteLength * 2;
    while (size < needed) size *= 2;
    const grown = new Uint8Array(Math.min(size, this.maxBytes));
    grown.set(this.#bytes.subarray(0, this.#top));
    this.#bytes = grown;
    this.#view = new DataView(grown.buffer);
  }

  free(addr: number): void {
    const len = this.#lengths.get(addr);
    if (len === undefined) return;
    this.#lengths.delete(addr);
    // Reclaim only the topmost block; the arena is reset per call anyway.
    if (((addr + Math.max(len, 1) + 7) & ~7) === this.#top) this.#top = addr;
  }

  /** Length of the block starting at addr, 0 if there is none (Extism's `length`). */
  length(addr: number): number {
    return this.#lengths.get(addr) ?? 0;
  }

  #check(addr: number, width: number): number {
    if (addr < BASE || addr + width > this.#top) {
      throw new GuestFault('PADDOCK_TRAP', `kernel memory access out of bounds at 0x${addr.toString(16)}`, 'invalid-host-call-argument');
    }
    return addr;
  }

  loadU8(addr: number): number {
    return this.#bytes[this.#check(addr, 1)];
  }

  loadU64(addr: number): bigint {
    return this.#view.getBigUint64(this.#check(addr, 8), true);
  }

  storeU8(addr: number, value: number): void {
    this.#bytes[this.#check(addr, 1)] = value;
  }

  storeU64(addr: number, value: bigint): void {
    this.#view.setBigUint64(this.#check(addr, 8), value, true);
  }

  /** A view (not a copy) of a whole block, or of its first `len` bytes. */
  block(addr: number, len?: number): Uint8Array {
    const blockLen = this.#lengths.get(addr);
    if (blockLen === undefined) {
      throw new GuestFault('PADDOCK_TRAP', `no block at 0x${addr.toString(16)}`, 'invalid-host-call-argument');
    }
    const n = len ?? blockLen;
    if (n > blockLen) {
      throw new GuestFault('PADDOCK_TRAP', `length ${n} exceeds block length ${blockLen}`, 'invalid-host-call-argument');
    }
    return this.#bytes.subarray(addr, addr + n);
  }

  /** Copies bytes into a fresh block and returns its address. */
  store(bytes: Uint8Array): number {
    // Every byte is overwritten right away: no need to clear first.
    const addr = this.alloc(bytes.byteLength, false);
    this.#bytes.set(bytes, addr);
    return addr;
  }
}

/** Converts a guest i64 (BigInt) into a safe address number; hostile values become a fault. */
export function toAddress(value: bigint | number): number {
  const n = typeof value === 'bigint' ? (value >= 0n && value < MAX_ADDRESS_BIG ? Number(value) : -1) : value;
  if (!Number.isSafeInteger(n) || n < 0 || n >= MAX_ADDRESS) {
    throw new GuestFault('PADDOCK_TRAP', `invalid address ${String(value)}`, 'invalid-host-call-argument');
  }
  return n;
}

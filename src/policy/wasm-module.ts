// A deliberately small WebAssembly binary reader. V8 offers no knob to bound a module's own
// linear memory or tables, so Paddock reads the untrusted bytes itself and rewrites the declared
// limits before handing them to WebAssembly.Module. Everything here assumes hostile input: every
// read is bounds-checked against the enclosing section, every count is checked against the bytes
// that are left before it drives a loop, and the only thing ever thrown is a PaddockError.
//
// Only the sections whose layout matters for limits and for policy (import, table, memory, export,
// start, custom names) are decoded; the rest are skipped by size and left for V8 to validate.

import { PaddockError } from '../errors.js';

export type ExternKind = 'function' | 'table' | 'memory' | 'global' | 'tag';
export interface WasmImport { module: string; name: string; kind: ExternKind }
export interface WasmExport { name: string; kind: ExternKind }
/** For tables, `memory64` means a 64-bit index (table64). `shared`/`memory64` are only present when true. */
export interface LimitsInfo { min: number; max: number | null; imported: boolean; shared?: boolean; memory64?: boolean }
export interface ModuleInfo {
  imports: WasmImport[]; exports: WasmExport[];
  memories: LimitsInfo[]; tables: LimitsInfo[];
  hasStart: boolean;            // a start section exists
  customSections: string[];     // names, in order
  byteLength: number;
}
export interface WasmCaps { maxMemoryPages: number; maxTableElements: number }

const KINDS: readonly ExternKind[] = ['function', 'table', 'memory', 'global', 'tag'];

const SECTION_NAMES: readonly string[] = [
  'custom', 'type', 'import', 'function', 'table', 'memory', 'global',
  'export', 'start', 'element', 'code', 'data', 'datacount', 'tag',
];
// Position each known section must take, indexed by section id. The ids are not in order:
// tag (13) sits between memory and global, datacount (12) between element and code.
const SECTION_RANK: readonly number[] = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 11, 6];

// The binary format caps a 32-bit memory at 2^16 pages (4 GiB).
const MAX_PAGES_32 = 65536;

const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

// ignoreBOM keeps a leading U+FEFF in the decoded name, as V8 does; stripping it would let a
// module import "\uFEFFname" while we report (and vet) plain "name".
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function invalid(message: string, offset: number): never {
  throw new PaddockError('PADDOCK_INVALID_WASM', `invalid wasm: ${message} at byte ${offset}`);
}

const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;

/** A cursor confined to [pos, end): running off the end is always a truncation error, never a read of the next section. */
class Reader {
  pos: number;

  constructor(private readonly buf: Uint8Array, start: number, readonly end: number, readonly where: string) {
    this.pos = start;
  }

  get remaining(): number { return this.end - this.pos; }

  u8(what: string): number {
    if (this.pos >= this.end) invalid(`truncated ${what} in ${this.where}`, this.pos);
    return this.buf[this.pos++];
  }

  peek(): number | undefined {
    return this.pos < this.end ? this.buf[this.pos] : undefined;
  }

  /**
   * Unsigned LEB128 of at most `bits` bits. The spec bounds the byte count and requires the unused
   * high bits of the last byte to be zero; enforcing both keeps us byte-for-byte in step with V8.
   * Results above 2^53 lose precision, which only matters for memory64 limits we report and refuse.
   */
  private uleb(what: string, bits: number): number {
    const start = this.pos;
    const maxBytes = Math.ceil(bits / 7);
    let value = 0;
    for (let i = 0; i < maxBytes; i++) {
      const b = this.u8(what);
      if (i === maxBytes - 1 && (b & 0x80 || b >> (bits - 7 * i))) {
        invalid(`${what} in ${this.where} overflows a u${bits} LEB128`, start);
      }
      value += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) return value;
    }
    return invalid(`${what} in ${this.where} overflows a u${bits} LEB128`, start);
  }

  u32(what: string): number { return this.uleb(what, 32); }
  u64(what: string): number { return this.uleb(what, 64); }

  /** Signed 33-bit LEB128 (heap type); only its length matters to us. */
  s33(what: string): void {
    const start = this.pos;
    for (let i = 0; i < 5; i++) {
      const b = this.u8(what);
      if (i === 4) {
        // Bits above bit 32 must repeat the sign bit, and there can be no sixth byte.
        const high = b & 0x70;
        if (b & 0x80 || (high !== 0 && high !== 0x70)) invalid(`${what} in ${this.where} overflows an s33 LEB128`, start);
      }
      if ((b & 0x80) === 0) return;
    }
  }

  /** A vector length; each element takes at least one byte, so a count beyond the remaining bytes is a lie. */
  count(what: string): number {
    const start = this.pos;
    const n = this.u32(`${what} count`);
    if (n > this.remaining) invalid(`${what} count ${n} exceeds the ${this.remaining} bytes left in ${this.where}`, start);
    return n;
  }

  name(what: string): string {
    const start = this.pos;
    const len = this.u32(`${what} length`);
    if (len > this.remaining) invalid(`${what} length ${len} runs past the end of ${this.where}`, start);
    const bytes = this.buf.subarray(this.pos, this.pos + len);
    let s: string;
    try {
      s = utf8.decode(bytes);
    } catch {
      return invalid(`${what} is not valid UTF-8`, start);
    }
    this.pos += len;
    return s;
  }

  refType(what: string): void {
    const at = this.pos;
    const b = this.u8(what);
    if (b === 0x63 || b === 0x64) return this.s33(`${what} heap type`); // (ref null? ht)
    if (b < 0x69 || b > 0x74) invalid(`unknown reference type ${hex(b)} in ${what}`, at); // abstract heap-type shorthands
  }

  valType(what: string): void {
    const b = this.peek();
    if (b !== undefined && b >= 0x7b && b <= 0x7f) { this.pos++; return; } // i32 i64 f32 f64 v128
    this.refType(what);
  }

  limits(kind: 'memory' | 'table', imported: boolean): Site {
    const start = this.pos;
    const flags = this.u8(`${kind} limits flags`);
    // bit 0: has max; bit 1: shared (memories only); bit 2: 64-bit index. Anything else (e.g.
    // custom page sizes) would change the layout or the meaning of the numbers, so it is refused.
    if (flags & ~(kind === 'memory' ? 0x07 : 0x05)) invalid(`unsupported ${kind} limits flags ${hex(flags)}`, start);
    const is64 = (flags & 0x04) !== 0;
    const minStart = this.pos;
    const min = is64 ? this.u64(`${kind} minimum`) : this.u32(`${kind} minimum`);
    const minEnd = this.pos;
    const max = flags & 0x01 ? (is64 ? this.u64(`${kind} maximum`) : this.u32(`${kind} maximum`)) : null;
    if (max !== null && max < min) invalid(`${kind} maximum ${max} is below its minimum ${min}`, start);
    const info: LimitsInfo = { min, max, imported };
    if (flags & 0x02) info.shared = true;
    if (is64) info.memory64 = true;
    return { kind, info, start, minStart, minEnd, end: this.pos };
  }
}

/** Where one memory or table's limits sit in the original bytes. */
interface Site {
  kind: 'memory' | 'table';
  info: LimitsInfo;
  start: number;
  minStart: number;
  minEnd: number;
  end: number;
  import?: { module: string; name: string };
}

interface Section { id: number; start: number; contentStart: number; end: number }

interface Parsed { info: ModuleInfo; sections: Section[]; sites: Site[] }

function parse(bytes: Uint8Array): Parsed {
  if (!(bytes instanceof Uint8Array)) invalid('expected a Uint8Array', 0);
  if (bytes.length < HEADER.length) invalid(`module header truncated (${bytes.length} of ${HEADER.length} bytes)`, bytes.length);
  for (let i = 0; i < 4; i++) if (bytes[i] !== HEADER[i]) invalid('bad magic number (not a wasm module)', i);
  for (let i = 4; i < 8; i++) if (bytes[i] !== HEADER[i]) invalid('unsupported binary version (expected 1)', i);

  const info: ModuleInfo = {
    imports: [], exports: [], memories: [], tables: [],
    hasStart: false, customSections: [], byteLength: bytes.length,
  };
  const sections: Section[] = [];
  const sites: Site[] = [];
  const top = new Reader(bytes, HEADER.length, bytes.length, 'module');
  let lastRank = 0;

  while (top.remaining > 0) {
    const start = top.pos;
    const id = top.u8('section id');
    if (id >= SECTION_NAMES.length) invalid(`unknown section id ${id}`, start);
    const where = `${SECTION_NAMES[id]} section`;
    const size = top.u32(`${where} size`);
    if (size > top.remaining) invalid(`${where} size ${size} runs past the end of the module (${top.remaining} bytes left)`, start);
    if (id !== 0) {
      const rank = SECTION_RANK[id];
      if (rank === lastRank) invalid(`duplicate ${where}`, start);
      if (rank < lastRank) invalid(`${where} is out of order`, start);
      lastRank = rank;
    }
    const r = new Reader(bytes, top.pos, top.pos + size, where);
    sections.push({ id, start, contentStart: r.pos, end: r.end });

    switch (id) {
      case 0:
        info.customSections.push(r.name('custom section name'));
        r.pos = r.end; // payload is opaque
        break;
      case 2:
        readImports(r, info, sites);
        break;
      case 4:
        for (let n = r.count('table'); n > 0; n--) {
          // 0x40 0x00 introduces a table with an initialiser expression; skipping an expression
          // safely means decoding instructions, which this reader does not do.
          if (r.peek() === 0x40) invalid('table initialiser expressions are not supported', r.pos);
          r.refType('table element type');
          const site = r.limits('table', false);
          info.tables.push(site.info);
          sites.push(site);
        }
        break;
      case 5:
        for (let n = r.count('memory'); n > 0; n--) {
          const site = r.limits('memory', false);
          info.memories.push(site.info);
          sites.push(site);
        }
        break;
      case 7:
        for (let n = r.count('export'); n > 0; n--) {
          const name = r.name('export name');
          const at = r.pos;
          const kindByte = r.u8('export kind');
          const kind = KINDS[kindByte];
          if (kind === undefined) invalid(`unknown export kind ${hex(kindByte)}`, at);
          r.u32('export index');
          info.exports.push({ name, kind });
        }
        break;
      case 8:
        r.u32('start function index');
        info.hasStart = true;
        break;
      default:
        r.pos = r.end; // left to V8
    }
    if (r.pos !== r.end) invalid(`${where} has ${r.remaining} unexpected trailing bytes`, r.pos);
    top.pos = r.end;
  }
  return { info, sections, sites };
}

function readImports(r: Reader, info: ModuleInfo, sites: Site[]): void {
  for (let n = r.count('import'); n > 0; n--) {
    const module = r.name('import module name');
    const name = r.name('import name');
    const at = r.pos;
    const kindByte = r.u8('import kind');
    const kind = KINDS[kindByte];
    switch (kind) {
      case 'function':
        r.u32('import type index');
        break;
      case 'table': {
        r.refType('imported table element type');
        const site = r.limits('table', true);
        info.tables.push(site.info);
        sites.push({ ...site, import: { module, name } });
        break;
      }
      case 'memory': {
        const site = r.limits('memory', true);
        info.memories.push(site.info);
        sites.push({ ...site, import: { module, name } });
        break;
      }
      case 'global': {
        r.valType('imported global type');
        const mutAt = r.pos;
        if (r.u8('global mutability') > 1) invalid('global mutability must be 0 or 1', mutAt);
        break;
      }
      case 'tag': {
        const attrAt = r.pos;
        if (r.u8('tag attribute') !== 0) invalid('tag attribute must be 0 (exception)', attrAt);
        r.u32('tag type index');
        break;
      }
      default:
        invalid(`unknown import kind ${hex(kindByte)}`, at);
    }
    info.imports.push({ module, name, kind });
  }
}

export function inspectWasm(bytes: Uint8Array): ModuleInfo {
  return parse(bytes).info;
}

function uleb(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

function checkCaps(caps: WasmCaps): void {
  const ok = (v: unknown, hi: number): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= hi;
  if (!caps || !ok(caps.maxMemoryPages, MAX_PAGES_32) || !ok(caps.maxTableElements, 0xffffffff)) {
    throw new PaddockError('PADDOCK_BAD_REQUEST',
      `wasm caps must be integers: maxMemoryPages in 0..${MAX_PAGES_32}, maxTableElements in 0..${0xffffffff}`);
  }
}

/** New limit bytes for one site, or null when its declared maximum already fits under the cap. */
function cappedLimits(bytes: Uint8Array, site: Site, caps: WasmCaps, index: number): number[] | null {
  const { kind, info } = site;
  const label = `${kind} ${index}`;
  if (info.shared) invalid(`shared memory is not supported (${label})`, site.start);
  if (info.memory64) invalid(`${kind === 'memory' ? 'memory64' : 'table64'} is not supported (${label})`, site.start);
  if (site.import) {
    invalid(`imported ${kind} "${site.import.module}"."${site.import.name}" cannot be capped; imports of kind ${kind} are not supported`, site.start);
  }
  // Capping an over-sized declaration would turn an invalid module into a valid one.
  if (kind === 'memory' && (info.min > MAX_PAGES_32 || (info.max ?? 0) > MAX_PAGES_32)) {
    invalid(`${label} declares more than ${MAX_PAGES_32} pages`, site.start);
  }
  const cap = kind === 'memory' ? caps.maxMemoryPages : caps.maxTableElements;
  const unit = kind === 'memory' ? 'pages' : 'elements';
  if (info.min > cap) {
    throw new PaddockError('PADDOCK_MEMORY_LIMIT',
      `${label} needs ${info.min} ${unit} at start, above the limit of ${cap} ${unit}`,
      { details: { kind, index, min: info.min, cap } });
  }
  if (info.max !== null && info.max <= cap) return null;
  // flags 0x01 = has max; the original minimum bytes are kept as they were.
  return [0x01, ...bytes.subarray(site.minStart, site.minEnd), ...uleb(cap)];
}

/** Returns new bytes in which every defined memory has max = min(declared max ?? cap, cap) and every defined table likewise. */
export function capWasmLimits(bytes: Uint8Array, caps: WasmCaps): Uint8Array {
  checkCaps(caps);
  if (!(bytes instanceof Uint8Array)) invalid('expected a Uint8Array', 0);
  // Check and copy from one private snapshot: bytes over shared memory could otherwise change
  // between the parse that vetted them and the copy that is compiled.
  const src = bytes.slice();
  const { sections, sites } = parse(src);

  // Sites and sections are both in file order, so one forward pass pairs them (no N×M scan).
  const edits: { site: Site; limits: Uint8Array }[] = [];
  const counters = { memory: 0, table: 0 };
  for (const site of sites) {
    const replacement = cappedLimits(src, site, caps, counters[site.kind]++);
    if (replacement) edits.push({ site, limits: Uint8Array.from(replacement) });
  }
  if (edits.length === 0) return src;

  const parts: Uint8Array[] = [src.subarray(0, HEADER.length)];
  let next = 0;
  for (const sec of sections) {
    if (next >= edits.length || edits[next].site.start >= sec.end) {
      parts.push(src.subarray(sec.start, sec.end));
      continue;
    }
    const content: Uint8Array[] = [];
    let pos = sec.contentStart;
    for (; next < edits.length && edits[next].site.start < sec.end; next++) {
      const { site, limits } = edits[next];
      content.push(src.subarray(pos, site.start), limits);
      pos = site.end;
    }
    content.push(src.subarray(pos, sec.end));
    const size = content.reduce((n, c) => n + c.length, 0);
    parts.push(Uint8Array.of(sec.id, ...uleb(size)));
    for (const c of content) parts.push(c); // not push(...content): a hostile table count would overflow the argument list
  }

  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

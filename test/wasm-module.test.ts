import { describe, expect, it } from 'vitest';
import { PaddockError } from '../dist/errors.js';
import { capWasmLimits, inspectWasm, type ModuleInfo } from '../dist/policy/wasm-module.js';
import { fixture, watToWasm } from './helpers/wat.js';

const PAGE = 65536;
const CAPS = { maxMemoryPages: 64, maxTableElements: 10_000 };

const FIXTURES = [
  'echo', 'loop-forever', 'loop-in-init', 'init-loop-initialize', 'memory-bomb', 'huge-memory',
  'huge-table', 'deep-recursion', 'unreachable', 'div-zero', 'oob-read', 'huge-output',
  'bad-hostcall', 'start-side-effect', 'undeclared-import', 'var-bomb',
];

const compiled: Record<string, Uint8Array> = Object.fromEntries(
  await Promise.all(FIXTURES.map(async (name) => [name, await fixture(name)] as const)),
);
const inline = new Map<string, Uint8Array>();
for (const wat of [
  '(module (memory 1 2 shared))', '(module (memory i64 1))',
  '(module (import "m" "mem" (memory 1 2)))', '(module (import "m" "t" (table 1 funcref)))',
  '(module (import "m" "mem" (memory 1 4)) (table 3 funcref) (tag (param i32)))',
]) inline.set(wat, await watToWasm(wat));
/** Fixtures by name, plus `bin.wat(source)` for the inline modules compiled above. */
const bin = Object.assign(compiled, { wat: (source: string) => inline.get(source)! }) as Record<string, Uint8Array> & { wat(source: string): Uint8Array };

/** The PaddockError `fn` throws; fails the test if it returns or throws anything else. */
function thrown(fn: () => unknown): PaddockError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PaddockError);
    return err as PaddockError;
  }
  throw new Error('expected a PaddockError, but nothing was thrown');
}

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const utf8 = (s: string): number[] => [...new TextEncoder().encode(s)];
const uleb = (n: number): number[] => {
  const out: number[] = [];
  do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b); } while (n);
  return out;
};
const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];
const custom = (name: string, payload: number[] = []): number[] => section(0, [...uleb(utf8(name).length), ...utf8(name), ...payload]);
const module = (...sections: number[][]): Uint8Array => concat(HEADER, ...sections);

/** Section boundaries of a trusted module, found independently of the code under test. */
function sectionsOf(bytes: Uint8Array): { id: number; start: number; end: number }[] {
  const out = [];
  let pos = 8;
  while (pos < bytes.length) {
    const start = pos;
    const id = bytes[pos++];
    let size = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[pos++];
      size += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) break;
    }
    pos += size;
    out.push({ id, start, end: pos });
  }
  return out;
}

/** Just enough of the Extism host ABI (blocks addressed by index << 48) to run echo.wat in-thread. */
function stubHost(input: Uint8Array) {
  const blocks: Uint8Array[] = [new Uint8Array(0)];
  const result: { output?: Uint8Array; error?: string } = {};
  const block = (a: bigint) => blocks[Number(a >> 48n)];
  const off = (a: bigint) => Number(a & 0xffff_ffff_ffffn);
  const env = {
    alloc: (n: bigint) => BigInt(blocks.push(new Uint8Array(Number(n))) - 1) << 48n,
    store_u8: (a: bigint, v: number) => { block(a)[off(a)] = v; },
    store_u64: (a: bigint, v: bigint) => new DataView(block(a).buffer).setBigUint64(off(a), v, true),
    input_length: () => BigInt(input.length),
    input_load_u8: (o: bigint) => input[Number(o)],
    input_load_u64: (o: bigint) => new DataView(input.buffer, input.byteOffset).getBigUint64(Number(o), true),
    output_set: (a: bigint, n: bigint) => { result.output = block(a).slice(0, Number(n)); },
    error_set: (a: bigint) => { result.error = new TextDecoder().decode(block(a)); },
  };
  return { imports: { 'extism:host/env': env }, result };
}

function v8Shape(bytes: Uint8Array): Pick<ModuleInfo, 'imports' | 'exports'> {
  const mod = new WebAssembly.Module(bytes);
  return {
    imports: WebAssembly.Module.imports(mod).map(({ module, name, kind }) => ({ module, name, kind })),
    exports: WebAssembly.Module.exports(mod).map(({ name, kind }) => ({ name, kind })),
  };
}

describe('inspectWasm', () => {
  it('reports the Extism imports, exports and memory of echo', async () => {
    const info = inspectWasm(bin.echo);
    expect(info.imports.every((i) => i.module === 'extism:host/env' && i.kind === 'function')).toBe(true);
    expect(info.imports.map((i) => i.name)).toEqual([
      'alloc', 'store_u8', 'store_u64', 'input_length', 'input_load_u8', 'input_load_u64', 'output_set', 'error_set',
    ]);
    expect(info.exports).toEqual([
      { name: 'memory', kind: 'memory' },
      ...['echo', 'len', 'noop', 'fail', 'bump', 'set_global', 'get_global', 'bump_and_trap']
        .map((name) => ({ name, kind: 'function' })),
    ]);
    expect(info.memories).toEqual([{ min: 1, max: null, imported: false }]);
    expect(info.tables).toEqual([]);
    expect(info.hasStart).toBe(false);
  });

  it('agrees with V8 on the imports and exports of every fixture', async () => {
    for (const name of FIXTURES) {
      const bytes = bin[name];
      const info = inspectWasm(bytes);
      expect({ imports: info.imports, exports: info.exports }, name).toEqual(v8Shape(bytes));
      expect(info.byteLength, name).toBe(bytes.length);
    }
  });

  it('reports start sections, huge limits and foreign imports', async () => {
    expect(inspectWasm(bin['loop-in-init']).hasStart).toBe(true);
    expect(inspectWasm(bin['start-side-effect']).hasStart).toBe(true);
    expect(inspectWasm(bin['init-loop-initialize']).hasStart).toBe(false);
    expect(inspectWasm(bin['huge-memory']).memories).toEqual([{ min: 20000, max: null, imported: false }]);
    expect(inspectWasm(bin['huge-table']).tables).toEqual([{ min: 10_000_000, max: null, imported: false }]);
    expect(inspectWasm(bin['undeclared-import']).imports).toEqual([{ module: 'env', name: 'evil', kind: 'function' }]);
  });

  it('decodes every import kind, shared and 64-bit memories, and tags', async () => {
    const info = inspectWasm(await watToWasm(`(module
      (import "m" "f" (func (param i32)))
      (import "m" "tb" (table 1 2 funcref))
      (import "m" "mem" (memory 1 4))
      (import "m" "g" (global (mut i64)))
      (import "m" "t" (tag (param i32)))
      (memory 2 3 shared)
      (memory i64 5)
      (table 7 externref)
      (tag $e (param f64))
      (global $x i32 (i32.const 1))
      (export "e" (tag $e))
      (export "x" (global $x))
      (export "mem" (memory 0)))`));
    expect(info.imports).toEqual([
      { module: 'm', name: 'f', kind: 'function' },
      { module: 'm', name: 'tb', kind: 'table' },
      { module: 'm', name: 'mem', kind: 'memory' },
      { module: 'm', name: 'g', kind: 'global' },
      { module: 'm', name: 't', kind: 'tag' },
    ]);
    expect(info.exports).toEqual([
      { name: 'e', kind: 'tag' }, { name: 'x', kind: 'global' }, { name: 'mem', kind: 'memory' },
    ]);
    expect(info.memories).toEqual([
      { min: 1, max: 4, imported: true },
      { min: 2, max: 3, imported: false, shared: true },
      { min: 5, max: null, imported: false, memory64: true },
    ]);
    expect(info.tables).toEqual([{ min: 1, max: 2, imported: true }, { min: 7, max: null, imported: false }]);
  });

  it('decodes names exactly as V8 does, byte-order mark included', () => {
    const types = section(1, [1, 0x60, 0, 0]);
    const name = [0xef, 0xbb, 0xbf, ...utf8('alloc')];
    const bytes = module(types, section(2, [1, ...uleb(15), ...utf8('extism:host/env'), ...uleb(name.length), ...name, 0, 0]));
    expect(inspectWasm(bytes).imports).toEqual(v8Shape(bytes).imports);
    expect(inspectWasm(bytes).imports[0].name).toBe('\uFEFFalloc');
  });

  it('lists custom sections in order, wherever they appear', async () => {
    const base = bin.unreachable;
    const bytes = concat(base.subarray(0, 8), custom('first', [1, 2]), base.subarray(8), custom('paddock.meta', [9]));
    expect(inspectWasm(bytes).customSections).toEqual(['first', 'paddock.meta']);
    expect(WebAssembly.Module.customSections(new WebAssembly.Module(bytes), 'first')).toHaveLength(1);
  });
});

describe('capWasmLimits', () => {
  it('stops the memory bomb at exactly the cap', async () => {
    const capped = capWasmLimits(bin['memory-bomb'], { maxMemoryPages: 4, maxTableElements: 0 });
    expect(inspectWasm(capped).memories).toEqual([{ min: 1, max: 4, imported: false }]);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(capped), {});
    const { run, memory } = instance.exports as { run: () => number; memory: WebAssembly.Memory };
    expect(run).toThrow(WebAssembly.RuntimeError); // the `unreachable` after grow returned -1
    expect(memory.buffer.byteLength).toBe(4 * PAGE);
    const view = new Uint8Array(memory.buffer);
    expect([view[PAGE], view[2 * PAGE], view[3 * PAGE]]).toEqual([1, 1, 1]); // every page it got, it touched
    expect(memory.grow.bind(memory, 1)).toThrow(RangeError); // the cap binds the host side too
  });

  it('caps tables: table.grow fails past the cap', async () => {
    const bytes = await watToWasm(`(module
      (table $t 1 funcref)
      (func (export "grow") (param i32) (result i32) (table.grow $t (ref.null func) (local.get 0)))
      (func (export "size") (result i32) (table.size $t)))`);
    const capped = capWasmLimits(bytes, { maxMemoryPages: 1, maxTableElements: 10 });
    expect(inspectWasm(capped).tables).toEqual([{ min: 1, max: 10, imported: false }]);
    const { grow, size } = new WebAssembly.Instance(new WebAssembly.Module(capped)).exports as Record<string, (n?: number) => number>;
    expect(grow(9)).toBe(1);
    expect(grow(1)).toBe(-1);
    expect(size()).toBe(10);
  });

  it('keeps a smaller declared max, lowers a larger one, and leaves other sections byte-identical', async () => {
    const small = await watToWasm('(module (memory (export "m") 1 2))');
    expect(capWasmLimits(small, CAPS)).toEqual(small);
    expect(capWasmLimits(small, CAPS)).not.toBe(small); // always fresh bytes

    const echo = concat(bin.echo, custom('keep', [1, 2, 3]));
    const capped = capWasmLimits(echo, CAPS);
    expect(inspectWasm(capped).memories).toEqual([{ min: 1, max: 64, imported: false }]);
    const before = sectionsOf(echo);
    const after = sectionsOf(capped);
    expect(after.map((s) => s.id)).toEqual(before.map((s) => s.id));
    for (let i = 0; i < before.length; i++) {
      const a = echo.subarray(before[i].start, before[i].end);
      const b = capped.subarray(after[i].start, after[i].end);
      if (before[i].id === 5) expect(Array.from(b)).toEqual([5, 4, 1, 0x01, 1, 64]);
      else expect(b).toEqual(a);
    }

    const large = await watToWasm('(module (memory (export "m") 1 1000))');
    expect(inspectWasm(capWasmLimits(large, CAPS)).memories[0].max).toBe(64);
  });

  it('re-encodes a section whose size LEB128 grows past one byte', async () => {
    const tables = Array.from({ length: 40 }, (_, i) => `(table $t${i} 0 funcref)`).join(' ');
    const bytes = await watToWasm(`(module ${tables})`);
    const tableSection = sectionsOf(bytes).find((s) => s.id === 4)!;
    expect(bytes[tableSection.start + 1]).toBeLessThan(0x80); // one-byte size before
    const capped = capWasmLimits(bytes, { maxMemoryPages: 1, maxTableElements: 300 });
    expect(WebAssembly.validate(capped)).toBe(true);
    const info = inspectWasm(capped);
    expect(info.tables).toHaveLength(40);
    expect(info.tables.every((t) => t.min === 0 && t.max === 300)).toBe(true);
  });

  it('still runs the plugin the same way once capped', () => {
    const capped = capWasmLimits(bin.echo, CAPS);
    const instance = (input = new Uint8Array()) => {
      const host = stubHost(input);
      const exports = new WebAssembly.Instance(new WebAssembly.Module(capped), host.imports).exports as Record<string, () => number>;
      return { host, exports, call: (fn: string) => ({ rc: exports[fn](), ...host.result }) };
    };
    const u64 = (b: Uint8Array | undefined) => new DataView(b!.buffer).getBigUint64(0, true);

    expect(instance(new TextEncoder().encode('hello')).call('echo')).toEqual({ rc: 0, output: new TextEncoder().encode('hello') });
    expect(u64(instance(new Uint8Array(300)).call('len').output)).toBe(300n);
    expect(instance().call('noop')).toEqual({ rc: 0 });
    expect(instance().call('fail')).toEqual({ rc: 1, error: 'boom' });

    const counter = instance(Uint8Array.of(40, 0, 0, 0, 0, 0, 0, 0));
    counter.call('set_global');
    counter.call('bump');
    counter.call('bump');
    expect(u64(counter.call('get_global').output)).toBe(42n);
    expect(() => counter.exports.bump_and_trap()).toThrow(WebAssembly.RuntimeError);
    expect(u64(counter.call('get_global').output)).toBe(43n); // same instance: the bump before the trap stuck
  });

  it('stays linear, and within PaddockError, on 100k tables among 20k sections', () => {
    const n = 100_000; // more limits to rewrite than a call's argument list can hold
    const repeat = (unit: number[], times: number) => new Uint8Array(unit.length * times).map((_, i) => unit[i % unit.length]);
    const tableBytes = repeat([0x70, 0x00, 0x01], n); // funcref, min 1, no max
    const tables = concat([4], uleb(uleb(n).length + tableBytes.length), uleb(n), tableBytes);
    const customs = repeat(custom('c'), 10_000);
    const bytes = concat(HEADER, customs, tables, customs);
    const start = performance.now();
    const out = capWasmLimits(bytes, CAPS);
    expect(performance.now() - start).toBeLessThan(2000); // quadratic pairing would take minutes
    const info = inspectWasm(out);
    expect(info.tables).toHaveLength(n);
    expect(info.tables.every((t) => t.max === CAPS.maxTableElements)).toBe(true);
    expect(info.customSections).toHaveLength(20_000);
  });

  it('refuses memories and tables whose minimum is above the cap with PADDOCK_MEMORY_LIMIT', () => {
    const memory = thrown(() => capWasmLimits(bin['huge-memory'], { maxMemoryPages: 256, maxTableElements: 10 }));
    expect(memory.code).toBe('PADDOCK_MEMORY_LIMIT');
    expect(memory.message).toMatch(/20000 pages.*256 pages/);

    const table = thrown(() => capWasmLimits(bin['huge-table'], CAPS));
    expect(table.code).toBe('PADDOCK_MEMORY_LIMIT');
    expect(table.message).toMatch(/10000000 elements.*10000 elements/);

    // A minimum exactly at the cap is allowed and becomes the maximum too.
    const atCap = capWasmLimits(bin['huge-memory'], { maxMemoryPages: 20000, maxTableElements: 0 });
    expect(inspectWasm(atCap).memories).toEqual([{ min: 20000, max: 20000, imported: false }]);
  });

  it('refuses what it cannot cap with PADDOCK_INVALID_WASM', async () => {
    const cases: [string, RegExp][] = [
      ['(module (memory 1 2 shared))', /shared memory is not supported/],
      ['(module (memory i64 1))', /memory64 is not supported/],
      ['(module (import "m" "mem" (memory 1 2)))', /imported memory "m"\."mem" cannot be capped/],
      ['(module (import "m" "t" (table 1 funcref)))', /imported table "m"\."t" cannot be capped/],
    ];
    for (const [wat, message] of cases) {
      const err = thrown(() => capWasmLimits(bin.wat(wat), CAPS));
      expect(err.code, wat).toBe('PADDOCK_INVALID_WASM');
      expect(err.message, wat).toMatch(message);
    }
    // table64: flags 0x04, hand-encoded because wabt.js has no flag for it.
    const table64 = module(section(4, [1, 0x70, 0x04, 1]));
    expect(inspectWasm(table64).tables).toEqual([{ min: 1, max: null, imported: false, memory64: true }]);
    expect(thrown(() => capWasmLimits(table64, CAPS)).message).toMatch(/table64 is not supported/);
  });

  it('refuses nonsensical caps with PADDOCK_BAD_REQUEST', () => {
    for (const caps of [{ maxMemoryPages: -1, maxTableElements: 1 }, { maxMemoryPages: 1.5, maxTableElements: 1 },
      { maxMemoryPages: 65537, maxTableElements: 1 }, { maxMemoryPages: 1, maxTableElements: NaN }]) {
      expect(thrown(() => capWasmLimits(bin.echo, caps)).code).toBe('PADDOCK_BAD_REQUEST');
    }
  });

  it('produces modules that compile, for every fixture it accepts', () => {
    const accepted = FIXTURES.filter((name) => name !== 'huge-memory' && name !== 'huge-table');
    for (const name of accepted) {
      const out = capWasmLimits(bin[name], CAPS);
      expect(WebAssembly.validate(out), name).toBe(true);
      expect(v8Shape(out), name).toEqual(v8Shape(bin[name]));
      expect(inspectWasm(out).memories.every((m) => m.max !== null && m.max <= CAPS.maxMemoryPages), name).toBe(true);
    }
  });
});

describe('hostile bytes', () => {
  function invalid(bytes: Uint8Array | number[], message?: RegExp): PaddockError {
    const input = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
    const err = thrown(() => inspectWasm(input));
    expect(err.code).toBe('PADDOCK_INVALID_WASM');
    if (message) expect(err.message).toMatch(message);
    expect(thrown(() => capWasmLimits(input, CAPS)).code).toBe('PADDOCK_INVALID_WASM');
    return err;
  }

  it('rejects empty, garbage, and wrong headers', () => {
    invalid([], /header truncated \(0 of 8 bytes\) at byte 0/);
    invalid(utf8('not wasm at all'), /bad magic number.* at byte 0/);
    invalid([0x00, 0x61, 0x73, 0x6e, 1, 0, 0, 0], /bad magic number.* at byte 3/);
    invalid([0x00, 0x61, 0x73, 0x6d, 2, 0, 0, 0], /unsupported binary version.* at byte 4/);
    expect(thrown(() => inspectWasm('\0asm\x01\0\0\0' as unknown as Uint8Array)).code).toBe('PADDOCK_INVALID_WASM');
  });

  it('rejects every truncation of a valid module, except at section boundaries', () => {
    for (const bytes of [bin.echo, bin['start-side-effect'], concat(bin.unreachable, custom('tail', [1, 2, 3]))]) {
      const boundaries = new Set([8, ...sectionsOf(bytes).map((s) => s.end)]);
      let accepted = 0;
      for (let len = 0; len < bytes.length; len++) {
        const prefix = bytes.subarray(0, len);
        if (boundaries.has(len)) {
          expect(inspectWasm(prefix).byteLength).toBe(len);
          accepted++;
        } else {
          expect(thrown(() => inspectWasm(prefix)).code, `prefix ${len}`).toBe('PADDOCK_INVALID_WASM');
          expect(thrown(() => capWasmLimits(prefix, CAPS)).code, `prefix ${len}`).toBe('PADDOCK_INVALID_WASM');
        }
      }
      expect(accepted).toBe(boundaries.size - 1); // all but the full length
    }
  });

  it('rejects malformed sections with what and where', () => {
    const memory = section(5, [1, 0, 1]);
    invalid(module([5, 0x83, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 0, 1]), /memory section size.*overflows a u32 LEB128 at byte 9/);
    invalid(module([5, 0xff, 0xff, 0xff, 0xff, 0x1f]), /overflows a u32 LEB128 at byte 9/); // 5th byte has bits above 32
    invalid(module([5, 10, 1, 0, 1]), /memory section size 10 runs past the end of the module \(3 bytes left\) at byte 8/);
    invalid(module(memory, memory), /duplicate memory section at byte 13/);
    invalid(module(memory, section(4, [0])), /table section is out of order at byte 13/);
    invalid(module(section(10, [0]), section(12, [0])), /datacount section is out of order/);
    invalid(module(section(6, [0]), section(13, [0])), /tag section is out of order/);
    invalid(module([14, 0]), /unknown section id 14 at byte 8/);
    invalid(module(section(5, [1, 0x08, 1])), /unsupported memory limits flags 0x08 at byte 11/);
    invalid(module(section(5, [1, 0x01, 5, 2])), /memory maximum 2 is below its minimum 5/);
    invalid(module(section(5, [1, 0, 1, 0])), /memory section has 1 unexpected trailing bytes at byte 13/);
    invalid(module(section(5, [2, 0, 1])), /truncated memory limits flags in memory section at byte 13/);
    invalid(module(section(4, [1, 0x40, 0, 0x70, 0, 1, 0xd0, 0x70, 0x0b])), /table initialiser expressions are not supported/);
    invalid(module(section(4, [1, 0x55, 0, 1])), /unknown reference type 0x55/);
    invalid(module(section(7, [1, 1, 0x61, 9, 0])), /unknown export kind 0x09 at byte 13/);
    invalid(module(section(2, [1, 1, 0x61, 1, 0x62, 7, 0])), /unknown import kind 0x07 at byte 15/);
    invalid(module(section(2, [1, 1, 0x61, 1, 0x62, 3, 0x7f, 2])), /global mutability must be 0 or 1/);
    invalid(module(section(2, [1, 1, 0x61, 1, 0x62, 4, 1, 0])), /tag attribute must be 0/);
    invalid(module(section(2, [1, 1, 0xff, 1, 0x62, 0, 0])), /import module name is not valid UTF-8 at byte 11/);
    invalid(module(section(0, [2, 0xc3, 0x28])), /custom section name is not valid UTF-8/);
    invalid(module(section(0, [])), /truncated custom section name length in custom section/);
    invalid(module(section(0, [5, 0x61])), /custom section name length 5 runs past the end of custom section/);
  });

  it('rejects absurd counts without allocating or looping on them', () => {
    const start = performance.now();
    invalid(module(section(2, [0xff, 0xff, 0xff, 0xff, 0x0f, 0])), /import count 4294967295 exceeds the 1 bytes left in import section at byte 10/);
    invalid(module(section(5, [0xff, 0xff, 0xff, 0xff, 0x0f])), /memory count 4294967295 exceeds/);
    invalid(module(section(7, [0x80, 0x80, 0x80, 0x80, 0x08])), /export count 2147483648 exceeds/);
    expect(performance.now() - start).toBeLessThan(100);
  });

  it('accepts the spec order, including tag and datacount in their odd places', () => {
    const info = inspectWasm(module(
      section(1, [0]), custom('a'), section(5, [0]), section(13, [0]), section(6, [0]),
      section(9, [0]), section(12, [0]), section(10, [0]), custom('b'), section(11, [0]),
    ));
    expect(info.customSections).toEqual(['a', 'b']);
  });

  it('never throws anything but a PaddockError on mutated modules (seeded)', () => {
    let seed = 0x5eed1234;
    const rand = (n: number): number => { // mulberry32
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n | 0;
    };
    const interesting = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x40, 0x70, 0x7f, 0x80, 0xff];
    const bases = [...FIXTURES.map((n) => bin[n]), bin.wat('(module (import "m" "mem" (memory 1 4)) (table 3 funcref) (tag (param i32)))')];
    const ITERATIONS = 4000;
    const outcomes = { ok: 0, invalid: 0, limit: 0, capsCompiled: 0 };

    for (let i = 0; i < ITERATIONS; i++) {
      const bytes = Array.from(bases[rand(bases.length)]);
      for (let m = 1 + rand(4); m > 0; m--) {
        const at = rand(bytes.length + 1);
        switch (rand(6)) {
          case 0: bytes[at] = rand(256); break;
          case 1: bytes[at] = interesting[rand(interesting.length)]; break;
          case 2: bytes[at] ^= 1 << rand(8); break;
          case 3: bytes.splice(at, 0, rand(256)); break;
          case 4: bytes.splice(at, 1 + rand(4)); break;
          default: bytes.length = Math.min(bytes.length, at); break;
        }
      }
      const input = Uint8Array.from(bytes);
      try {
        const info = inspectWasm(input);
        const out = capWasmLimits(input, CAPS);
        outcomes.ok++;
        const validIn = WebAssembly.validate(input);
        const validOut = WebAssembly.validate(out);
        expect(validOut || !validIn).toBe(true); // capping never breaks a module V8 accepts
        if (validOut) {
          outcomes.capsCompiled++;
          const after = inspectWasm(out);
          expect(after.memories.every((m) => m.max !== null && m.max <= CAPS.maxMemoryPages)).toBe(true);
          expect(after.tables.every((t) => t.max !== null && t.max <= CAPS.maxTableElements)).toBe(true);
          expect(v8Shape(out)).toEqual({ imports: info.imports, exports: info.exports });
        }
      } catch (err) {
        if (!(err instanceof PaddockError)) throw err;
        if (err.code === 'PADDOCK_INVALID_WASM') outcomes.invalid++;
        else if (err.code === 'PADDOCK_MEMORY_LIMIT') outcomes.limit++;
        else throw err;
      }
    }
    expect(outcomes.ok + outcomes.invalid + outcomes.limit).toBe(ITERATIONS);
    // The mutations must exercise both sides, or the loop proves nothing.
    expect(outcomes.invalid).toBeGreaterThan(300);
    expect(outcomes.capsCompiled).toBeGreaterThan(100);
  });
});

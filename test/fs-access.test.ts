import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsAccess } from '../dist/hostfns/fs.js';

const LIMITS = { maxReadBytes: 1024, maxWriteBytes: 1024, maxListEntries: 5 };
const INSIDE = 'inside-content';
const SECRET = 'TOP-SECRET';

let base: string; // realpath'd temp dir
let root: string; // mounted at /data (read-only)
let wroot: string; // mounted at /out (writable)
let secret: string; // sibling of root, never mounted
let fsa: FsAccess;

/** Await a promise expected to reject; return the error's code/reason/message. */
async function failure(p: Promise<unknown>): Promise<{ code: string; reason?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as { code: string; reason?: string; message: string };
    // No error may leak a host path.
    expect(err.message).not.toContain(base);
    return { code: err.code, reason: err.reason, message: err.message };
  }
  throw new Error('expected a rejection');
}
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
type Attempt = { ok: true; text: string } | { ok: false; code: string; reason?: string };
/** Settle a read outside any try/catch so a wrong value fails the test with a clear diff. */
async function attempt(p: Promise<Uint8Array>): Promise<Attempt> {
  return p.then(
    (b) => ({ ok: true as const, text: text(b) }),
    (e: { code: string; reason?: string }) => ({ ok: false as const, code: e.code, reason: e.reason }),
  );
}

beforeAll(() => {
  base = realpathSync(mkdtempSync(path.join(tmpdir(), 'paddock-fs-')));
  root = path.join(base, 'root');
  wroot = path.join(base, 'wroot');
  secret = path.join(base, 'secret');
  for (const d of [root, wroot, secret, path.join(root, 'sub'), path.join(root, 'many'), path.join(root, 'race-dir'), path.join(wroot, 'dir')]) mkdirSync(d, { recursive: true });
  writeFileSync(path.join(secret, 'secret.txt'), SECRET);
  writeFileSync(path.join(secret, 'file.txt'), SECRET);
  writeFileSync(path.join(base, 'x'), SECRET);
  writeFileSync(path.join(root, 'inside.txt'), INSIDE);
  writeFileSync(path.join(root, 'sub', 'deep.txt'), 'deep');
  writeFileSync(path.join(root, 'race-dir', 'file.txt'), INSIDE);
  for (let i = 0; i < 6; i++) writeFileSync(path.join(root, 'many', `f${i}`), String(i));
  writeFileSync(path.join(root, 'exact.bin'), Buffer.alloc(LIMITS.maxReadBytes, 1));
  writeFileSync(path.join(root, 'big.bin'), Buffer.alloc(LIMITS.maxReadBytes + 1, 1));
  symlinkSync('..', path.join(root, 'up')); // W2: relative symlink to the parent of the root
  symlinkSync('/etc', path.join(root, 'etc')); // W4: absolute symlink out
  symlinkSync(path.join(secret, 'secret.txt'), path.join(root, 'leak')); // W6: pre-existing host symlink out
  symlinkSync('../secret/secret.txt', path.join(root, 'rel-leak'));
  symlinkSync('inside.txt', path.join(root, 'ok-link')); // inside: fine
  symlinkSync('sub/../sub', path.join(root, 'ok-dir-link'));
  symlinkSync(path.join(root, 'inside.txt'), path.join(root, 'abs-ok-link')); // absolute but inside
  symlinkSync(path.join(secret, 'new.txt'), path.join(wroot, 'dangling-out'));
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  execFileSync('mkfifo', [path.join(wroot, 'fifo')]);
  fsa = new FsAccess(
    [
      { guest: '/data', host: root, writable: false },
      { guest: '/out', host: wroot, writable: true },
    ],
    LIMITS,
  );
});

afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('FsAccess: paths and mounts', () => {
  it('reads a file inside the mount', async () => {
    expect(text(await fsa.read('/data/inside.txt'))).toBe(INSIDE);
    expect(text(await fsa.read('/data/sub/../sub/./deep.txt'))).toBe('deep');
  });

  it('W1: `..` leaving the mount is fs-escape', async () => {
    expect(await failure(fsa.read('/data/../x'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    expect(await failure(fsa.read('/data/sub/../../secret/secret.txt'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    expect(await failure(fsa.write('/out/../data/inside.txt', new Uint8Array(1)))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
  });

  it('unmounted paths are fs-not-mounted; malformed paths are BAD_REQUEST', async () => {
    expect(await failure(fsa.read('/etc/passwd'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-not-mounted' });
    expect(await failure(fsa.read('/dataX/inside.txt'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-not-mounted' });
    expect((await failure(fsa.read('data/inside.txt'))).code).toBe('PADDOCK_BAD_REQUEST');
    expect((await failure(fsa.read('/data/inside.txt\0.png'))).code).toBe('PADDOCK_BAD_REQUEST');
    expect((await failure(fsa.read('/data/' + 'a'.repeat(4100)))).code).toBe('PADDOCK_BAD_REQUEST');
  });

  it('the longest mount wins', async () => {
    const nested = new FsAccess(
      [
        { guest: '/', host: secret, writable: false },
        { guest: '/data', host: root, writable: false },
      ],
      LIMITS,
    );
    expect(text(await nested.read('/data/inside.txt'))).toBe(INSIDE);
    expect(text(await nested.read('/secret.txt'))).toBe(SECRET);
  });

  it('missing files are NOT_FOUND', async () => {
    expect((await failure(fsa.read('/data/nope.txt'))).code).toBe('PADDOCK_NOT_FOUND');
    expect((await failure(fsa.read('/data/inside.txt/more'))).code).toBe('PADDOCK_NOT_FOUND');
    expect((await failure(fsa.list('/data/nope'))).code).toBe('PADDOCK_NOT_FOUND');
    expect((await failure(fsa.write('/out/nodir/f.txt', new Uint8Array(1)))).code).toBe('PADDOCK_NOT_FOUND');
  });
});

describe('FsAccess: symlinks', () => {
  it('W2: listing a symlink to `..` is fs-escape', async () => {
    expect(await failure(fsa.list('/data/up'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
  });

  it('W3: reading through the `..` symlink is fs-escape', async () => {
    expect(await failure(fsa.read('/data/up/secret/secret.txt'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    expect(await failure(fsa.read('/data/up/x'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
  });

  it('W4: an absolute symlink to /etc is fs-escape', async () => {
    expect(await failure(fsa.list('/data/etc'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
  });

  it('W5: reading through the /etc symlink is fs-escape', async () => {
    expect(await failure(fsa.read('/data/etc/passwd'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    expect(await failure(fsa.read('/data/etc/does-not-exist'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
  });

  it('W6: pre-existing host symlinks pointing out are fs-escape', async () => {
    expect(await failure(fsa.read('/data/leak'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    expect(await failure(fsa.read('/data/rel-leak'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    // Creating through a dangling symlink that points out must not create anything outside.
    expect(await failure(fsa.write('/out/dangling-out', new Uint8Array([1])))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-escape' });
    expect(existsSync(path.join(secret, 'new.txt'))).toBe(false);
  });

  it('symlinks that stay inside the mount are followed', async () => {
    expect(text(await fsa.read('/data/ok-link'))).toBe(INSIDE);
    expect(text(await fsa.read('/data/abs-ok-link'))).toBe(INSIDE);
    expect(text(await fsa.read('/data/ok-dir-link/deep.txt'))).toBe('deep');
  });

  it('W7: a symlink flipped between an inside and an outside file never yields the outside content', async () => {
    const link = path.join(root, 'flip');
    symlinkSync('inside.txt', link);
    const { stop, flips } = startFlipper(`
      const { symlinkSync, renameSync, rmSync } = require('node:fs');
      const tmp = link + '.tmp';
      let i = 0;
      while (Atomics.load(flag, 0) === 0) {
        rmSync(tmp, { force: true });
        symlinkSync(i++ % 2 ? 'inside.txt' : outside, tmp);
        renameSync(tmp, link); // atomic replace: the name always exists
        Atomics.add(flag, 1, 1);
      }`, { link, outside: path.join(secret, 'secret.txt') });
    const seen = { inside: 0, denied: 0 };
    try {
      // On a loaded machine the flipper thread may start late: race only once it is flipping.
      while (flips() === 0) await new Promise((r) => setTimeout(r, 1));
      for (let i = 0; i < 200; i++) {
        const r = await attempt(fsa.read('/data/flip'));
        if (r.ok) {
          expect(r.text).toBe(INSIDE);
          seen.inside++;
        } else {
          expect([r.code, r.reason]).toEqual(['PADDOCK_CAPABILITY_DENIED', 'fs-escape']);
          seen.denied++;
        }
      }
    } finally {
      await stop();
    }
    expect(seen.inside + seen.denied).toBe(200);
    expect(flips()).toBeGreaterThan(0);
  });

  it('W7b: a directory component swapped for a symlink out (after the walk) is caught on the fd', async () => {
    const d = path.join(root, 'race-dir');
    const { stop, flips } = startFlipper(`
      const { symlinkSync, renameSync, rmSync } = require('node:fs');
      const hold = dir + '.hold', lnk = dir + '.lnk';
      rmSync(lnk, { force: true });
      symlinkSync(outside, lnk);
      while (Atomics.load(flag, 0) === 0) {
        renameSync(dir, hold); renameSync(lnk, dir);   // dir -> symlink to the secret dir
        renameSync(dir, lnk); renameSync(hold, dir);   // and back to the real directory
        Atomics.add(flag, 1, 1);
      }`, { dir: d, outside: secret });
    const seen = { inside: 0, denied: 0, missing: 0 };
    try {
      while (flips() === 0) await new Promise((r) => setTimeout(r, 1));
      for (let i = 0; i < 200; i++) {
        const r = await attempt(fsa.read('/data/race-dir/file.txt'));
        if (r.ok) {
          expect(r.text).toBe(INSIDE);
          seen.inside++;
        } else if (r.code === 'PADDOCK_NOT_FOUND') {
          seen.missing++; // caught mid-rename
        } else {
          expect([r.code, r.reason]).toEqual(['PADDOCK_CAPABILITY_DENIED', 'fs-escape']);
          seen.denied++;
        }
      }
    } finally {
      await stop();
    }
    expect(seen.inside + seen.denied + seen.missing).toBe(200);
    expect(flips()).toBeGreaterThan(0);
  });
  it('W7c: a write racing a parent-directory swap never leaves a file outside the mount', async () => {
    const d = path.join(wroot, 'wrace');
    const out = path.join(base, 'wsecret');
    mkdirSync(d);
    mkdirSync(out);
    const { stop, flips } = startFlipper(`
      const { symlinkSync, renameSync, rmSync } = require('node:fs');
      const hold = dir + '.hold', lnk = dir + '.lnk';
      rmSync(lnk, { force: true });
      symlinkSync(outside, lnk);
      while (Atomics.load(flag, 0) === 0) {
        renameSync(dir, hold); renameSync(lnk, dir);
        renameSync(dir, lnk); renameSync(hold, dir);
        Atomics.add(flag, 1, 1);
      }`, { dir: d, outside: out });
    const seen = { ok: 0, denied: 0, missing: 0 };
    try {
      while (flips() === 0) await new Promise((r) => setTimeout(r, 1));
      for (let i = 0; i < 200; i++) {
        const name = `/out/wrace/f${i % 10}.txt`;
        const r = await fsa.write(name, Buffer.from(INSIDE)).then(
          () => ({ code: 'ok', reason: undefined as string | undefined }),
          (e: { code: string; reason?: string }) => ({ code: e.code, reason: e.reason }),
        );
        if (r.code === 'ok') seen.ok++;
        else if (r.code === 'PADDOCK_NOT_FOUND') seen.missing++;
        else {
          expect([r.code, r.reason]).toEqual(['PADDOCK_CAPABILITY_DENIED', 'fs-escape']);
          seen.denied++;
        }
      }
    } finally {
      await stop();
    }
    expect(seen.ok + seen.denied + seen.missing).toBe(200);
    expect(flips()).toBeGreaterThan(0);
    expect(readdirSync(out)).toEqual([]); // whatever was created out there was removed again
  });
});

describe('FsAccess: reading limits and file types', () => {
  it('reads a file of exactly maxReadBytes, refuses one byte more', async () => {
    expect((await fsa.read('/data/exact.bin')).byteLength).toBe(LIMITS.maxReadBytes);
    expect(await failure(fsa.read('/data/big.bin'))).toMatchObject({ code: 'PADDOCK_BAD_REQUEST', reason: 'fs-too-large' });
  });

  it('refuses a FIFO (without blocking) and directories', async () => {
    expect(await failure(fsa.read('/data/fifo'))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-not-regular' });
    expect(await failure(fsa.write('/out/fifo', new Uint8Array(1)))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-not-regular' });
    expect(await failure(fsa.read('/data/sub'))).toMatchObject({ code: 'PADDOCK_BAD_REQUEST', reason: 'fs-is-directory' });
  });

  it('lists a directory (sorted, typed) and caps the entry count', async () => {
    expect(await fsa.list('/data/sub')).toEqual([{ name: 'deep.txt', type: 'file' }]);
    const top = await fsa.list('/out');
    expect(top.find((e) => e.name === 'dir')).toEqual({ name: 'dir', type: 'dir' });
    expect(top.find((e) => e.name === 'dangling-out')).toEqual({ name: 'dangling-out', type: 'other' });
    expect(top.find((e) => e.name === 'fifo')).toEqual({ name: 'fifo', type: 'other' });
    expect(await failure(fsa.list('/data/many'))).toMatchObject({ code: 'PADDOCK_BAD_REQUEST', reason: 'fs-too-many-entries' });
    expect((await failure(fsa.list('/data/inside.txt'))).code).toBe('PADDOCK_BAD_REQUEST');
  });
});

describe('FsAccess: writing', () => {
  it('a read-only mount refuses write and create', async () => {
    expect(await failure(fsa.write('/data/inside.txt', new Uint8Array([1])))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-read-only' });
    expect(await failure(fsa.write('/data/new.txt', new Uint8Array([1])))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'fs-read-only' });
    expect(readFileSync(path.join(root, 'inside.txt'), 'utf8')).toBe(INSIDE);
    expect(existsSync(path.join(root, 'new.txt'))).toBe(false);
  });

  it('a writable mount creates, truncates and reads back', async () => {
    await fsa.write('/out/dir/a.txt', Buffer.from('hello world'));
    expect(text(await fsa.read('/out/dir/a.txt'))).toBe('hello world');
    await fsa.write('/out/dir/a.txt', Buffer.from('bye'));
    expect(text(await fsa.read('/out/dir/a.txt'))).toBe('bye');
    expect(readFileSync(path.join(wroot, 'dir', 'a.txt'), 'utf8')).toBe('bye');
  });

  it('caps the write size and refuses non-regular targets', async () => {
    expect(await failure(fsa.write('/out/big', new Uint8Array(LIMITS.maxWriteBytes + 1)))).toMatchObject({ code: 'PADDOCK_BAD_REQUEST', reason: 'fs-too-large' });
    expect(existsSync(path.join(wroot, 'big'))).toBe(false);
    expect(await failure(fsa.write('/out/dir', new Uint8Array(1)))).toMatchObject({ code: 'PADDOCK_BAD_REQUEST', reason: 'fs-is-directory' });
    expect(await failure(fsa.write('/out', new Uint8Array(1)))).toMatchObject({ code: 'PADDOCK_BAD_REQUEST', reason: 'fs-is-directory' });
  });
});

/** Run `body` in a worker thread (true parallelism) until stop(); `flag[0]` = stop, `flag[1]` = flips. */
function startFlipper(body: string, vars: Record<string, string>): { stop: () => Promise<void>; flips: () => number } {
  const flag = new Int32Array(new SharedArrayBuffer(8));
  const decls = Object.entries(vars).map(([k, v]) => `const ${k} = ${JSON.stringify(v)};`).join('\n');
  const worker = new Worker(`const { workerData: { flag } } = require('node:worker_threads');\n${decls}\n${body}`, { eval: true, workerData: { flag } });
  const done = new Promise<void>((resolve, reject) => {
    worker.once('exit', () => resolve());
    worker.once('error', reject);
  });
  return {
    stop: async () => {
      Atomics.store(flag, 0, 1);
      await done;
    },
    flips: () => Atomics.load(flag, 1),
  };
}

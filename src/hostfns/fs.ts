// Filesystem access for plugins, served by our own code rather than node:wasi (Node's docs say
// node:wasi is not a sandbox: symlinks can be raced out of a preopen). A plugin names a *guest*
// path; we map it into a mount, refuse anything that leaves the mount, and then prove where the
// file we actually opened lives before touching its bytes.
//
// Two layers:
//  1. resolveInside() walks the path one component at a time with lstat/readlink, confining
//     every symlink (relative or absolute) to the mount's real root. This gives good errors
//     (fs-escape vs NOT_FOUND) and means we only ever open a path with no symlinks in it.
//  2. After open(), the authoritative check: readlink('/proc/self/fd/<fd>') tells us where the
//     *opened* file really is. Anything swapped in between step 1 and open() is caught here,
//     before a byte is read or written. The final component is opened with O_NOFOLLOW, so a
//     symlink planted there after step 1 makes open() fail instead of being followed.
//
// Error messages only ever speak in guest paths; host paths never reach the plugin.

import { constants as C, type Stats } from 'node:fs';
import { lstat, open, opendir, readlink, realpath, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { PaddockError, type ErrorCode } from '../errors.js';

export interface Mount { guest: string; host: string; writable: boolean }
export interface FsLimits { maxReadBytes: number; maxWriteBytes: number; maxListEntries: number }
export type FsEntryType = 'file' | 'dir' | 'other';

const MAX_GUEST_PATH_BYTES = 4096;
const MAX_SYMLINK_HOPS = 40; // same budget as Linux's ELOOP limit
// O_NONBLOCK: opening a FIFO for reading would otherwise block the thread pool until a writer
// appears (regular files ignore the flag). O_NOCTTY: never adopt a terminal.
const O_READ = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY;
const O_DIR = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW | C.O_NONBLOCK;
const O_WRITE = C.O_WRONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY; // no O_TRUNC until verified
const CREATE_MODE = 0o600;

function fail(code: ErrorCode, message: string, reason?: string): PaddockError {
  const err = new PaddockError(code, message);
  if (reason) (err as PaddockError & { reason: string }).reason = reason;
  return err;
}
const deny = (reason: string, message: string) => fail('PADDOCK_CAPABILITY_DENIED', message, reason);
const escape = (guest: string) => deny('fs-escape', `fs: ${guest} leads outside its mount`);
// Devices/FIFOs/sockets are a policy refusal; a directory where a file was expected is just a bad request.
const notRegular = (guest: string) => deny('fs-not-regular', `fs: ${guest} is not a regular file`);
const isDir = (guest: string) => fail('PADDOCK_BAD_REQUEST', `fs: ${guest} is a directory`, 'fs-is-directory');
const checkRegular = (st: Stats, guest: string) => {
  if (st.isDirectory()) throw isDir(guest);
  if (!st.isFile()) throw notRegular(guest);
};

/** Map a host errno to a guest-speaking error; the original message (with host paths) is dropped. */
function fromErrno(err: unknown, guest: string, op: string): PaddockError {
  if (err instanceof PaddockError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return fail('PADDOCK_NOT_FOUND', `fs: ${guest} not found`);
    case 'ELOOP': // O_NOFOLLOW hit a symlink that was not there when we resolved the path: a race
      return escape(guest);
    case 'ENXIO': // FIFO opened for writing with no reader, or a socket
      return notRegular(guest);
    case 'EISDIR':
      return isDir(guest);
    default:
      return fail('PADDOCK_HOST_CALL_FAILED', `fs: ${op} ${guest} failed${typeof code === 'string' ? ` (${code})` : ''}`);
  }
}

function isInside(root: string, p: string): boolean {
  return p === root || p.startsWith(root === '/' ? '/' : root + '/');
}

interface Located { mount: Mount; guest: string; parts: string[] }
interface Resolved { hostPath: string; stat: Stats | null } // stat null: final component missing

export class FsAccess {
  private readonly mounts: Mount[];

  constructor(mounts: Mount[], private readonly limits: FsLimits) {
    this.mounts = mounts.map((m) => {
      if (typeof m.guest !== 'string' || !m.guest.startsWith('/') || m.guest.includes('\0')) {
        throw fail('PADDOCK_BAD_REQUEST', `fs: mount guest path must be absolute: ${String(m.guest)}`);
      }
      if (typeof m.host !== 'string' || !path.isAbsolute(m.host) || m.host.includes('\0')) {
        throw fail('PADDOCK_BAD_REQUEST', `fs: mount ${m.guest} needs an absolute host path`);
      }
      return { guest: stripSlash(path.posix.normalize(m.guest)), host: path.resolve(m.host), writable: m.writable === true };
    });
    for (const k of ['maxReadBytes', 'maxWriteBytes', 'maxListEntries'] as const) {
      if (!Number.isSafeInteger(limits?.[k]) || limits[k] < 0) throw fail('PADDOCK_BAD_REQUEST', `fs: ${k} must be a non-negative integer`);
    }
    const seen = new Set<string>();
    for (const m of this.mounts) {
      if (seen.has(m.guest)) throw fail('PADDOCK_BAD_REQUEST', `fs: mount ${m.guest} is declared twice`);
      seen.add(m.guest);
    }
  }

  async read(guestPath: string): Promise<Uint8Array> {
    const loc = this.locate(guestPath);
    const root = await this.realRoot(loc);
    const { hostPath, stat: pre } = await this.resolveInside(root, loc, false);
    // Refuse devices/FIFOs before open(): opening some devices has side effects.
    checkRegular(pre!, loc.guest);
    const fh = await open(hostPath, O_READ).catch((e) => { throw fromErrno(e, loc.guest, 'read'); });
    try {
      const st = await fh.stat();
      await verifyFd(fh, st, root, hostPath, loc.guest);
      checkRegular(st, loc.guest);
      const max = this.limits.maxReadBytes;
      if (st.size > max) throw tooLarge(loc.guest, max);
      return await readCapped(fh, st.size, max, loc.guest);
    } catch (e) {
      throw fromErrno(e, loc.guest, 'read');
    } finally {
      await fh.close().catch(() => {});
    }
  }

  async write(guestPath: string, data: Uint8Array): Promise<void> {
    const loc = this.locate(guestPath);
    if (!loc.mount.writable) throw deny('fs-read-only', `fs: ${loc.mount.guest} is mounted read-only`);
    if (!(data instanceof Uint8Array)) throw fail('PADDOCK_BAD_REQUEST', 'fs: write data must be bytes');
    if (data.byteLength > this.limits.maxWriteBytes) throw tooLarge(loc.guest, this.limits.maxWriteBytes);
    const root = await this.realRoot(loc);
    const { hostPath, stat: pre } = await this.resolveInside(root, loc, true);
    if (hostPath === root) throw isDir(loc.guest);
    if (pre) checkRegular(pre, loc.guest);
    // The parent must really be inside the mount right now; the fd check below covers races.
    try {
      if (!isInside(root, await realpath(path.dirname(hostPath)))) throw escape(loc.guest);
    } catch (e) {
      throw fromErrno(e, loc.guest, 'write');
    }
    // O_EXCL first so we know whether *we* created the file (and may remove it on failure);
    // O_EXCL never follows a symlink at the final component either.
    let fh: FileHandle;
    let created = false;
    try {
      fh = await open(hostPath, O_WRITE | C.O_CREAT | C.O_EXCL, CREATE_MODE);
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fromErrno(e, loc.guest, 'write');
      fh = await open(hostPath, O_WRITE).catch((e2) => { throw fromErrno(e2, loc.guest, 'write'); });
    }
    try {
      const st = await fh.stat();
      try {
        await verifyFd(fh, st, root, hostPath, loc.guest);
      } catch (e) {
        if (created) await unlinkIfSame(fh, st, hostPath);
        throw e;
      }
      checkRegular(st, loc.guest);
      await fh.truncate(0);
      let off = 0;
      while (off < data.byteLength) {
        const { bytesWritten } = await fh.write(data, off, data.byteLength - off, off);
        off += bytesWritten;
      }
    } catch (e) {
      throw fromErrno(e, loc.guest, 'write');
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** Entries of a directory, sorted by name. Symlinks are reported as 'other' (never followed).
   *  More than maxListEntries entries is an error (BAD_REQUEST, reason 'fs-too-many-entries'),
   *  not a silently truncated list; we stop reading after maxListEntries+1. */
  async list(guestPath: string): Promise<Array<{ name: string; type: FsEntryType }>> {
    const loc = this.locate(guestPath);
    const root = await this.realRoot(loc);
    const { hostPath, stat: pre } = await this.resolveInside(root, loc, false);
    if (!pre!.isDirectory()) throw fail('PADDOCK_BAD_REQUEST', `fs: ${loc.guest} is not a directory`, 'fs-not-directory');
    const fh = await open(hostPath, O_DIR).catch((e) => { throw fromErrno(e, loc.guest, 'list'); });
    try {
      const st = await fh.stat();
      const viaProc = await verifyFd(fh, st, root, hostPath, loc.guest);
      // Read the directory we verified, not whatever the path names now: on Linux,
      // /proc/self/fd/<fd> re-opens the very directory the descriptor refers to.
      const dir = await opendir(viaProc ? `/proc/self/fd/${fh.fd}` : hostPath);
      const out: Array<{ name: string; type: FsEntryType }> = [];
      for await (const d of dir) { // breaking out of for-await closes the Dir
        if (out.length >= this.limits.maxListEntries) {
          throw fail('PADDOCK_BAD_REQUEST', `fs: ${loc.guest} has more than ${this.limits.maxListEntries} entries`, 'fs-too-many-entries');
        }
        out.push({ name: d.name, type: d.isFile() ? 'file' : d.isDirectory() ? 'dir' : 'other' });
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (e) {
      throw fromErrno(e, loc.guest, 'list');
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** Validate and normalise a guest path, and pick the longest mount containing it. */
  private locate(guestPath: string): Located {
    if (typeof guestPath !== 'string' || !guestPath.startsWith('/')) throw fail('PADDOCK_BAD_REQUEST', 'fs: path must be absolute');
    if (guestPath.includes('\0')) throw fail('PADDOCK_BAD_REQUEST', 'fs: path contains NUL');
    if (Buffer.byteLength(guestPath, 'utf8') > MAX_GUEST_PATH_BYTES) throw fail('PADDOCK_BAD_REQUEST', 'fs: path too long');
    const guest = stripSlash(path.posix.normalize(guestPath));
    // A `..` may not climb out of the mount the path had entered before it ("/data/../etc").
    const segs = guestPath.split('/');
    const firstUp = segs.indexOf('..');
    if (firstUp !== -1) {
      const entered = this.mountFor(stripSlash(path.posix.normalize(segs.slice(0, firstUp).join('/') || '/')));
      if (entered && !isInside(entered.guest, guest)) throw escape(guestPath);
    }
    const mount = this.mountFor(guest);
    if (!mount) throw deny('fs-not-mounted', `fs: ${guest} is not in any mount`);
    const rel = guest.slice(mount.guest === '/' ? 0 : mount.guest.length);
    return { mount, guest, parts: rel.split('/').filter((s) => s !== '') };
  }

  private mountFor(guest: string): Mount | undefined {
    let best: Mount | undefined;
    for (const m of this.mounts) {
      if (isInside(m.guest, guest) && (!best || m.guest.length > best.guest.length)) best = m;
    }
    return best;
  }

  /** Realpath'd on every call: cheap, and correct if the operator repoints the mount. */
  private async realRoot(loc: Located): Promise<string> {
    try {
      return await realpath(loc.mount.host);
    } catch {
      throw fail('PADDOCK_HOST_CALL_FAILED', `fs: mount ${loc.mount.guest} is unavailable`);
    }
  }

  /**
   * Walk `parts` from the real root, following symlinks ourselves so that none (relative or
   * absolute, in any component) can lead outside the root. Returns a host path with no symlinks
   * in it as of the walk. With allowMissing, the final component may be absent (create).
   */
  private async resolveInside(root: string, loc: Located, allowMissing: boolean): Promise<Resolved> {
    const todo = [...loc.parts];
    let cur = root;
    let curStat: Stats | null = null;
    let hops = 0;
    try {
      curStat = await stat(root);
      while (todo.length > 0) {
        const name = todo.shift()!;
        if (name === '' || name === '.') continue;
        if (name === '..') {
          if (cur === root) throw escape(loc.guest);
          cur = path.dirname(cur); // cur has no symlinks, so its lexical parent is its real parent
          curStat = await lstat(cur);
          continue;
        }
        if (!curStat.isDirectory()) throw fail('PADDOCK_NOT_FOUND', `fs: ${loc.guest} not found`);
        const next = path.join(cur, name);
        let st: Stats;
        try {
          st = await lstat(next);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT' && allowMissing && todo.length === 0) return { hostPath: next, stat: null };
          throw e;
        }
        if (!st.isSymbolicLink()) {
          cur = next;
          curStat = st;
          continue;
        }
        if (++hops > MAX_SYMLINK_HOPS) throw fail('PADDOCK_BAD_REQUEST', `fs: too many symbolic links in ${loc.guest}`);
        let target: string;
        try {
          target = await readlink(next);
        } catch (e) {
          // EINVAL: no longer a symlink (swapped since lstat); look at the component again.
          if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
          todo.unshift(name);
          continue;
        }
        if (path.isAbsolute(target)) {
          // Absolute targets are allowed only if they name a place inside this mount, spelled
          // with either the real or the configured root; restart the walk from the root.
          const t = path.normalize(target);
          const base = isInside(root, t) ? root : isInside(loc.mount.host, t) ? loc.mount.host : null;
          if (base === null) throw escape(loc.guest);
          todo.unshift(...t.slice(base.length).split('/'));
          cur = root;
          curStat = await stat(root);
        } else {
          todo.unshift(...target.split('/')); // relative to the link's directory (cur)
        }
      }
    } catch (e) {
      throw fromErrno(e, loc.guest, 'resolve');
    }
    return { hostPath: cur, stat: curStat };
  }
}

function stripSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

function tooLarge(guest: string, max: number): PaddockError {
  return fail('PADDOCK_BAD_REQUEST', `fs: ${guest} is larger than the limit of ${max} bytes`, 'fs-too-large');
}

/**
 * Prove the opened descriptor lives inside `root`. Linux: /proc/self/fd/<fd> names the file the
 * descriptor refers to, whatever happened to the path since. Elsewhere (no procfs) we fall back
 * to realpath(path) plus a device/inode identity check against fstat. Returns true when the
 * /proc check was used.
 */
async function verifyFd(fh: FileHandle, st: Stats, root: string, hostPath: string, guest: string): Promise<boolean> {
  if (st.nlink === 0) throw fail('PADDOCK_NOT_FOUND', `fs: ${guest} not found`); // deleted under us
  let real: string | null = null;
  try {
    real = await readlink(`/proc/self/fd/${fh.fd}`);
  } catch {
    real = null;
  }
  if (real !== null) {
    if (!isInside(root, real)) throw escape(guest);
    return true;
  }
  const rp = await realpath(hostPath).catch(() => null);
  const same = rp !== null ? await stat(rp).then((s) => s.dev === st.dev && s.ino === st.ino, () => false) : false;
  if (!rp || !same || !isInside(root, rp)) throw escape(guest);
  return false;
}

/** Best-effort removal of a file we created outside the root: only if the name still refers to
 *  the very inode we created (never unlink by a path an attacker may have re-pointed). */
async function unlinkIfSame(fh: FileHandle, st: Stats, hostPath: string): Promise<void> {
  const where = await readlink(`/proc/self/fd/${fh.fd}`).catch(() => hostPath);
  try {
    const now = await lstat(where);
    if (now.dev === st.dev && now.ino === st.ino) await unlink(where);
  } catch {
    // gone already, or not ours: nothing to do
  }
}

/** Read at most max+1 bytes, growing the buffer only if the file outgrew its fstat size. */
async function readCapped(fh: FileHandle, size: number, max: number, guest: string): Promise<Uint8Array> {
  let buf = Buffer.allocUnsafe(Math.min(size, max) + 1);
  let total = 0;
  for (;;) {
    if (total === buf.length) {
      if (buf.length >= max + 1) break;
      const bigger = Buffer.allocUnsafe(Math.min(buf.length * 2, max + 1));
      buf.copy(bigger, 0, 0, total);
      buf = bigger;
    }
    const { bytesRead } = await fh.read(buf, total, buf.length - total, total);
    if (bytesRead === 0) break;
    total += bytesRead;
  }
  if (total > max) throw tooLarge(guest, max);
  return new Uint8Array(buf.buffer, buf.byteOffset, total).slice();
}

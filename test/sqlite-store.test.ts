import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../dist/store/sqlite.js';

let dir: string;
const opened: SqliteStore[] = [];
const open = (d = dir): SqliteStore => {
  const s = SqliteStore.open(d);
  opened.push(s);
  return s;
};
const bytes = (...b: number[]): Uint8Array => new Uint8Array(b);
/** The error a synchronous call throws, as { code, message }. */
function thrown(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (err) {
    return { code: (err as { code?: string }).code, message: (err as Error).message };
  }
  throw new Error('expected a throw');
}
const plugin = (tenant: string, name: string, digest: string, version = '1.0.0') =>
  ({ tenant, name, version, digest, manifest: { name, exports: ['run'] }, enabled: true, signedBy: null });

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'paddock-sqlite-'));
});
afterEach(async () => {
  for (const s of opened.splice(0)) s.close();
  await rm(dir, { recursive: true, force: true });
});

describe('SqliteStore', () => {
  it('creates the data dir and a WAL database with a versioned schema, migrating only once', () => {
    const data = join(dir, 'a', 'b');
    open(data).close();
    open(data).close();
    expect(existsSync(join(data, 'paddock.db'))).toBe(true);
    const db = new Database(join(data, 'paddock.db'));
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.prepare('SELECT version FROM schema_version').all()).toEqual([{ version: 1 }]);
    } finally {
      db.close();
    }
  });

  it('creates, reads, updates, lists and deletes tenants, with coded errors', () => {
    const s = open();
    const t = s.createTenant({ name: 'acme', grants: { http: ['a.com'] }, quotas: { kvBytes: 100 } });
    expect(t).toMatchObject({ name: 'acme', grants: { http: ['a.com'] }, quotas: { kvBytes: 100 } });
    expect(new Date(t.createdAt).toISOString()).toBe(t.createdAt);
    expect(thrown(() => s.createTenant({ name: 'acme', grants: {}, quotas: {} })))
      .toEqual({ code: 'PADDOCK_BAD_REQUEST', message: 'tenant "acme" already exists' });
    expect(thrown(() => s.createTenant({ name: 'a/b', grants: {}, quotas: {} })).code).toBe('PADDOCK_BAD_REQUEST');
    expect(s.updateTenant('acme', { quotas: { kvBytes: 5 } })).toEqual({ ...t, quotas: { kvBytes: 5 } });
    expect(s.updateTenant('acme', { grants: null })).toEqual({ ...t, grants: null, quotas: { kvBytes: 5 } });
    expect(thrown(() => s.updateTenant('nope', { grants: {} })).code).toBe('PADDOCK_NOT_FOUND');
    s.createTenant({ name: 'beta', grants: [], quotas: {} });
    expect(s.getTenant('nope')).toBeNull();
    expect(s.listTenants().map((x) => x.name)).toEqual(['acme', 'beta']);
    expect(s.deleteTenant('acme')).toBe(true);
    expect(s.deleteTenant('acme')).toBe(false);
    expect(s.listTenants().map((x) => x.name)).toEqual(['beta']);
  });

  it('finds tenants by API key hash, active keys only, and revokes them', () => {
    const s = open();
    s.createTenant({ name: 'acme', grants: {}, quotas: {} });
    s.createTenant({ name: 'beta', grants: {}, quotas: {} });
    const k1 = s.addApiKey('acme', 'h1');
    const k2 = s.addApiKey('acme', 'h2');
    s.addApiKey('beta', 'h3');
    expect(k1).toMatchObject({ tenant: 'acme', revokedAt: null });
    expect(k1.id).toMatch(/^[A-Za-z0-9_-]{8,}$/);
    expect(k1.id).not.toBe(k2.id);
    expect(thrown(() => s.addApiKey('nope', 'h4')).code).toBe('PADDOCK_NOT_FOUND');
    expect(thrown(() => s.addApiKey('beta', 'h1')).code).toBe('PADDOCK_BAD_REQUEST');
    expect([s.findTenantByKeyHash('h1'), s.findTenantByKeyHash('h2'), s.findTenantByKeyHash('h3')]).toEqual(['acme', 'acme', 'beta']);
    expect(s.findTenantByKeyHash('unknown')).toBeNull();
    expect(s.revokeApiKeys('acme')).toBe(2);
    expect(s.revokeApiKeys('acme')).toBe(0);
    expect([s.findTenantByKeyHash('h1'), s.findTenantByKeyHash('h2'), s.findTenantByKeyHash('h3')]).toEqual([null, null, 'beta']);
    s.addApiKey('acme', 'h5');
    expect(s.findTenantByKeyHash('h5')).toBe('acme');
  });

  it('upserts, lists, enables and deletes plugins; wasm is stored once per digest and collected when unreferenced', () => {
    const s = open();
    s.putWasm('d1', bytes(0, 0x61, 0x73, 0x6d, 1));
    s.putWasm('d1', bytes(9, 9)); // idempotent: the first copy stays
    s.putWasm('d2', bytes(0, 0x61, 0x73, 0x6d, 2));
    expect(s.getWasm('d1')).toEqual(bytes(0, 0x61, 0x73, 0x6d, 1));
    expect(s.getWasm('zz')).toBeNull();

    const a = s.upsertPlugin(plugin('acme', 'echo', 'd1'));
    expect(a).toMatchObject({ ...plugin('acme', 'echo', 'd1') });
    expect(new Date(a.installedAt).toISOString()).toBe(a.installedAt);
    s.upsertPlugin({ ...plugin('beta', 'echo', 'd1'), signedBy: 'key-1', installedAt: '2024-01-02T03:04:05.000Z' });
    s.upsertPlugin(plugin('acme', 'clock', 'd2'));
    expect(s.listPlugins().map((p) => `${p.tenant}/${p.name}`)).toEqual(['acme/clock', 'acme/echo', 'beta/echo']);
    expect(s.listPlugins('beta')).toEqual([{ ...plugin('beta', 'echo', 'd1'), signedBy: 'key-1', installedAt: '2024-01-02T03:04:05.000Z' }]);
    expect(s.listPlugins('nobody')).toEqual([]);

    expect(s.setPluginEnabled('acme', 'echo', false).enabled).toBe(false);
    expect(s.getPlugin('acme', 'echo')?.enabled).toBe(false);
    expect(s.setPluginEnabled('acme', 'echo', true).enabled).toBe(true);
    expect(thrown(() => s.setPluginEnabled('acme', 'nope', true)).code).toBe('PADDOCK_NOT_FOUND');

    // d1 is shared by two plugins: deleting one keeps it, deleting both drops it.
    expect(s.deletePlugin('acme', 'echo')).toBe(true);
    expect(s.deletePlugin('acme', 'echo')).toBe(false);
    expect(s.getPlugin('acme', 'echo')).toBeNull();
    expect(s.getWasm('d1')).not.toBeNull();
    expect(s.deletePlugin('beta', 'echo')).toBe(true);
    expect(s.getWasm('d1')).toBeNull();

    // Upgrading to a new digest drops the blob only the old version used.
    s.putWasm('d3', bytes(3));
    const up = s.upsertPlugin({ ...plugin('acme', 'clock', 'd3', '2.0.0'), enabled: false });
    expect(up).toMatchObject({ version: '2.0.0', digest: 'd3', enabled: false });
    expect([s.getWasm('d2'), s.getWasm('d3')]).toEqual([null, bytes(3)]);
  });

  it('stores quarantine state and settings', () => {
    const s = open();
    s.saveQuarantine('acme', 'echo', { strikes: 3, until: 123 });
    s.saveQuarantine('acme', 'clock', { strikes: 1 });
    s.saveQuarantine('acme', 'echo', { strikes: 4 });
    const rows = s.listQuarantine();
    expect(rows.map(({ tenant, plugin: p, state }) => ({ tenant, p, state })))
      .toEqual([{ tenant: 'acme', p: 'clock', state: { strikes: 1 } }, { tenant: 'acme', p: 'echo', state: { strikes: 4 } }]);
    expect(new Date(rows[0]!.updatedAt).toISOString()).toBe(rows[0]!.updatedAt);
    s.saveQuarantine('acme', 'clock', null);
    expect(s.listQuarantine().map((r) => r.plugin)).toEqual(['echo']);

    expect(s.getSetting('secret')).toBeNull();
    s.setSetting('secret', 'abc');
    s.setSetting('secret', 'def');
    expect(s.getSetting('secret')).toBe('def');
  });

  it('KV: get/set/delete/list with literal prefixes, sorted and limited', async () => {
    const { kv } = open();
    for (const k of ['b', 'a%c', 'a_c', 'abc', 'aXc', 'a%', 'A%c', 'é1', 'é2', 'ê']) await kv.set('t/p', k, bytes(k.length), 1e6);
    await kv.set('t/other', 'a%zz', bytes(1), 1e6);
    expect(await kv.get('t/p', 'abc')).toEqual(bytes(3));
    expect(await kv.get('t/p', 'missing')).toBeNull();
    expect(await kv.get('t/q', 'abc')).toBeNull();
    await kv.set('t/p', 'empty', bytes(), 1e6);
    expect(await kv.get('t/p', 'empty')).toEqual(bytes());

    expect(await kv.list('t/p', 'a%', 10)).toEqual(['a%', 'a%c']);
    expect(await kv.list('t/p', 'a_', 10)).toEqual(['a_c']);
    expect(await kv.list('t/p', 'a', 10)).toEqual(['a%', 'a%c', 'aXc', 'a_c', 'abc']);
    expect(await kv.list('t/p', 'a', 2)).toEqual(['a%', 'a%c']);
    expect(await kv.list('t/p', 'é', 10)).toEqual(['é1', 'é2']);
    expect(await kv.list('t/p', 'zz', 10)).toEqual([]);
    expect(await kv.list('t/p', '', 100)).toEqual(['A%c', 'a%', 'a%c', 'aXc', 'a_c', 'abc', 'b', 'empty', 'é1', 'é2', 'ê']);
    expect(await kv.list('t/p', '', 0)).toEqual([]);

    expect(await kv.delete('t/p', 'abc')).toBe(true);
    expect(await kv.delete('t/p', 'abc')).toBe(false);
    expect(await kv.get('t/p', 'abc')).toBeNull();
    await expect(kv.set('t/p', '', bytes(1), 1e6)).rejects.toMatchObject({ code: 'PADDOCK_BAD_REQUEST' });
    await expect(kv.set('t/p', 'x'.repeat(1025), bytes(1), 1e6)).rejects.toMatchObject({ code: 'PADDOCK_BAD_REQUEST' });

    await kv.clear('t/p');
    expect([await kv.list('t/p', '', 100), await kv.usage('t/p')]).toEqual([[], 0]);
    expect(await kv.list('t/other', '', 100)).toEqual(['a%zz']);
  });

  it('KV: enforces the quota on key + value bytes and accounts usage across overwrite and delete', async () => {
    const { kv } = open();
    await kv.set('t/p', 'ab', bytes(1, 2, 3), 10); // 2 + 3
    expect(await kv.usage('t/p')).toBe(5);
    await kv.set('t/p', 'é', bytes(1, 2), 10); // 'é' is 2 UTF-8 bytes: 5 + 4
    expect(await kv.usage('t/p')).toBe(9);
    await expect(kv.set('t/p', 'c', bytes(1), 10)).rejects.toMatchObject({ code: 'PADDOCK_QUOTA_EXCEEDED', message: 'KV write needs 11 bytes; the quota is 10' });
    expect([await kv.get('t/p', 'c'), await kv.usage('t/p')]).toEqual([null, 9]);
    await kv.set('t/p', 'ab', bytes(1, 2, 3, 4), 10); // overwrite: 9 - 5 + 6
    expect(await kv.usage('t/p')).toBe(10);
    await expect(kv.set('t/p', 'ab', bytes(1, 2, 3, 4, 5), 10)).rejects.toMatchObject({ code: 'PADDOCK_QUOTA_EXCEEDED' });
    expect(await kv.get('t/p', 'ab')).toEqual(bytes(1, 2, 3, 4));
    await kv.set('t/p', 'ab', bytes(), 10); // shrink: 10 - 6 + 2
    expect(await kv.usage('t/p')).toBe(6);
    expect(await kv.delete('t/p', 'é')).toBe(true);
    expect(await kv.usage('t/p')).toBe(2);
    expect(await kv.usage('t/other')).toBe(0);
    await kv.set('t/other', 'ab', bytes(1, 2, 3, 4, 5, 6, 7, 8), 10); // namespaces have separate budgets
    expect([await kv.usage('t/p'), await kv.usage('t/other')]).toEqual([2, 10]);
  });

  it('deleteTenant also drops its keys, plugins, wasm, quarantine rows and KV namespaces, and nothing else', async () => {
    const s = open();
    for (const t of ['acme', 'acme2']) {
      s.createTenant({ name: t, grants: {}, quotas: {} });
      s.addApiKey(t, `hash-${t}`);
      s.putWasm(`d-${t}`, bytes(1));
      s.upsertPlugin(plugin(t, 'echo', `d-${t}`));
      s.saveQuarantine(t, 'echo', { strikes: 1 });
      await s.kv.set(`${t}/echo`, 'k', bytes(1), 100);
    }
    await s.kv.set('acme', 'k', bytes(1), 100); // not "acme/...": untouched
    expect(s.deleteTenant('acme')).toBe(true);
    expect([s.findTenantByKeyHash('hash-acme'), s.listPlugins('acme'), s.getWasm('d-acme')]).toEqual([null, [], null]);
    expect(s.listQuarantine().map((r) => r.tenant)).toEqual(['acme2']);
    expect([await s.kv.get('acme/echo', 'k'), await s.kv.usage('acme/echo')]).toEqual([null, 0]);
    expect(await s.kv.get('acme', 'k')).toEqual(bytes(1));
    expect([s.findTenantByKeyHash('hash-acme2'), s.listPlugins('acme2').length, s.getWasm('d-acme2')]).toEqual(['acme2', 1, bytes(1)]);
    expect([await s.kv.get('acme2/echo', 'k'), await s.kv.usage('acme2/echo')]).toEqual([bytes(1), 2]);
  });

  it('keeps everything across close and reopen', async () => {
    const s = open();
    s.createTenant({ name: 'acme', grants: { g: 1 }, quotas: { q: 2 } });
    s.addApiKey('acme', 'h1');
    s.putWasm('d1', bytes(0, 0x61, 0x73, 0x6d));
    const p = s.upsertPlugin({ ...plugin('acme', 'echo', 'd1'), signedBy: 'pub' });
    s.saveQuarantine('acme', 'echo', { strikes: 2 });
    s.setSetting('secret', 's3');
    await s.kv.set('acme/echo', 'k', bytes(4, 5), 100);
    const before = { tenants: s.listTenants(), quarantine: s.listQuarantine() };
    s.checkpoint();
    s.close();
    s.close(); // idempotent

    const r = open();
    expect({ tenants: r.listTenants(), quarantine: r.listQuarantine() }).toEqual(before);
    expect(r.findTenantByKeyHash('h1')).toBe('acme');
    expect(r.getPlugin('acme', 'echo')).toEqual(p);
    expect(r.getWasm('d1')).toEqual(bytes(0, 0x61, 0x73, 0x6d));
    expect(r.getSetting('secret')).toBe('s3');
    expect([await r.kv.get('acme/echo', 'k'), await r.kv.usage('acme/echo')]).toEqual([bytes(4, 5), 3]);
  });

  it('every acknowledged write survives a kill -9 of the writing process', async () => {
    const script = fileURLToPath(new URL('./fixtures/sqlite-writer.mjs', import.meta.url));
    const child = spawn(process.execPath, [script, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const acked: number[] = [];
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const l of lines) acked.push(Number(l));
      if (acked.length >= 50) child.kill('SIGKILL');
    });
    const guard = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [code, signal] = await new Promise<[number | null, string | null]>((res) => child.on('close', (c, s) => res([c, s])));
    clearTimeout(guard);
    expect(err).toBe('');
    expect(signal).toBe('SIGKILL');
    expect(code).toBeNull();
    expect(acked.length).toBeGreaterThanOrEqual(50);
    expect(acked.length).toBeLessThan(200); // killed mid-way, not after the last write
    expect(acked).toEqual(acked.map((_, i) => i));

    const s = open();
    for (const i of acked) {
      if (i % 2 === 0) {
        expect(await s.kv.get('t/p', `k${i}`)).toEqual(bytes(i & 0xff, 7, 7));
      } else {
        expect(s.getPlugin('t', `p${i}`)).toMatchObject({ version: `1.${i}`, digest: `d${i}`, manifest: { i }, enabled: true });
        expect(s.getWasm(`d${i}`)).toEqual(bytes(0, 0x61, 0x73, 0x6d, i & 0xff));
      }
    }
    // Usage bookkeeping is consistent with what is actually stored (no torn transaction).
    const keys = await s.kv.list('t/p', '', 1000);
    expect(keys.length).toBeGreaterThanOrEqual(acked.filter((i) => i % 2 === 0).length);
    expect(await s.kv.usage('t/p')).toBe(keys.reduce((n, k) => n + k.length + 3, 0));
  });
});

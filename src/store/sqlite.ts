// Paddock's durable state: one SQLite file, <dataDir>/paddock.db. WAL + synchronous=FULL means
// every committed transaction is on disk before the call returns, so an answered write survives
// a restart, a kill -9 and a power cut. All calls are synchronous (better-sqlite3); the KvStore
// view wraps them in promises to fit its interface.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { PaddockError } from '../errors.js';
import { type KvStore, quotaError, validateKey } from './kv.js';

export interface TenantRow { name: string; grants: unknown; quotas: unknown; createdAt: string }
export interface ApiKeyRow { id: string; tenant: string; createdAt: string; revokedAt: string | null }
export interface PluginRow { tenant: string; name: string; version: string; digest: string; manifest: unknown; enabled: boolean; installedAt: string; signedBy: string | null }
export interface QuarantineRow { tenant: string; plugin: string; state: unknown; updatedAt: string }

/** Append-only: never edit a shipped entry; version N is MIGRATIONS[N - 1]. */
const MIGRATIONS: string[] = [
  `CREATE TABLE tenants (name TEXT PRIMARY KEY, grants TEXT NOT NULL, quotas TEXT NOT NULL, created_at TEXT NOT NULL);
   CREATE TABLE api_keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
     created_at TEXT NOT NULL, revoked_at TEXT);
   CREATE INDEX api_keys_tenant ON api_keys (tenant);
   CREATE TABLE wasm (digest TEXT PRIMARY KEY, bytes BLOB NOT NULL);
   CREATE TABLE plugins (tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL,
     manifest TEXT NOT NULL, enabled INTEGER NOT NULL, installed_at TEXT NOT NULL, signed_by TEXT,
     PRIMARY KEY (tenant, name));
   CREATE INDEX plugins_digest ON plugins (digest);
   CREATE TABLE quarantine (tenant TEXT NOT NULL, plugin TEXT NOT NULL, state TEXT NOT NULL, updated_at TEXT NOT NULL,
     PRIMARY KEY (tenant, plugin));
   CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;
   CREATE TABLE kv_usage (ns TEXT PRIMARY KEY, bytes INTEGER NOT NULL);`,
];

const now = (): string => new Date().toISOString();
const toJson = (v: unknown): string => JSON.stringify(v ?? null);
const bytesOf = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

/** Smallest byte string above every string starting with `prefix` (UTF-8 never contains 0xFF). */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1] += 1;
  return end;
}

type Row = Record<string, any>;
const tenantRow = (r: Row): TenantRow =>
  ({ name: r.name, grants: JSON.parse(r.grants), quotas: JSON.parse(r.quotas), createdAt: r.created_at });
const pluginRow = (r: Row): PluginRow => ({
  tenant: r.tenant, name: r.name, version: r.version, digest: r.digest, manifest: JSON.parse(r.manifest),
  enabled: r.enabled === 1, installedAt: r.installed_at, signedBy: r.signed_by ?? null,
});

function prepareAll<T extends Record<string, string>>(db: Database.Database, sql: T): { [K in keyof T]: Database.Statement } {
  return Object.fromEntries(Object.entries(sql).map(([k, s]) => [k, db.prepare(s)])) as { [K in keyof T]: Database.Statement };
}

function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const current = (db.prepare('SELECT max(version) AS v FROM schema_version').get() as Row).v ?? 0;
  if (current > MIGRATIONS.length) {
    throw new PaddockError('PADDOCK_INTERNAL', `paddock.db has schema version ${current}; this build knows up to ${MIGRATIONS.length}`);
  }
  for (let v = current + 1; v <= MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v - 1]!);
      db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(v);
    })();
  }
}

const KV_SQL = {
  get: 'SELECT value FROM kv WHERE ns = ? AND key = ?',
  size: 'SELECT length(value) AS n FROM kv WHERE ns = ? AND key = ?',
  put: 'INSERT INTO kv (ns, key, value) VALUES (?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value',
  del: 'DELETE FROM kv WHERE ns = ? AND key = ?',
  // A range instead of LIKE: no wildcards to escape, case-sensitive, and it uses the primary key.
  listAll: 'SELECT key FROM kv WHERE ns = ? ORDER BY key LIMIT ?',
  listPrefix: 'SELECT key FROM kv WHERE ns = ? AND key >= ? AND key < CAST(? AS TEXT) ORDER BY key LIMIT ?',
  usage: 'SELECT bytes FROM kv_usage WHERE ns = ?',
  setUsage: 'INSERT INTO kv_usage (ns, bytes) VALUES (?, ?) ON CONFLICT (ns) DO UPDATE SET bytes = excluded.bytes',
  clear: 'DELETE FROM kv WHERE ns = ?',
  clearUsage: 'DELETE FROM kv_usage WHERE ns = ?',
};

/** Plugin KV on the shared database. Keys sort by UTF-8 bytes. `close()` is a no-op: the SqliteStore owns the connection. */
export class SqliteKvStore implements KvStore {
  readonly #db: Database.Database;
  readonly #q: ReturnType<typeof prepareAll<typeof KV_SQL>>;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#q = prepareAll(db, KV_SQL);
  }

  #usage(ns: string): number {
    return (this.#q.usage.get(ns) as Row | undefined)?.bytes ?? 0;
  }

  async get(ns: string, key: string): Promise<Uint8Array | null> {
    const row = this.#q.get.get(ns, key) as Row | undefined;
    return row ? bytesOf(row.value) : null;
  }

  async set(ns: string, key: string, value: Uint8Array, quotaBytes: number): Promise<void> {
    validateKey(key);
    this.#db.transaction(() => {
      const keyBytes = Buffer.byteLength(key);
      const old = this.#q.size.get(ns, key) as Row | undefined;
      const next = this.#usage(ns) - (old ? old.n + keyBytes : 0) + value.byteLength + keyBytes;
      if (next > quotaBytes) throw quotaError(next, quotaBytes);
      this.#q.put.run(ns, key, value);
      this.#q.setUsage.run(ns, next);
    }).immediate();
  }

  async delete(ns: string, key: string): Promise<boolean> {
    return this.#db.transaction(() => {
      const old = this.#q.size.get(ns, key) as Row | undefined;
      if (!old) return false;
      this.#q.del.run(ns, key);
      this.#q.setUsage.run(ns, this.#usage(ns) - old.n - Buffer.byteLength(key));
      return true;
    }).immediate();
  }

  async list(ns: string, prefix: string, limit: number): Promise<string[]> {
    const max = Number.isFinite(limit) ? Math.max(0, Math.trunc(limit)) : -1;
    const rows = prefix === ''
      ? this.#q.listAll.all(ns, max)
      : this.#q.listPrefix.all(ns, prefix, prefixEnd(prefix), max);
    return (rows as Row[]).map((r) => r.key);
  }

  async usage(ns: string): Promise<number> {
    return this.#usage(ns);
  }

  async clear(ns: string): Promise<void> {
    this.#db.transaction(() => {
      this.#q.clear.run(ns);
      this.#q.clearUsage.run(ns);
    }).immediate();
  }

  async close(): Promise<void> {}
}

const SQL = {
  insertTenant: 'INSERT INTO tenants (name, grants, quotas, created_at) VALUES (?, ?, ?, ?)',
  updateTenant: 'UPDATE tenants SET grants = ?, quotas = ? WHERE name = ?',
  getTenant: 'SELECT * FROM tenants WHERE name = ?',
  listTenants: 'SELECT * FROM tenants ORDER BY name',
  deleteTenant: 'DELETE FROM tenants WHERE name = ?',
  deleteTenantKeys: 'DELETE FROM api_keys WHERE tenant = ?',
  tenantDigests: 'SELECT DISTINCT digest FROM plugins WHERE tenant = ?',
  deleteTenantPlugins: 'DELETE FROM plugins WHERE tenant = ?',
  deleteTenantQuarantine: 'DELETE FROM quarantine WHERE tenant = ?',
  // Namespaces "<tenant>/...": '0' is the byte after '/'.
  deleteTenantKv: 'DELETE FROM kv WHERE ns >= ? AND ns < ?',
  deleteTenantKvUsage: 'DELETE FROM kv_usage WHERE ns >= ? AND ns < ?',
  insertKey: 'INSERT INTO api_keys (id, tenant, key_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, NULL)',
  revokeKeys: 'UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND revoked_at IS NULL',
  findKey: 'SELECT tenant FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL',
  putWasm: 'INSERT OR IGNORE INTO wasm (digest, bytes) VALUES (?, ?)',
  getWasm: 'SELECT bytes FROM wasm WHERE digest = ?',
  gcWasm: 'DELETE FROM wasm WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM plugins WHERE digest = ?)',
  upsertPlugin: `INSERT INTO plugins (tenant, name, version, digest, manifest, enabled, installed_at, signed_by)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, name) DO UPDATE SET version = excluded.version,
    digest = excluded.digest, manifest = excluded.manifest, enabled = excluded.enabled,
    installed_at = excluded.installed_at, signed_by = excluded.signed_by`,
  setEnabled: 'UPDATE plugins SET enabled = ? WHERE tenant = ? AND name = ?',
  getPlugin: 'SELECT * FROM plugins WHERE tenant = ? AND name = ?',
  listPlugins: 'SELECT * FROM plugins ORDER BY tenant, name',
  listTenantPlugins: 'SELECT * FROM plugins WHERE tenant = ? ORDER BY name',
  deletePlugin: 'DELETE FROM plugins WHERE tenant = ? AND name = ?',
  saveQuarantine: `INSERT INTO quarantine (tenant, plugin, state, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (tenant, plugin) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
  deleteQuarantine: 'DELETE FROM quarantine WHERE tenant = ? AND plugin = ?',
  listQuarantine: 'SELECT * FROM quarantine ORDER BY tenant, plugin',
  getSetting: 'SELECT value FROM settings WHERE key = ?',
  setSetting: 'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
};

export class SqliteStore {
  readonly kv: KvStore;
  readonly #db: Database.Database;
  readonly #q: ReturnType<typeof prepareAll<typeof SQL>>;

  private constructor(db: Database.Database) {
    this.#db = db;
    this.#q = prepareAll(db, SQL);
    this.kv = new SqliteKvStore(db);
  }

  static open(dataDir: string): SqliteStore {
    mkdirSync(dataDir, { recursive: true });
    const db = new Database(join(dataDir, 'paddock.db'));
    try {
      if (db.pragma('journal_mode = WAL', { simple: true }) !== 'wal') throw new Error('SQLite refused WAL mode');
      db.pragma('synchronous = FULL'); // fsync the WAL on every commit
      db.pragma('busy_timeout = 5000');
      migrate(db);
      return new SqliteStore(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  // --- tenants ---

  createTenant(row: { name: string; grants: unknown; quotas: unknown }): TenantRow {
    if (row.name === '' || row.name.includes('/')) {
      throw new PaddockError('PADDOCK_BAD_REQUEST', `tenant name "${row.name}" must be non-empty and contain no "/"`);
    }
    return this.#db.transaction(() => {
      if (this.getTenant(row.name)) throw new PaddockError('PADDOCK_BAD_REQUEST', `tenant "${row.name}" already exists`);
      this.#q.insertTenant.run(row.name, toJson(row.grants), toJson(row.quotas), now());
      return this.getTenant(row.name)!;
    }).immediate();
  }

  updateTenant(name: string, patch: { grants?: unknown; quotas?: unknown }): TenantRow {
    return this.#db.transaction(() => {
      const cur = this.getTenant(name);
      if (!cur) throw new PaddockError('PADDOCK_NOT_FOUND', `no tenant "${name}"`);
      this.#q.updateTenant.run(toJson(patch.grants !== undefined ? patch.grants : cur.grants),
        toJson(patch.quotas !== undefined ? patch.quotas : cur.quotas), name);
      return this.getTenant(name)!;
    }).immediate();
  }

  getTenant(name: string): TenantRow | null {
    const r = this.#q.getTenant.get(name) as Row | undefined;
    return r ? tenantRow(r) : null;
  }

  listTenants(): TenantRow[] {
    return (this.#q.listTenants.all() as Row[]).map(tenantRow);
  }

  /** Removes the tenant with its API keys, plugins (and now-unreferenced wasm), quarantine rows and KV namespaces. */
  deleteTenant(name: string): boolean {
    return this.#db.transaction(() => {
      const digests = (this.#q.tenantDigests.all(name) as Row[]).map((r) => r.digest as string);
      this.#q.deleteTenantKeys.run(name);
      this.#q.deleteTenantPlugins.run(name);
      for (const d of digests) this.#q.gcWasm.run(d, d);
      this.#q.deleteTenantQuarantine.run(name);
      this.#q.deleteTenantKv.run(`${name}/`, `${name}0`);
      this.#q.deleteTenantKvUsage.run(`${name}/`, `${name}0`);
      return this.#q.deleteTenant.run(name).changes > 0;
    }).immediate();
  }

  // --- API keys (only SHA-256 hashes of the secrets) ---

  addApiKey(tenant: string, keyHash: string): ApiKeyRow {
    if (!this.getTenant(tenant)) throw new PaddockError('PADDOCK_NOT_FOUND', `no tenant "${tenant}"`);
    const row: ApiKeyRow = { id: randomBytes(9).toString('base64url'), tenant, createdAt: now(), revokedAt: null };
    try {
      this.#q.insertKey.run(row.id, tenant, keyHash, row.createdAt);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new PaddockError('PADDOCK_BAD_REQUEST', 'this API key is already registered', { cause: err });
      }
      throw err;
    }
    return row;
  }

  revokeApiKeys(tenant: string): number {
    return this.#q.revokeKeys.run(now(), tenant).changes;
  }

  findTenantByKeyHash(keyHash: string): string | null {
    return (this.#q.findKey.get(keyHash) as Row | undefined)?.tenant ?? null;
  }

  // --- plugins; wasm is content-addressed and shared between plugin rows ---

  putWasm(digest: string, bytes: Uint8Array): void {
    this.#q.putWasm.run(digest, bytes);
  }

  getWasm(digest: string): Uint8Array | null {
    const r = this.#q.getWasm.get(digest) as Row | undefined;
    return r ? bytesOf(r.bytes) : null;
  }

  /** Inserts or replaces the (tenant, name) row; a wasm blob the old version alone used is dropped. */
  upsertPlugin(row: Omit<PluginRow, 'installedAt'> & { installedAt?: string }): PluginRow {
    return this.#db.transaction(() => {
      const old = this.getPlugin(row.tenant, row.name);
      this.#q.upsertPlugin.run(row.tenant, row.name, row.version, row.digest, toJson(row.manifest),
        row.enabled ? 1 : 0, row.installedAt ?? now(), row.signedBy ?? null);
      if (old && old.digest !== row.digest) this.#q.gcWasm.run(old.digest, old.digest);
      return this.getPlugin(row.tenant, row.name)!;
    }).immediate();
  }

  setPluginEnabled(tenant: string, name: string, enabled: boolean): PluginRow {
    if (this.#q.setEnabled.run(enabled ? 1 : 0, tenant, name).changes === 0) {
      throw new PaddockError('PADDOCK_NOT_FOUND', `no plugin "${name}" for tenant "${tenant}"`);
    }
    return this.getPlugin(tenant, name)!;
  }

  getPlugin(tenant: string, name: string): PluginRow | null {
    const r = this.#q.getPlugin.get(tenant, name) as Row | undefined;
    return r ? pluginRow(r) : null;
  }

  listPlugins(tenant?: string): PluginRow[] {
    const rows = tenant === undefined ? this.#q.listPlugins.all() : this.#q.listTenantPlugins.all(tenant);
    return (rows as Row[]).map(pluginRow);
  }

  deletePlugin(tenant: string, name: string): boolean {
    return this.#db.transaction(() => {
      const old = this.getPlugin(tenant, name);
      if (!old) return false;
      this.#q.deletePlugin.run(tenant, name);
      this.#q.gcWasm.run(old.digest, old.digest);
      return true;
    }).immediate();
  }

  // --- quarantine state (opaque JSON per plugin) ---

  saveQuarantine(tenant: string, plugin: string, state: unknown | null): void {
    if (state === null || state === undefined) this.#q.deleteQuarantine.run(tenant, plugin);
    else this.#q.saveQuarantine.run(tenant, plugin, toJson(state), now());
  }

  listQuarantine(): QuarantineRow[] {
    return (this.#q.listQuarantine.all() as Row[]).map((r) =>
      ({ tenant: r.tenant, plugin: r.plugin, state: JSON.parse(r.state), updatedAt: r.updated_at }));
  }

  // --- settings ---

  getSetting(key: string): string | null {
    return (this.#q.getSetting.get(key) as Row | undefined)?.value ?? null;
  }

  setSetting(key: string, value: string): void {
    this.#q.setSetting.run(key, value);
  }

  /** Folds the WAL back into the main file and truncates it; call before a clean shutdown. */
  checkpoint(): void {
    this.#db.pragma('wal_checkpoint(TRUNCATE)');
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}

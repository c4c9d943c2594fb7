// The multi-tenant service behind the HTTP API and the CLI: the executor, the durable store and
// the per-tenant scheduler, kept consistent. Every state change is written to the store before
// it is acknowledged; at start-up the store is replayed into a fresh executor.

import { createHash, createPublicKey, randomBytes, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { PaddockError, toPaddockError } from '../errors.js';
import { createExecutor, type Executor, type IntentResult, type PluginInfo } from '../executor.js';
import { sha256Hex } from '../policy/audit.js';
import { formatZodError, parseManifestText } from '../policy/manifest.js';
import { SqliteStore } from '../store/sqlite.js';
import { type Quotas, quotasSchema, type ServerConfig, tenantInputSchema } from './config.js';
import { routePluginLogs } from './plugin-logs.js';
import { TenantScheduler } from './scheduler.js';

export type Principal = { kind: 'admin' } | { kind: 'tenant'; tenant: string };

export interface TenantView {
  name: string;
  quotas: Quotas;
  grants: unknown;
  createdAt: string;
}

export interface IntentInput {
  topic: string;
  payload?: unknown;
  idempotencyKey?: string;
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');
const SIGNATURE_DOMAIN = 'paddock-plugin-v1:';

/** What a publisher signs (ed25519): a domain tag and the module's sha256, so a signature cannot be replayed for other bytes. */
export function signaturePayload(digest: string): Buffer {
  return Buffer.from(`${SIGNATURE_DOMAIN}${digest}`);
}

function publicKeyFrom(text: string): KeyObject {
  const t = text.trim();
  if (t.startsWith('-----BEGIN')) return createPublicKey(t);
  const raw = Buffer.from(t, 'base64');
  if (raw.byteLength !== 32) throw new PaddockError('PADDOCK_BAD_REQUEST', 'an ed25519 public key is 32 bytes (base64) or PEM');
  // SPKI DER prefix for ed25519, then the raw key.
  return createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
}

export class Service {
  readonly executor: Executor;
  readonly store: SqliteStore;
  readonly scheduler = new TenantScheduler();
  readonly config: ServerConfig;
  #adminHash: string;
  #trusted: Map<string, KeyObject>;
  #log: Logger;
  #idempotency = new Map<string, { at: number; result: unknown }>();
  #principals = new Map<string, Principal>();
  #closing = false;
  #closed = false;

  private constructor(config: ServerConfig, store: SqliteStore, executor: Executor, adminToken: string, log: Logger) {
    this.config = config;
    this.store = store;
    this.executor = executor;
    this.#adminHash = hashToken(adminToken);
    this.#log = log;
    this.#trusted = new Map(Object.entries(config.trustedKeys).map(([id, key]) => [id, publicKeyFrom(key)]));
  }

  static async start(config: ServerConfig, log: Logger): Promise<{ service: Service; adminToken: string; adminTokenFile: string | null; newKeys: Array<{ name: string; apiKey: string }> }> {
    mkdirSync(config.dataDir, { recursive: true });
    const store = SqliteStore.open(config.dataDir);
    let adminToken = config.adminToken ?? process.env.PADDOCK_ADMIN_TOKEN;
    let adminTokenFile: string | null = null;
    if (!adminToken) {
      // No token configured: make one and keep it (owner-only) in the data directory.
      adminTokenFile = join(config.dataDir, 'admin-token');
      try {
        adminToken = readFileSync(adminTokenFile, 'utf8').trim();
      } catch {
        adminToken = `pda_${randomBytes(24).toString('base64url')}`;
        writeFileSync(adminTokenFile, `${adminToken}\n`, { mode: 0o600 });
      }
    }
    const executor = await createExecutor({ ...config.executor, kv: store.kv });
    const service = new Service(config, store, executor, adminToken, log);
    const newKeys = await service.#restore();
    executor.on('diagnostic', (d) => {
      log.warn({ diagnostic: d }, `plugin ${d.kind}`);
      if (d.kind === 'quarantined' || d.kind === 'quarantine-lifted') {
        store.saveQuarantine(d.tenant, d.plugin, executor.quarantineSnapshot(d.plugin, { tenant: d.tenant }));
      }
    });
    routePluginLogs(executor, log, config.pluginLogs, (tenant, plugin, n) => service.onPluginLogDropped(tenant, plugin, n));
    return { service, adminToken, adminTokenFile, newKeys };
  }

  async #restore(): Promise<Array<{ name: string; apiKey: string }>> {
    for (const t of this.store.listTenants()) this.#applyTenant(t.name, t.grants, t.quotas);
    const newKeys: Array<{ name: string; apiKey: string }> = [];
    for (const t of this.config.tenants) {
      if (this.store.getTenant(t.name)) {
        this.store.updateTenant(t.name, { grants: t.grants, quotas: t.quotas });
        this.#applyTenant(t.name, t.grants, t.quotas);
      } else {
        newKeys.push(this.createTenant(t));
      }
    }
    for (const row of this.store.listPlugins()) {
      const wasm = this.store.getWasm(row.digest);
      if (!wasm) {
        this.#log.error({ tenant: row.tenant, plugin: row.name }, 'stored plugin has no wasm; skipped');
        continue;
      }
      try {
        await this.executor.install(row.manifest, wasm, { tenant: row.tenant });
        if (!row.enabled) this.executor.setEnabled(row.name, false, { tenant: row.tenant });
      } catch (err) {
        this.#log.error({ tenant: row.tenant, plugin: row.name, err: toPaddockError(err).message }, 'stored plugin no longer installs; skipped');
      }
    }
    for (const q of this.store.listQuarantine()) {
      try {
        this.executor.restoreQuarantine(q.plugin, q.state as { state: string; openedAt: number }, { tenant: q.tenant });
      } catch {
        // plugin gone
      }
    }
    return newKeys;
  }

  #quotas(raw: unknown): Quotas {
    return quotasSchema.parse({ ...this.config.defaultQuotas, ...((raw ?? {}) as object) });
  }

  #applyTenant(name: string, grants: unknown, rawQuotas: unknown): void {
    const quotas = this.#quotas(rawQuotas);
    this.executor.setTenant(name, {
      grants: grants as never,
      quotas: { kvBytes: quotas.kvBytes, maxTimeoutMs: quotas.maxTimeoutMs, maxMemoryPages: quotas.maxMemoryPages },
    });
    this.scheduler.configure(name, quotas);
  }

  authenticate(header: string | undefined): Principal | null {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!m) return null;
    // Keyed by the token itself: a hit costs one map lookup instead of a hash and a query.
    // Entries are dropped whenever keys change (rotate, delete), and the map is bounded.
    const cached = this.#principals.get(m[1]);
    if (cached) return cached;
    const h = hashToken(m[1]);
    let principal: Principal | null = null;
    if (timingSafeEqual(Buffer.from(h), Buffer.from(this.#adminHash))) principal = { kind: 'admin' };
    else {
      const tenant = this.store.findTenantByKeyHash(h);
      if (tenant) principal = { kind: 'tenant', tenant };
    }
    // Only valid tokens are cached: a flood of wrong ones cannot evict the good ones.
    if (principal) {
      if (this.#principals.size >= 10_000) this.#principals.clear();
      this.#principals.set(m[1], principal);
    }
    return principal;
  }

  #newKey(tenant: string): string {
    const apiKey = `pdk_${randomBytes(24).toString('base64url')}`;
    this.store.addApiKey(tenant, hashToken(apiKey));
    return apiKey;
  }

  createTenant(input: unknown): { name: string; apiKey: string } {
    const parsed = tenantInputSchema.safeParse(input);
    if (!parsed.success) throw new PaddockError('PADDOCK_BAD_REQUEST', `invalid tenant: ${formatZodError(parsed.error)}`);
    const { name, grants, quotas } = parsed.data;
    if (name === 'default') throw new PaddockError('PADDOCK_BAD_REQUEST', 'invalid tenant: name: "default" is reserved');
    this.#quotas(quotas);
    this.store.createTenant({ name, grants, quotas });
    const apiKey = this.#newKey(name);
    this.#applyTenant(name, grants, quotas);
    return { name, apiKey };
  }

  listTenants(): TenantView[] {
    return this.store.listTenants().map((t) => ({ name: t.name, quotas: this.#quotas(t.quotas), grants: t.grants, createdAt: t.createdAt }));
  }

  getTenant(name: string): TenantView {
    const t = this.store.getTenant(name);
    if (!t) throw new PaddockError('PADDOCK_NOT_FOUND', `no tenant "${name}"`);
    return { name: t.name, quotas: this.#quotas(t.quotas), grants: t.grants, createdAt: t.createdAt };
  }

  rotateKey(name: string): { name: string; apiKey: string } {
    this.getTenant(name);
    this.store.revokeApiKeys(name);
    this.#principals.clear();
    return { name, apiKey: this.#newKey(name) };
  }

  deleteTenant(name: string): boolean {
    const existed = this.store.deleteTenant(name);
    this.#principals.clear();
    if (existed) {
      for (const p of this.executor.list({ tenant: name })) void this.executor.uninstall(p.name, { tenant: name });
      this.executor.removeTenant(name);
      this.scheduler.remove(name);
    }
    return existed;
  }

  #verifySignature(tenant: string, digest: string, signature: { keyId?: string; value: string } | undefined): string | null {
    const quotas = this.getTenant(tenant).quotas;
    if (!signature) {
      if (quotas.requireSigned) throw new PaddockError('PADDOCK_SIGNATURE_INVALID', 'this tenant installs only signed plugins; no signature given');
      return null;
    }
    const candidates = signature.keyId ? [[signature.keyId, this.#trusted.get(signature.keyId)] as const] : [...this.#trusted.entries()];
    const sig = Buffer.from(signature.value, 'base64');
    for (const [id, key] of candidates) {
      if (key && sig.byteLength === 64 && verify(null, signaturePayload(digest), key, sig)) return id;
    }
    throw new PaddockError('PADDOCK_SIGNATURE_INVALID', signature.keyId && !this.#trusted.has(signature.keyId) ? `publisher key "${signature.keyId}" is not trusted` : 'the signature does not verify against any trusted publisher key');
  }

  async installPlugin(tenant: string, manifestInput: unknown, wasm: Uint8Array, signature?: { keyId?: string; value: string }): Promise<PluginInfo & { signedBy: string | null }> {
    this.#assertOpen();
    const manifest = typeof manifestInput === 'string' ? parseManifestText(manifestInput) : manifestInput;
    const signedBy = this.#verifySignature(tenant, sha256Hex(wasm), signature);
    const previous = this.store.getPlugin(tenant, (manifest as { name?: string })?.name ?? '');
    // Validate, audit and compile first: nothing is stored for a plugin that would not install.
    const info = await this.executor.install(manifest, wasm, { tenant });
    if (previous && !previous.enabled) this.executor.setEnabled(info.name, false, { tenant });
    try {
      this.store.putWasm(info.digest, wasm);
      this.store.upsertPlugin({ tenant, name: info.name, version: info.version, digest: info.digest, manifest: info.manifest, enabled: previous?.enabled ?? true, signedBy });
    } catch (err) {
      await this.executor.uninstall(info.name, { tenant });
      throw err;
    }
    return { ...this.executor.get(info.name, { tenant }), signedBy };
  }

  listPlugins(tenant: string): Array<PluginInfo & { signedBy: string | null }> {
    return this.executor.list({ tenant }).map((p) => ({ ...p, signedBy: this.store.getPlugin(tenant, p.name)?.signedBy ?? null }));
  }

  getPlugin(tenant: string, name: string): PluginInfo & { signedBy: string | null } {
    const info = this.executor.get(name, { tenant });
    return { ...info, signedBy: this.store.getPlugin(tenant, name)?.signedBy ?? null };
  }

  setEnabled(tenant: string, name: string, enabled: boolean): PluginInfo & { signedBy: string | null } {
    this.executor.get(name, { tenant });
    this.store.setPluginEnabled(tenant, name, enabled);
    this.executor.setEnabled(name, enabled, { tenant });
    return this.getPlugin(tenant, name);
  }

  /** Re-instantiates from the stored bytes: fresh instances everywhere, init failures forgiven, quarantine lifted. */
  async reload(tenant: string, name: string): Promise<PluginInfo & { signedBy: string | null }> {
    const row = this.store.getPlugin(tenant, name);
    if (!row) throw new PaddockError('PADDOCK_NOT_FOUND', `no plugin "${name}"`);
    const wasm = this.store.getWasm(row.digest);
    if (!wasm) throw new PaddockError('PADDOCK_INTERNAL', `stored wasm for "${name}" is missing`);
    await this.executor.install(row.manifest, wasm, { tenant });
    if (!row.enabled) this.executor.setEnabled(name, false, { tenant });
    this.executor.releaseQuarantine(name, { tenant });
    this.store.saveQuarantine(tenant, name, null);
    return this.getPlugin(tenant, name);
  }

  async removePlugin(tenant: string, name: string): Promise<void> {
    this.executor.get(name, { tenant });
    this.store.deletePlugin(tenant, name);
    this.store.saveQuarantine(tenant, name, null);
    await this.executor.uninstall(name, { tenant });
  }

  /** Told about plugin log lines dropped by the per-plugin log rate limit. */
  onPluginLogDropped: (tenant: string, plugin: string, n: number) => void = () => {};

  /** Told about calls refused at admission (429s), which never reach the executor. */
  onAdmissionRefused: (tenant: string, code: string) => void = () => {};

  call(tenant: string, plugin: string, fn: string, input: Uint8Array): Promise<Uint8Array> {
    this.#assertOpen();
    // Cheap refusals (unknown plugin or function) must not spend the tenant's rate.
    this.executor.get(plugin, { tenant });
    return this.#admit(tenant, () => this.executor.call(plugin, fn, input, { tenant }));
  }

  #admit<T>(tenant: string, work: () => Promise<T>): Promise<T> {
    return this.scheduler.run(tenant, work).catch((err: unknown) => {
      const code = (err as { code?: string }).code;
      if (code === 'PADDOCK_RATE_LIMITED' || code === 'PADDOCK_QUEUE_FULL') this.onAdmissionRefused(tenant, code);
      throw err;
    });
  }

  async intents(tenant: string, items: IntentInput[]): Promise<Array<{ topic: string; idempotencyKey?: string; duplicate?: boolean; result?: IntentResult; error?: { code: string; message: string } }>> {
    this.#assertOpen();
    const out = [];
    const now = Date.now();
    for (const [k, v] of this.#idempotency) if (now - v.at > 24 * 3600_000) this.#idempotency.delete(k);
    for (const item of items) {
      const key = item.idempotencyKey ? `${tenant}\u0000${item.idempotencyKey}` : null;
      const seen = key ? this.#idempotency.get(key) : undefined;
      if (seen) {
        out.push({ topic: item.topic, idempotencyKey: item.idempotencyKey, duplicate: true, ...(seen.result as object) });
        continue;
      }
      const payload = typeof item.payload === 'string' ? new TextEncoder().encode(item.payload) : new TextEncoder().encode(JSON.stringify(item.payload ?? null));
      try {
        const result = await this.#admit(tenant, () => this.executor.emitIntent(item.topic, payload, { tenant }));
        if (key) {
          if (this.#idempotency.size >= 100_000) this.#idempotency.delete(this.#idempotency.keys().next().value as string);
          this.#idempotency.set(key, { at: now, result: { result } });
        }
        out.push({ topic: item.topic, idempotencyKey: item.idempotencyKey, result });
      } catch (err) {
        const e = toPaddockError(err);
        out.push({ topic: item.topic, idempotencyKey: item.idempotencyKey, error: { code: e.code, message: e.message } });
      }
    }
    return out;
  }

  async kvKeys(tenant: string, plugin: string, prefix: string, limit: number): Promise<{ keys: string[]; usageBytes: number }> {
    this.executor.get(plugin, { tenant });
    const ns = `${tenant}/${plugin}`;
    return { keys: await this.store.kv.list(ns, prefix, limit), usageBytes: await this.store.kv.usage(ns) };
  }

  async kvGet(tenant: string, plugin: string, key: string): Promise<Uint8Array> {
    this.executor.get(plugin, { tenant });
    const value = await this.store.kv.get(`${tenant}/${plugin}`, key);
    if (!value) throw new PaddockError('PADDOCK_NOT_FOUND', `no key "${key}"`);
    return value;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /** Stop taking new work (answers 503 from here on); calls already admitted go on. */
  beginShutdown(): void {
    this.#closing = true;
  }

  get ready(): boolean {
    return !this.#closing && this.executor.workerThreadIds.length > 0;
  }

  #assertOpen(): void {
    if (this.#closing) throw new PaddockError('PADDOCK_SHUTTING_DOWN', 'the server is shutting down');
  }

  /** Drains calls in flight, stops the workers, flushes the store. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing = true;
    await this.scheduler.drain();
    await this.executor.close();
    this.store.checkpoint();
    this.store.close();
  }
}

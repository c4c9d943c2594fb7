import { generateKeyPairSync, sign } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../dist/server/index.js';
import { signaturePayload } from '../dist/server/service.js';
import { fixture } from './helpers/wat.js';
import { ADMIN, boot, client, install, newTenant, plugin, removeDir, tempDir } from './helpers/server.js';
import { createHash } from 'node:crypto';

let dir: string;
let server: RunningServer;
let api: ReturnType<typeof client>;
let vowels: Uint8Array;
const publisher = generateKeyPairSync('ed25519');
const publicKeyPem = publisher.publicKey.export({ format: 'pem', type: 'spki' }).toString();

beforeAll(async () => {
  dir = await tempDir();
  server = await boot(dir, { trustedKeys: { acme: publicKeyPem }, bodyLimitBytes: 2 * 1024 * 1024 });
  api = client(server.url);
  vowels = await plugin('count-vowels');
});
afterAll(async () => {
  await server.close();
  await removeDir(dir);
});

const manifest = (name: string, extra: Record<string, unknown> = {}) => ({ name, version: '1.0.0', exports: ['count_vowels'], ...extra });

describe('HTTP API: plugin lifecycle per tenant', () => {
  it('creates a tenant, installs (JSON and multipart), lists, shows, calls, disables, enables, reloads, removes', async () => {
    const r0 = await api('POST', '/v1/tenants', { token: ADMIN, json: { name: 'life', grants: { kv: { read: true, write: true } } } });
    expect(r0.status).toBe(201);
    expect(r0.json.name).toBe('life');
    expect(r0.json.apiKey).toMatch(/^pdk_/);
    const key = r0.json.apiKey;
    expect((await api('GET', '/v1/tenants', { token: ADMIN })).json.tenants.map((t: { name: string }) => t.name)).toContain('life');

    const installed = await install(api, key, manifest('vowels'), vowels);
    expect(installed.status).toBe(201);
    expect(installed.json).toMatchObject({ name: 'vowels', version: '1.0.0', enabled: true, tenant: 'life' });
    expect(installed.json.digest).toBe(createHash('sha256').update(vowels).digest('hex'));

    const form = new FormData();
    form.append('manifest', 'name: greet\nversion: 2.0.0\nconfig:\n  greeting: Hey\n');
    form.append('wasm', new Blob([await plugin('greet')]), 'greet.wasm');
    const multi = await api('POST', '/v1/plugins', { token: key, body: form });
    expect(multi.status).toBe(201);
    expect(multi.json.version).toBe('2.0.0');

    const list = await api('GET', '/v1/plugins', { token: key });
    expect(list.json.plugins.map((p: { name: string }) => p.name).sort()).toEqual(['greet', 'vowels']);
    const show = await api('GET', '/v1/plugins/vowels', { token: key });
    expect(show.json).toMatchObject({ name: 'vowels', quarantine: { state: 'closed', violations: 0 } });

    const call = await api('POST', '/v1/plugins/vowels/call/count_vowels', { token: key, body: 'Hello World', type: 'text/plain' });
    expect(call.status).toBe(200);
    expect(call.headers.get('content-type')).toBe('application/octet-stream');
    expect(JSON.parse(call.text)).toMatchObject({ count: 3 });
    const greet = await api('POST', '/v1/plugins/greet/call/greet', { token: key, body: new Uint8Array([65, 100, 97]) });
    expect(greet.text).toBe('Hey, Ada!');

    expect((await api('POST', '/v1/plugins/vowels/disable', { token: key })).json.enabled).toBe(false);
    const disabled = await api('POST', '/v1/plugins/vowels/call/count_vowels', { token: key, body: 'x' });
    expect([disabled.status, disabled.json.error.code]).toEqual([409, 'PADDOCK_DISABLED']);
    expect((await api('POST', '/v1/plugins/vowels/enable', { token: key })).json.enabled).toBe(true);
    expect((await api('POST', '/v1/plugins/vowels/reload', { token: key })).status).toBe(200);
    expect((await api('POST', '/v1/plugins/vowels/call/count_vowels', { token: key, body: 'aaa' })).status).toBe(200);

    expect((await api('DELETE', '/v1/plugins/vowels', { token: key })).status).toBe(204);
    const gone = await api('GET', '/v1/plugins/vowels', { token: key });
    expect([gone.status, gone.json.error.code]).toEqual([404, 'PADDOCK_NOT_FOUND']);
  });

  it('shows a plugin without running its code, and exposes the plugin KV to its own tenant', async () => {
    const key = await newTenant(api, 'kvt', { grants: { kv: { read: true, write: true } } });
    const counter = await plugin('kv-counter');
    expect((await install(api, key, { name: 'counter', version: '1.0.0', capabilities: { kv: { read: true, write: true } } }, counter)).status).toBe(201);
    await api('POST', '/v1/plugins/counter/call/incr', { token: key, body: 'hits' });
    await api('POST', '/v1/plugins/counter/call/incr', { token: key, body: 'hits' });
    const keys = await api('GET', '/v1/plugins/counter/kv', { token: key });
    expect(keys.json.keys).toEqual(['hits']);
    expect(keys.json.usageBytes).toBeGreaterThan(0);
    expect((await api('GET', '/v1/plugins/counter/kv/hits', { token: key })).text).toBe('2');
    expect((await api('GET', '/v1/plugins/counter/kv/nope', { token: key })).status).toBe(404);
  });
});

describe('HTTP API: authentication and cross-tenant isolation', () => {
  it('answers 401 for a missing or wrong key, and for a tenant key on admin routes', async () => {
    for (const token of [undefined, 'nope', 'pdk_forged']) {
      const r = await api('GET', '/v1/plugins', { token });
      expect([r.status, r.json.error.code]).toEqual([401, 'PADDOCK_UNAUTHORIZED']);
    }
    const key = await newTenant(api, 'plain');
    expect((await api('GET', '/v1/tenants', { token: key })).status).toBe(401);
    expect((await api('POST', '/v1/tenants', { token: key, json: { name: 'evil' } })).status).toBe(401);
    expect((await api('GET', '/v1/plugins', { token: ADMIN })).status).toBe(401);
    expect((await api('GET', '/healthz')).status).toBe(200);
  });

  it("every route tried with tenant B's key on tenant A's plugin answers 404, as if it did not exist", async () => {
    const a = await newTenant(api, 'tenant-a', { grants: { kv: { read: true, write: true } } });
    const b = await newTenant(api, 'tenant-b', { grants: { kv: { read: true, write: true } } });
    await install(api, a, { name: 'secret', version: '1.0.0', capabilities: { kv: { read: true, write: true } } }, await plugin('kv-counter'));
    await api('POST', '/v1/plugins/secret/call/incr', { token: a, body: 'k' });
    const routes: Array<[string, string]> = [
      ['GET', '/v1/plugins/secret'],
      ['POST', '/v1/plugins/secret/enable'],
      ['POST', '/v1/plugins/secret/disable'],
      ['POST', '/v1/plugins/secret/reload'],
      ['DELETE', '/v1/plugins/secret'],
      ['POST', '/v1/plugins/secret/call/incr'],
      ['GET', '/v1/plugins/secret/kv'],
      ['GET', '/v1/plugins/secret/kv/k'],
    ];
    for (const [method, path] of routes) {
      const r = await api(method, path, { token: b, ...(method === 'POST' ? { body: 'k' } : {}) });
      expect([method, path, r.status, r.json?.error?.code]).toEqual([method, path, 404, 'PADDOCK_NOT_FOUND']);
    }
    expect((await api('GET', '/v1/plugins', { token: b })).json.plugins).toEqual([]);
    // B installing a plugin of the same name gets its own, with its own KV.
    await install(api, b, { name: 'secret', version: '1.0.0', capabilities: { kv: { read: true, write: true } } }, await plugin('kv-counter'));
    expect((await api('POST', '/v1/plugins/secret/call/incr', { token: b, body: 'k' })).text).toBe('1');
    expect((await api('POST', '/v1/plugins/secret/call/incr', { token: a, body: 'k' })).text).toBe('2');
    // A's plugin is intact after B tried everything.
    expect((await api('GET', '/v1/plugins/secret', { token: a })).json.enabled).toBe(true);
  });

  it('rotates a key: the old one stops working, the new one works', async () => {
    const old = await newTenant(api, 'rot');
    const r = await api('POST', '/v1/tenants/rot/rotate-key', { token: ADMIN });
    expect(r.json.apiKey).toMatch(/^pdk_/);
    expect((await api('GET', '/v1/plugins', { token: old })).status).toBe(401);
    expect((await api('GET', '/v1/plugins', { token: r.json.apiKey })).status).toBe(200);
  });
});

describe('HTTP API: bad input gets a clear 4xx, never a 500', () => {
  it('malformed JSON, wrong content type, oversize body, invalid manifest, corrupt or truncated wasm, unknown plugin or function', async () => {
    const key = await newTenant(api, 'bad');
    const expectError = (r: { status: number; json: { error: { code: string; message: string } } }, status: number, code: string) => {
      expect([r.status, r.json.error.code]).toEqual([status, code]);
      expect(r.json.error.message.length).toBeGreaterThan(0);
    };
    expectError(await api('POST', '/v1/plugins', { token: key, body: '{"manifest":', type: 'application/json' }), 400, 'PADDOCK_BAD_REQUEST');
    expectError(await api('POST', '/v1/plugins', { token: key, body: 'hello', type: 'text/csv' }), 415, 'PADDOCK_BAD_REQUEST');
    expectError(await api('POST', '/v1/plugins', { token: key, body: 'x'.repeat(3 * 1024 * 1024), type: 'application/json' }), 413, 'PADDOCK_INPUT_TOO_LARGE');
    expectError(await install(api, key, { name: 'x' }, vowels), 400, 'PADDOCK_INVALID_MANIFEST');
    expectError(await install(api, key, manifest('x'), new TextEncoder().encode('garbage')), 400, 'PADDOCK_INVALID_WASM');
    expectError(await install(api, key, manifest('x'), vowels.subarray(0, vowels.byteLength - 7)), 400, 'PADDOCK_INVALID_WASM');
    expectError(await api('POST', '/v1/plugins', { token: key, json: { manifest: manifest('x'), wasm: '!!not base64!!' } }), 400, 'PADDOCK_BAD_REQUEST');
    expectError(await api('POST', '/v1/plugins', { token: key, json: { wasm: 'AAAA' } }), 400, 'PADDOCK_BAD_REQUEST');
    expectError(await install(api, key, manifest('x', { exports: ['missing'] }), vowels), 404, 'PADDOCK_NO_SUCH_EXPORT');
    expectError(await api('POST', '/v1/plugins/nothing/call/run', { token: key, body: 'x' }), 404, 'PADDOCK_NOT_FOUND');
    await install(api, key, manifest('v'), vowels);
    expectError(await api('POST', '/v1/plugins/v/call/not_there', { token: key, body: 'x' }), 404, 'PADDOCK_NO_SUCH_EXPORT');
    expectError(await api('POST', '/v1/tenants', { token: ADMIN, json: { name: 'Bad Name!' } }), 400, 'PADDOCK_BAD_REQUEST');
    expectError(await api('POST', '/v1/tenants', { token: ADMIN, json: { name: 'bad' } }), 400, 'PADDOCK_BAD_REQUEST');
    expectError(await api('GET', '/v1/nowhere', { token: key }), 404, 'PADDOCK_NOT_FOUND');
    expectError(await api('POST', '/v1/intents', { token: key, body: '{"topic":1}\nnot json', type: 'application/x-ndjson' }), 400, 'PADDOCK_BAD_REQUEST');
  });

  it('survives fuzzed bodies on every route: only PADDOCK_ 4xx errors, and the server stays healthy', async () => {
    const key = await newTenant(api, 'fuzz');
    await install(api, key, manifest('fz'), vowels);
    const routes = ['/v1/plugins', '/v1/tenants', '/v1/intents', '/v1/plugins/fz/call/count_vowels', '/v1/plugins/fz/enable'];
    const types = ['application/json', 'application/x-ndjson', 'text/plain', 'application/octet-stream', 'multipart/form-data; boundary=x'];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fc.constantFrom(...types),
        fc.oneof(fc.json(), fc.string(), fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b).toString('latin1'))),
        fc.boolean(),
        async (route, type, body, admin) => {
          const r = await api('POST', route, { token: admin ? ADMIN : key, body, type });
          expect(r.status).toBeLessThan(500);
          if (r.status >= 400) expect(r.json.error.code).toMatch(/^PADDOCK_[A-Z_]+$/);
        },
      ),
      { numRuns: 150, seed: 42 },
    );
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 300 }), fc.json(), async (wasm, m) => {
        const r = await api('POST', '/v1/plugins', { token: key, json: { manifest: JSON.parse(m), wasm: Buffer.from(wasm).toString('base64') } });
        expect([400, 404]).toContain(r.status);
      }),
      { numRuns: 100, seed: 7 },
    );
    expect((await api('GET', '/readyz')).status).toBe(200);
    expect((await api('POST', '/v1/plugins/fz/call/count_vowels', { token: key, body: 'ok' })).status).toBe(200);
  });
});

describe('HTTP API: publisher signatures', () => {
  const sigOf = (wasm: Uint8Array, key = publisher.privateKey) =>
    sign(null, signaturePayload(createHash('sha256').update(wasm).digest('hex')), key).toString('base64');

  it('verifies a signature against trusted keys, refuses a bad one, and enforces requireSigned tenants', async () => {
    const key = await newTenant(api, 'signed', { quotas: { requireSigned: true } });
    const unsigned = await install(api, key, manifest('s'), vowels);
    expect([unsigned.status, unsigned.json.error.code]).toEqual([400, 'PADDOCK_SIGNATURE_INVALID']);
    const good = await api('POST', '/v1/plugins', { token: key, json: { manifest: manifest('s'), wasm: Buffer.from(vowels).toString('base64'), signature: { keyId: 'acme', value: sigOf(vowels) } } });
    expect(good.status).toBe(201);
    expect(good.json.signedBy).toBe('acme');
    const other = generateKeyPairSync('ed25519');
    const forged = await api('POST', '/v1/plugins', { token: key, json: { manifest: manifest('s2'), wasm: Buffer.from(vowels).toString('base64'), signature: { value: sigOf(vowels, other.privateKey) } } });
    expect([forged.status, forged.json.error.code]).toEqual([400, 'PADDOCK_SIGNATURE_INVALID']);
    const swapped = await api('POST', '/v1/plugins', { token: key, json: { manifest: manifest('s3'), wasm: Buffer.from(await fixture('echo')).toString('base64'), signature: { value: sigOf(vowels) } } });
    expect(swapped.json.error.code).toBe('PADDOCK_SIGNATURE_INVALID');
  });
});

describe('HTTP API: intents', () => {
  it('processes a JSON array and NDJSON, in subscriber priority order, with idempotency keys', async () => {
    const key = await newTenant(api, 'shop', { grants: { kv: { read: true, write: true }, intents: { emit: ['orders.*'] } } });
    const router = await plugin('order-router');
    const caps = { kv: { read: true, write: true }, intents: { emit: ['orders.*'] }, log: true };
    await install(api, key, { name: 'store', version: '1.0.0', capabilities: caps, subscriptions: [{ topic: 'orders.*', function: 'on_order', priority: 1 }] }, router);
    await install(api, key, { name: 'audit', version: '1.0.0', capabilities: caps, subscriptions: [{ topic: 'orders.created', function: 'on_order', priority: 9 }] }, router);
    const r = await api('POST', '/v1/intents', { token: key, json: [{ topic: 'orders.created', payload: { id: 7, total: 5 }, idempotencyKey: 'o7' }] });
    expect(r.status).toBe(200);
    const deliveries = r.json.results[0].result.deliveries;
    expect(deliveries.map((d: { plugin: string }) => d.plugin)).toEqual(['audit', 'store']);
    expect(deliveries.every((d: { ok: boolean }) => d.ok)).toBe(true);
    expect(Buffer.from(deliveries[0].output, 'base64').toString()).toBe('stored 7');
    const again = await api('POST', '/v1/intents', { token: key, body: '{"topic":"orders.created","payload":{"id":7,"total":5},"idempotencyKey":"o7"}\n{"topic":"nobody.listens"}\n', type: 'application/x-ndjson' });
    expect(again.json.results[0].duplicate).toBe(true);
    expect(again.json.results[1].result.deliveries).toEqual([]);
  });
});

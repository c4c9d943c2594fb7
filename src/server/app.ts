// The HTTP API (fastify). Routes and shapes are those of ../shared/CONTRACT.md; errors are
// always { "error": { "code", "message" } } with the status from src/errors.ts.

import multipart from '@fastify/multipart';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { PaddockError, isErrorCode, type ErrorCode } from '../errors.js';
import { formatZodError } from '../policy/manifest.js';
import type { Metrics } from './metrics.js';
import type { Principal, Service } from './service.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const FN = /^[A-Za-z_][A-Za-z0-9_.$-]{0,127}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const intentSchema = z
  .object({
    topic: z.string().min(1).max(200),
    payload: z.unknown().optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
  })
  .strict();
const intentsSchema = z.array(intentSchema).min(1).max(1000);
const installSchema = z
  .object({
    manifest: z.union([z.record(z.string(), z.unknown()), z.string()]),
    wasm: z.string().min(1),
    signature: z.object({ keyId: z.string().optional(), value: z.string() }).strict().optional(),
  })
  .strict();

function fail(code: ErrorCode, message: string): never {
  throw new PaddockError(code, message);
}

function tenantOf(req: FastifyRequest): string {
  const p = req.principal;
  if (!p) return fail('PADDOCK_UNAUTHORIZED', 'missing or invalid API key');
  if (p.kind !== 'tenant') return fail('PADDOCK_UNAUTHORIZED', 'this route needs a tenant API key, not the admin token');
  return p.tenant;
}

function requireAdmin(req: FastifyRequest): void {
  // A tenant asking for admin routes learns nothing about them: same answer as a wrong token.
  if (req.principal?.kind !== 'admin') fail('PADDOCK_UNAUTHORIZED', 'this route needs the admin token');
}

/** Plugin and function names come from the URL: anything malformed simply does not exist. */
function pluginName(params: unknown): string {
  const name = (params as { name?: string }).name ?? '';
  if (!NAME.test(name)) fail('PADDOCK_NOT_FOUND', 'no such plugin');
  return name;
}

function decodeBase64(text: string, field: string): Uint8Array {
  const clean = text.replace(/\s+/g, '');
  if (clean.length % 4 !== 0 || !BASE64.test(clean)) fail('PADDOCK_BAD_REQUEST', `${field} is not valid base64`);
  return new Uint8Array(Buffer.from(clean, 'base64'));
}

function sendError(reply: FastifyReply, err: PaddockError): FastifyReply {
  const retryAfter = (err.details as { retryAfter?: number } | undefined)?.retryAfter;
  if (retryAfter !== undefined) reply.header('retry-after', String(retryAfter));
  return reply.code(err.status).type('application/json').send({ error: { code: err.code, message: err.message } });
}

/** Fastify's own errors (bad JSON, media type, body size) become PADDOCK_BAD_REQUEST with their 4xx status. */
function fromFastify(err: { code?: string; statusCode?: number; message: string }): PaddockError {
  if (isErrorCode(err.code)) return err as unknown as PaddockError;
  const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
  if (status === 500) return new PaddockError('PADDOCK_INTERNAL', 'internal error');
  const e = new PaddockError(status === 413 ? 'PADDOCK_INPUT_TOO_LARGE' : 'PADDOCK_BAD_REQUEST', err.message);
  (e as { status: number }).status = status;
  return e;
}

export async function buildApp(service: Service, log: Logger, metrics: Metrics | null): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: log as unknown as FastifyBaseLogger,
    bodyLimit: service.config.bodyLimitBytes,
    requestTimeout: service.config.requestTimeoutMs,
    connectionTimeout: service.config.requestTimeoutMs,
    return503OnClosing: true,
    // Per-request log lines would dominate a busy server's logs; calls are counted in /metrics.
    logController: new LogController({ disableRequestLogging: true }),
  });

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
    const e = err instanceof PaddockError ? err : fromFastify(err);
    if (e.code === 'PADDOCK_INTERNAL' || e.code === 'PADDOCK_WORKER_CRASHED') req.log.error({ err }, 'request failed');
    return sendError(reply, e);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new PaddockError('PADDOCK_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`)));

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0];
    if (path === '/healthz' || path === '/readyz' || path === '/metrics') return;
    const principal = service.authenticate(req.headers.authorization);
    if (!principal) fail('PADDOCK_UNAUTHORIZED', 'missing or invalid API key (Authorization: Bearer <key>)');
    req.principal = principal;
  });

  // While draining, answers close their connection: keep-alive sockets must not hold the
  // shutdown open until their idle timeout.
  app.addHook('onSend', async (_req, reply) => {
    if (!service.ready && service.closing) reply.header('connection', 'close');
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (!service.ready) return reply.code(503).send({ status: 'not ready' });
    return { status: 'ready', workers: service.executor.workerThreadIds.length };
  });
  app.get('/metrics', async (_req, reply) => {
    if (!metrics) return reply.code(404).send();
    reply.type(metrics.contentType);
    return metrics.render();
  });

  // Tenants (admin)
  app.post('/v1/tenants', async (req, reply) => {
    requireAdmin(req);
    return reply.code(201).send(service.createTenant(req.body));
  });
  app.get('/v1/tenants', async (req) => {
    requireAdmin(req);
    return { tenants: service.listTenants() };
  });
  app.get('/v1/tenants/:tenant', async (req) => {
    requireAdmin(req);
    return service.getTenant((req.params as { tenant: string }).tenant);
  });
  app.post('/v1/tenants/:tenant/rotate-key', async (req) => {
    requireAdmin(req);
    return service.rotateKey((req.params as { tenant: string }).tenant);
  });
  app.delete('/v1/tenants/:tenant', async (req, reply) => {
    requireAdmin(req);
    if (!service.deleteTenant((req.params as { tenant: string }).tenant)) fail('PADDOCK_NOT_FOUND', 'no such tenant');
    return reply.code(204).send();
  });

  // Plugins (tenant)
  await app.register(async (scope) => {
    await scope.register(multipart, { limits: { fileSize: service.config.bodyLimitBytes, files: 2, fields: 4, parts: 6 } });
    scope.post('/v1/plugins', async (req, reply) => {
      const tenant = tenantOf(req);
      let manifest: unknown;
      let wasm: Uint8Array | undefined;
      let signature: { keyId?: string; value: string } | undefined;
      if (req.isMultipart()) {
        for await (const part of req.parts()) {
          if (part.type === 'file') {
            const buf = await part.toBuffer();
            if (part.fieldname === 'wasm') wasm = new Uint8Array(buf);
            else if (part.fieldname === 'manifest') manifest = buf.toString('utf8');
            else fail('PADDOCK_BAD_REQUEST', `unexpected file part "${part.fieldname}"`);
          } else if (part.fieldname === 'manifest') {
            manifest = String(part.value);
          } else if (part.fieldname === 'signature') {
            signature = { ...signature, value: String(part.value) };
          } else if (part.fieldname === 'signatureKeyId') {
            signature = { ...(signature ?? { value: '' }), keyId: String(part.value) };
          } else {
            fail('PADDOCK_BAD_REQUEST', `unexpected field "${part.fieldname}"`);
          }
        }
      } else {
        const parsed = installSchema.safeParse(req.body);
        if (!parsed.success) fail('PADDOCK_BAD_REQUEST', `invalid install request: ${formatZodError(parsed.error)}`);
        manifest = parsed.data.manifest;
        wasm = decodeBase64(parsed.data.wasm, 'wasm');
        signature = parsed.data.signature;
      }
      if (manifest === undefined) fail('PADDOCK_BAD_REQUEST', 'missing "manifest"');
      if (!wasm) fail('PADDOCK_BAD_REQUEST', 'missing "wasm"');
      if (signature && !signature.value) fail('PADDOCK_BAD_REQUEST', 'signatureKeyId given without signature');
      const info = await service.installPlugin(tenant, manifest, wasm, signature);
      return reply.code(201).send(info);
    });
  });

  app.get('/v1/plugins', async (req) => ({ plugins: service.listPlugins(tenantOf(req)) }));
  app.get('/v1/plugins/:name', async (req) => service.getPlugin(tenantOf(req), pluginName(req.params)));
  app.post('/v1/plugins/:name/enable', async (req) => service.setEnabled(tenantOf(req), pluginName(req.params), true));
  app.post('/v1/plugins/:name/disable', async (req) => service.setEnabled(tenantOf(req), pluginName(req.params), false));
  app.post('/v1/plugins/:name/reload', async (req) => service.reload(tenantOf(req), pluginName(req.params)));
  app.delete('/v1/plugins/:name', async (req, reply) => {
    await service.removePlugin(tenantOf(req), pluginName(req.params));
    return reply.code(204).send();
  });
  app.get('/v1/plugins/:name/kv', async (req) => {
    const q = req.query as { prefix?: string; limit?: string };
    const limit = Math.min(Math.max(Number(q.limit ?? 1000) || 1000, 1), 10_000);
    return service.kvKeys(tenantOf(req), pluginName(req.params), q.prefix ?? '', limit);
  });
  app.get('/v1/plugins/:name/kv/:key', async (req, reply) => {
    const value = await service.kvGet(tenantOf(req), pluginName(req.params), (req.params as { key: string }).key);
    return reply.type('application/octet-stream').send(Buffer.from(value));
  });

  // Calls: raw bytes in, raw bytes out, whatever the content type.
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    scope.post('/v1/plugins/:name/call/:function', async (req, reply) => {
      const tenant = tenantOf(req);
      const name = pluginName(req.params);
      const fn = (req.params as { function: string }).function;
      if (!FN.test(fn)) fail('PADDOCK_NO_SUCH_EXPORT', 'no such function');
      const body = req.body instanceof Buffer ? new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength) : new Uint8Array(0);
      const out = await service.call(tenant, name, fn, body);
      return reply.type('application/octet-stream').send(Buffer.from(out.buffer, out.byteOffset, out.byteLength));
    });
  });

  // Intents: a JSON array, or NDJSON (one intent per line).
  await app.register(async (scope) => {
    scope.addContentTypeParser(['application/x-ndjson', 'application/ndjson'], { parseAs: 'string' }, (_req, body, done) => {
      const lines = String(body).split('\n').filter((l) => l.trim() !== '');
      const items: unknown[] = [];
      for (const [i, line] of lines.entries()) {
        try {
          items.push(JSON.parse(line));
        } catch {
          return done(new PaddockError('PADDOCK_BAD_REQUEST', `NDJSON line ${i + 1} is not valid JSON`), undefined);
        }
      }
      done(null, items);
    });
    scope.post('/v1/intents', async (req) => {
      const tenant = tenantOf(req);
      const parsed = intentsSchema.safeParse(req.body);
      if (!parsed.success) fail('PADDOCK_BAD_REQUEST', `invalid intents: ${formatZodError(parsed.error)}`);
      const results = await service.intents(tenant, parsed.data);
      return {
        results: results.map((r) => ({
          ...r,
          result: r.result && {
            topic: r.result.topic,
            deliveries: r.result.deliveries.map((d) => ({ ...d, output: d.output ? Buffer.from(d.output).toString('base64') : undefined })),
          },
        })),
      };
    });
  });

  return app as unknown as FastifyInstance;
}

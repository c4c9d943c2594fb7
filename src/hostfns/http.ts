// The http_request host function, run by the broker on the main thread. Every hop of a
// redirect is checked against the allowlist (we follow redirects ourselves) and its resolved
// addresses are vetted (no loopback/private/link-local unless granted by address); the
// connection is pinned to the vetted address, so DNS rebinding cannot redirect it. The body is
// read under a byte cap, and the whole request lives within the call's deadline.

import { fetch as undiciFetch } from 'undici';
import { PaddockError } from '../errors.js';
import type { HttpRequestPayload, HttpResponsePayload } from '../pool/protocol.js';
import { hostMatches, vetDestination } from './egress.js';

export interface HttpPolicy {
  hosts: string[];
  methods?: string[];
  maxResponseBytes: number;
  timeoutMs: number;
}

const MAX_REDIRECTS = 5;
const MAX_REQUEST_BODY = 16 * 1024 * 1024;

function denied(message: string): PaddockError {
  const err = new PaddockError('PADDOCK_CAPABILITY_DENIED', message);
  (err as PaddockError & { reason: string }).reason = 'http-not-allowed';
  return err;
}

async function readCapped(res: Response, cap: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > cap) {
    await res.body?.cancel();
    throw new PaddockError('PADDOCK_HOST_CALL_FAILED', `HTTP response of ${declared} bytes exceeds the cap of ${cap}`);
  }
  if (!res.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength;
    if (total > cap) {
      await res.body.cancel().catch(() => {});
      throw new PaddockError('PADDOCK_HOST_CALL_FAILED', `HTTP response exceeds the cap of ${cap} bytes`);
    }
    chunks.push(chunk);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/** getaddrinfo has no timeout of its own: bound the lookup by the call's deadline. */
function withDeadline<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new PaddockError('PADDOCK_HOST_CALL_FAILED', 'HTTP request timed out while resolving the host'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export async function httpRequest(req: HttpRequestPayload, policy: HttpPolicy, deadline: number): Promise<HttpResponsePayload> {
  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    throw new PaddockError('PADDOCK_BAD_REQUEST', 'http_request: invalid URL');
  }
  const method = req.method.toUpperCase();
  if (policy.methods && !policy.methods.includes(method)) throw denied(`HTTP method ${method} is not allowed`);
  if (req.body && req.body.byteLength > MAX_REQUEST_BODY) throw new PaddockError('PADDOCK_BAD_REQUEST', 'http_request: body too large');
  const timeout = Math.max(1, Math.min(policy.timeoutMs, deadline - Date.now()));
  const signal = AbortSignal.timeout(timeout);
  let currentMethod = method;
  let body: Uint8Array | null = req.body;
  for (let hop = 0; ; hop++) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw denied(`HTTP scheme ${url.protocol} is not allowed`);
    if (!hostMatches(url, policy.hosts)) throw denied(`HTTP request to ${url.host} is not allowed (not in the host allowlist)`);
    const vetted = await withDeadline(vetDestination(url, { hosts: policy.hosts }), signal);
    try {
      let res: Response;
      try {
        res = (await undiciFetch(url, {
          method: currentMethod,
          headers: req.headers,
          body: (body ?? undefined) as never,
          redirect: 'manual',
          signal,
          dispatcher: vetted.dispatcher,
        })) as unknown as Response;
      } catch (err) {
        throw new PaddockError('PADDOCK_HOST_CALL_FAILED', `HTTP request failed: ${signal.aborted ? `timed out after ${timeout} ms` : ((err as Error).cause as Error)?.message ?? (err as Error).message}`);
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel().catch(() => {});
        if (hop >= MAX_REDIRECTS) throw new PaddockError('PADDOCK_HOST_CALL_FAILED', `more than ${MAX_REDIRECTS} redirects`);
        url = new URL(location, url);
        if (res.status === 303 || ((res.status === 301 || res.status === 302) && currentMethod === 'POST')) {
          currentMethod = 'GET';
          body = null;
        }
        continue;
      }
      const headers: Record<string, string> = {};
      res.headers.forEach((v, k) => {
        headers[k] = v;
      });
      return { status: res.status, headers, body: await readCapped(res, policy.maxResponseBytes) };
    } finally {
      await vetted.dispatcher.close().catch(() => {});
    }
  }
}

// The http_request host function, run by the broker on the main thread. Every hop of a
// redirect is checked against the allowlist (we follow redirects ourselves), the body is
// read under a byte cap, and the whole request lives within the call's deadline.

import { PaddockError } from '../errors.js';
import type { HttpRequestPayload, HttpResponsePayload } from '../pool/protocol.js';

export interface HttpPolicy {
  hosts: string[];
  methods?: string[];
  maxResponseBytes: number;
  timeoutMs: number;
}

const MAX_REDIRECTS = 5;
const MAX_REQUEST_BODY = 16 * 1024 * 1024;

function splitPattern(pattern: string): { host: string; port: string } {
  if (pattern.startsWith('[')) {
    const end = pattern.indexOf(']');
    const rest = pattern.slice(end + 1);
    return { host: pattern.slice(1, end), port: rest.startsWith(':') ? rest.slice(1) : '' };
  }
  const i = pattern.lastIndexOf(':');
  if (i > 0 && /^\d+$/.test(pattern.slice(i + 1))) return { host: pattern.slice(0, i), port: pattern.slice(i + 1) };
  return { host: pattern, port: '' };
}

/** Exact host, "*.example.com" (subdomains only), or "*"; "host:port" pins the port too. */
export function hostAllowed(url: URL, patterns: string[]): boolean {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  for (const raw of patterns) {
    const p = splitPattern(raw.toLowerCase());
    if (p.port && p.port !== port) continue;
    if (p.host === '*') return true;
    if (p.host.startsWith('*.') ? host.endsWith(p.host.slice(1)) : host === p.host) return true;
  }
  return false;
}

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

export async function httpRequest(req: HttpRequestPayload, policy: HttpPolicy, deadline: number): Promise<HttpResponsePayload> {
  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    throw new PaddockError('PADDOCK_BAD_REQUEST', `http_request: invalid URL`);
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
    if (!hostAllowed(url, policy.hosts)) throw denied(`HTTP request to ${url.host} is not allowed (not in the host allowlist)`);
    let res: Response;
    try {
      res = await fetch(url, { method: currentMethod, headers: req.headers, body: (body ?? undefined) as BodyInit | undefined, redirect: 'manual', signal });
    } catch (err) {
      const e = new PaddockError('PADDOCK_HOST_CALL_FAILED', `HTTP request failed: ${signal.aborted ? `timed out after ${timeout} ms` : (err as Error).message}`);
      throw e;
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
  }
}

import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Diagnostic } from '../dist/index.js';
import { codeOf, destroyAll, newExecutor, text } from './helpers/executor.js';

let server: Server;
let port: number;
let wasm: Uint8Array;

beforeAll(async () => {
  wasm = new Uint8Array(await readFile(new URL('../build/plugins/http-get.wasm', import.meta.url)));
  server = createServer((req, res) => {
    if (req.url === '/redirect-out') {
      res.writeHead(302, { location: 'http://example.invalid/x' });
      res.end();
    } else if (req.url === '/redirect-in') {
      res.writeHead(302, { location: `http://127.0.0.1:${port}/landed` });
      res.end();
    } else if (req.url === '/big') {
      res.end(Buffer.alloc(200_000, 97));
    } else {
      res.end(`hello from ${req.url}`);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));
afterEach(destroyAll);

async function setup(hosts: string[], grantHosts = hosts, onViolation: 'record' | 'fail' = 'fail') {
  const ex = await newExecutor({ pool: { workers: 1, spares: 0 }, grants: { http: { hosts: grantHosts } }, policy: { onViolation }, limits: { maxHttpResponseBytes: 100_000 } });
  await ex.install({ name: 'get', version: '1.0.0', capabilities: { http: { hosts } } }, wasm);
  return ex;
}

describe('http capability through the broker (Extism http_request, any PDK)', () => {
  it('allows a granted host: a local 127.0.0.1 server answers', async () => {
    const ex = await setup(['127.0.0.1']);
    expect(text(await ex.call('get', 'fetch', `http://127.0.0.1:${port}/hi`))).toBe('hello from /hi');
  });

  it('follows a redirect that stays on the allowlist, refuses one that leaves it', async () => {
    const ex = await setup(['127.0.0.1']);
    expect(text(await ex.call('get', 'fetch', `http://127.0.0.1:${port}/redirect-in`))).toBe('hello from /landed');
    expect(await codeOf(ex.call('get', 'fetch', `http://127.0.0.1:${port}/redirect-out`))).toBe('PADDOCK_CAPABILITY_DENIED');
  });

  it('refuses another host, and a granted name that resolves to a loopback address (SSRF / rebinding)', async () => {
    const ex = await setup(['localhost', 'example.com']);
    expect(await codeOf(ex.call('get', 'fetch', 'http://other.example/'))).toBe('PADDOCK_CAPABILITY_DENIED');
    const err = await ex.call('get', 'fetch', `http://localhost:${port}/x`).catch((e) => e);
    expect(err.code).toBe('PADDOCK_CAPABILITY_DENIED');
    expect(err.message).toMatch(/loopback/);
    expect(await codeOf(ex.call('get', 'fetch', 'http://169.254.169.254/latest/meta-data'))).toBe('PADDOCK_CAPABILITY_DENIED');
    expect(await codeOf(ex.call('get', 'fetch', `http://[::ffff:127.0.0.2]:${port}/`))).toBe('PADDOCK_CAPABILITY_DENIED');
  });

  it('effective hosts are the manifest’s ∩ the grant: declared but not granted is refused', async () => {
    const ex = await setup(['127.0.0.1'], ['10.0.0.0/8']);
    expect(ex.get('get').effective.http?.hosts).toEqual([]);
    expect(await codeOf(ex.call('get', 'fetch', `http://127.0.0.1:${port}/hi`))).toBe('PADDOCK_CAPABILITY_DENIED');
  });

  it('caps the response size: the plugin gets no body (status 0), the reason is in paddock_last_error', async () => {
    const ex = await setup(['127.0.0.1']);
    const err = await ex.call('get', 'fetch', `http://127.0.0.1:${port}/big`).catch((e) => e);
    expect(err.code).toBe('PADDOCK_PLUGIN_ERROR');
    expect(err.message).toMatch(/no response/);
  });

  it('accepts CIDR grants: a manifest host inside a granted range is effective', async () => {
    const ex = await setup(['127.0.0.1'], ['127.0.0.0/8']);
    expect(ex.get('get').effective.http?.hosts).toEqual(['127.0.0.1']);
    expect(text(await ex.call('get', 'fetch', `http://127.0.0.1:${port}/cidr`))).toBe('hello from /cidr');
  });

  it('under the record policy the plugin sees status 0 and a diagnostic names the capability', async () => {
    const ex = await setup(['127.0.0.1'], ['127.0.0.1'], 'record');
    const diags: Diagnostic[] = [];
    ex.on('diagnostic', (d) => diags.push(d));
    const err = await ex.call('get', 'fetch', 'http://example.com/').catch((e) => e);
    // the example plugin turns "no response" into its own error
    expect(err.code).toBe('PADDOCK_PLUGIN_ERROR');
    expect(diags.map((d) => [d.kind, d.capability])).toEqual([['capability-denied', 'http']]);
  });
});

// Runs the AssemblyScript example plugins (examples/plugins/*) under the
// official Extism JS SDK. Build them first: `node scripts/build-plugins.mjs`.
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import createPlugin, { type ExtismPluginOptions, type Plugin } from '@extism/extism';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const PLUGIN_NAMES = ['count-vowels', 'greet', 'echo', 'logger', 'failer', 'http-get'];

function wasmPath(name: string): string {
  return fileURLToPath(new URL(`../build/plugins/${name}.wasm`, import.meta.url));
}

const open: Plugin[] = [];

async function load(name: string, options: ExtismPluginOptions & { config?: Record<string, string> } = {}) {
  const plugin = await createPlugin(
    { wasm: [{ path: wasmPath(name) }] },
    { useWasi: false, runInWorker: false, ...options },
  );
  open.push(plugin);
  return plugin;
}

beforeAll(() => {
  const missing = PLUGIN_NAMES.filter((name) => !existsSync(wasmPath(name)));
  if (missing.length > 0) {
    throw new Error(`missing build/plugins/{${missing.join(',')}}.wasm; run: node scripts/build-plugins.mjs`);
  }
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((plugin) => plugin.close()));
});

describe('count-vowels', () => {
  it('counts vowels and keeps a running total in the "total" var', async () => {
    const plugin = await load('count-vowels');

    const first = await plugin.call('count_vowels', 'Hello, World!');
    expect(first?.json()).toEqual({ count: 3, total: 3, vowels: 'aeiouAEIOU' });

    const second = await plugin.call('count_vowels', 'AEIOU aeiou xyz');
    expect(second?.json()).toEqual({ count: 10, total: 13, vowels: 'aeiouAEIOU' });
  });

  it('starts a fresh plugin instance from zero', async () => {
    const plugin = await load('count-vowels');
    const output = await plugin.call('count_vowels', 'banana');
    expect(output?.json()).toEqual({ count: 3, total: 3, vowels: 'aeiouAEIOU' });
  });
});

describe('greet', () => {
  it('defaults to "Hello" without config', async () => {
    const plugin = await load('greet');
    expect((await plugin.call('greet', 'World'))?.text()).toBe('Hello, World!');
  });

  it('uses the "greeting" config value', async () => {
    const plugin = await load('greet', { config: { greeting: 'Howdy' } });
    expect((await plugin.call('greet', 'partner'))?.text()).toBe('Howdy, partner!');
  });

  it('round-trips non-ASCII text as UTF-8', async () => {
    const plugin = await load('greet', { config: { greeting: 'Grüß dich' } });
    expect((await plugin.call('greet', 'Zoë 👋'))?.text()).toBe('Grüß dich, Zoë 👋!');
  });
});

describe('echo', () => {
  it('returns arbitrary binary input unchanged', async () => {
    const plugin = await load('echo');
    // 0x00..0xff followed by 13 more bytes so both the 8-byte and 1-byte copy paths run.
    const input = new Uint8Array(269).map((_, i) => i % 256);
    input[256] = 0xff;
    input[268] = 0x00;
    const output = await plugin.call('echo', input);
    expect(output?.bytes()).toEqual(input);
  });

  it('returns empty output for empty input', async () => {
    const plugin = await load('echo');
    const output = await plugin.call('echo', new Uint8Array(0));
    expect(output).not.toBeNull();
    expect(output?.bytes()).toEqual(new Uint8Array(0));
  });

  it('noop succeeds with no output at all', async () => {
    const plugin = await load('echo');
    expect(await plugin.call('noop', 'ignored')).toBeNull();
  });
});

describe('logger', () => {
  it('logs at info, debug, warn and error and outputs "logged"', async () => {
    const lines: Array<[string, string]> = [];
    const record = (level: string) => (message: string) => void lines.push([level, message]);
    const logger = Object.fromEntries(
      ['trace', 'debug', 'info', 'warn', 'error'].map((level) => [level, record(level)]),
    ) as unknown as Console;

    const plugin = await load('logger', { logger, logLevel: 'trace' });
    expect((await plugin.call('log_all'))?.text()).toBe('logged');
    expect(lines).toEqual([
      ['info', 'info from logger plugin'],
      ['debug', 'debug from logger plugin'],
      ['warn', 'warn from logger plugin'],
      ['error', 'error from logger plugin'],
    ]);
  });
});

describe('failer', () => {
  it('fail rejects with the message passed to error_set', async () => {
    const plugin = await load('failer');
    await expect(plugin.call('fail')).rejects.toThrow('Plugin-originated error: something went wrong');
  });

  it('abort_now traps, failing the call', async () => {
    const plugin = await load('failer');
    // The JS SDK reports the trap itself; onAbort's error_set message is dropped on traps.
    await expect(plugin.call('abort_now')).rejects.toThrow(/unreachable/);
  });
});

describe('http-get', () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/hello') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('hello from node:http');
      } else {
        res.writeHead(404).end('not found');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  });

  const loadHttp = () => load('http-get', { runInWorker: true, allowedHosts: ['127.0.0.1'] });

  it('outputs the body of a GET to an allowed host', async () => {
    const plugin = await loadHttp();
    const output = await plugin.call('fetch', `http://127.0.0.1:${port}/hello`);
    expect(output?.text()).toBe('hello from node:http');
  });

  it('sets an error for a non-2xx status', async () => {
    const plugin = await loadHttp();
    await expect(plugin.call('fetch', `http://127.0.0.1:${port}/missing`)).rejects.toThrow(
      `GET http://127.0.0.1:${port}/missing failed: HTTP 404`,
    );
  });

  it('fails for a host not in allowedHosts', async () => {
    const plugin = await loadHttp();
    // Same server, but "localhost" does not match the allow-list entry "127.0.0.1".
    await expect(plugin.call('fetch', `http://localhost:${port}/hello`)).rejects.toThrow(
      /HTTP request to "http:\/\/localhost:\d+\/hello" is not allowed/,
    );
  });
});

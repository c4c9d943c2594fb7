import dns from 'node:dns';
import http from 'node:http';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { addressGranted, classifyAddress, hostMatches, vetDestination } from '../dist/hostfns/egress.js';

async function failure(p: Promise<unknown>): Promise<{ code: string; reason?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as { code: string; reason?: string; message: string };
    return { code: err.code, reason: err.reason, message: err.message };
  }
  throw new Error('expected a rejection');
}

/** Make dns.promises.lookup (what vetDestination uses) answer with fixed addresses. */
function fakeDns(answers: Array<{ address: string; family: 4 | 6 }>) {
  return vi.spyOn(dns.promises, 'lookup').mockImplementation((async () => answers) as never);
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('classifyAddress', () => {
  const table: Array<[string, string]> = [
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['100.128.0.1', 'public'],
    ['172.32.0.1', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['100.127.255.255', 'private'],
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'reserved'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.1.2.3', 'private'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:8.8.8.8', 'public'],
    ['64:ff9b::7f00:1', 'loopback'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['2002:7f00:1::', 'loopback'],
    ['2002:0808:0808::1', 'public'],
    ['::127.0.0.1', 'reserved'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf::1', 'link-local'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456::1', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['2001::1', 'reserved'],
    ['100::1', 'reserved'],
    ['4000::1', 'reserved'],
    ['2606:4700:4700::1111', 'public'],
    ['2001:4860:4860::8888', 'public'],
    ['not-an-ip', 'reserved'],
    ['127.1', 'reserved'],
    ['', 'reserved'],
  ];
  it.each(table)('%s is %s', (ip, cls) => {
    expect(classifyAddress(ip)).toBe(cls);
  });
});

describe('addressGranted', () => {
  it('matches exact IPs and CIDRs, IPv4 and IPv6, and nothing else', () => {
    expect(addressGranted('127.0.0.1', ['127.0.0.1'])).toBe(true);
    expect(addressGranted('127.0.0.2', ['127.0.0.1'])).toBe(false);
    expect(addressGranted('10.200.3.4', ['10.0.0.0/8'])).toBe(true);
    expect(addressGranted('11.0.0.1', ['10.0.0.0/8'])).toBe(false);
    expect(addressGranted('172.20.0.1', ['172.16.0.0/12'])).toBe(true);
    expect(addressGranted('172.32.0.1', ['172.16.0.0/12'])).toBe(false);
    expect(addressGranted('::1', ['::1'])).toBe(true);
    expect(addressGranted('::1', ['[::1]'])).toBe(true);
    expect(addressGranted('fd00::1234', ['fd00::/8'])).toBe(true);
    expect(addressGranted('fe80::1', ['fd00::/8'])).toBe(false);
    expect(addressGranted('::ffff:127.0.0.1', ['127.0.0.1'])).toBe(true); // mapped = the IPv4 host
    expect(addressGranted('10.1.1.1', ['::ffff:10.0.0.0/104'])).toBe(true);
    expect(addressGranted('127.0.0.1', ['::1'])).toBe(false);
    expect(addressGranted('10.0.0.1', ['10.0.0.0/33', 'example.com', '*'])).toBe(false); // malformed / names ignored
    expect(addressGranted('garbage', ['0.0.0.0/0'])).toBe(false);
  });
});

describe('hostMatches', () => {
  const u = (s: string) => new URL(s);
  it('exact, *.x (subdomains only), *, ports, IP entries', () => {
    expect(hostMatches(u('https://example.com/a'), ['example.com'])).toBe(true);
    expect(hostMatches(u('https://api.example.com/'), ['example.com'])).toBe(false);
    expect(hostMatches(u('https://api.example.com/'), ['*.example.com'])).toBe(true);
    expect(hostMatches(u('https://a.b.example.com/'), ['*.example.com'])).toBe(true);
    expect(hostMatches(u('https://example.com/'), ['*.example.com'])).toBe(false);
    expect(hostMatches(u('https://badexample.com/'), ['*.example.com'])).toBe(false);
    expect(hostMatches(u('https://anything.test/'), ['*'])).toBe(true);
    expect(hostMatches(u('https://example.com/'), ['example.com:443'])).toBe(true);
    expect(hostMatches(u('http://example.com/'), ['example.com:443'])).toBe(false);
    expect(hostMatches(u('http://example.com:8080/'), ['EXAMPLE.com:8080'])).toBe(true);
    expect(hostMatches(u('http://[::1]:8080/'), ['[::1]:8080'])).toBe(true);
    expect(hostMatches(u('http://[::1]:8081/'), ['[::1]:8080'])).toBe(false);
    expect(hostMatches(u('http://10.1.2.3/'), ['10.0.0.0/8'])).toBe(true);
    expect(hostMatches(u('http://10.0.0.1/'), ['*.0.1'])).toBe(false); // name wildcards never match IPs
    expect(hostMatches(u('http://0x7f.1/'), ['127.0.0.1'])).toBe(true); // URL canonicalises the IPv4 spelling
  });
});

describe('vetDestination', () => {
  let server: http.Server;
  let port: number;
  const hosts: string[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      hosts.push(String(req.headers.host));
      res.end('hello from loopback');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('refuses non-http schemes and hosts outside the allowlist', async () => {
    expect(await failure(vetDestination(new URL('file:///etc/passwd'), { hosts: ['*'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'http-not-allowed' });
    expect(await failure(vetDestination(new URL('http://evil.test/'), { hosts: ['example.com'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'http-not-allowed' });
    expect(await failure(vetDestination(new URL('http://8.8.8.8/'), { hosts: ['example.com'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'http-not-allowed' });
  });

  it('refuses literal internal addresses in any spelling, even with "*"', async () => {
    for (const url of ['http://127.0.0.1/', 'http://[::1]/', 'http://[::ffff:127.0.0.1]/', 'http://[::ffff:a9fe:a9fe]/', 'http://169.254.169.254/latest/meta-data/', 'http://0.0.0.0/', 'http://2130706433/', 'http://10.0.0.1/', 'http://[fd00::1]/', 'http://[64:ff9b::7f00:1]/']) {
      expect(await failure(vetDestination(new URL(url), { hosts: ['*'] })), url).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    }
  });

  it('localhost resolving to loopback is refused unless the loopback address is granted', async () => {
    const url = new URL(`http://localhost:${port}/`);
    expect(await failure(vetDestination(url, { hosts: ['localhost'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    expect(await failure(vetDestination(url, { hosts: ['*'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    // Some systems also map localhost to ::1; every address must be granted, so grant both.
    const v = await vetDestination(url, { hosts: ['localhost', '127.0.0.1', '::1'] });
    try {
      expect(classifyAddress(v.address)).toBe('loopback');
      const res = await request(url, { dispatcher: v.dispatcher });
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe('hello from loopback');
    } finally {
      await v.dispatcher.close();
    }
  });

  it('a granted 127.0.0.1 is fetched through the returned dispatcher; refused otherwise', async () => {
    const url = new URL(`http://127.0.0.1:${port}/x`);
    expect(await failure(vetDestination(url, { hosts: ['*'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    expect(await failure(vetDestination(url, { hosts: [`127.0.0.1:${port + 1}`] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'http-not-allowed' });
    const v = await vetDestination(url, { hosts: [`127.0.0.1:${port}`] });
    try {
      expect([v.address, v.family]).toEqual(['127.0.0.1', 4]);
      const res = await request(url, { dispatcher: v.dispatcher });
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe('hello from loopback');
    } finally {
      await v.dispatcher.close();
    }
  });

  it('a CIDR grant admits the address; a 10/8 grant does not admit loopback', async () => {
    const url = new URL(`http://127.0.0.1:${port}/`);
    expect(await failure(vetDestination(url, { hosts: ['127.0.0.1:1', '10.0.0.0/8', '*'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    const v = await vetDestination(url, { hosts: ['127.0.0.0/8'] });
    expect(v.address).toBe('127.0.0.1');
    await v.dispatcher.close();
  });

  it('a name with one refused address among several is refused', async () => {
    fakeDns([
      { address: '93.184.215.14', family: 4 },
      { address: '10.0.0.7', family: 4 },
    ]);
    expect(await failure(vetDestination(new URL('https://mixed.test/'), { hosts: ['mixed.test'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    fakeDns([
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ]);
    // 127.0.0.1 granted, ::1 not: still refused.
    expect(await failure(vetDestination(new URL('https://dual.test/'), { hosts: ['dual.test', '127.0.0.1'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    fakeDns([{ address: '::ffff:169.254.169.254', family: 6 }]);
    expect(await failure(vetDestination(new URL('https://meta.test/'), { hosts: ['*.test'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
  });

  it('DNS failure is HOST_CALL_FAILED', async () => {
    vi.spyOn(dns.promises, 'lookup').mockRejectedValue(Object.assign(new Error('getaddrinfo ENOTFOUND nx.test'), { code: 'ENOTFOUND' }));
    expect(await failure(vetDestination(new URL('https://nx.test/'), { hosts: ['nx.test'] }))).toMatchObject({ code: 'PADDOCK_HOST_CALL_FAILED' });
  });

  it('pins the connection: no second DNS lookup (rebinding), Host stays the original name, other origins refused', async () => {
    // vet-time DNS says 127.0.0.1; after that, "DNS" would say 10.0.0.1 (a rebinding answer).
    const spy = fakeDns([{ address: '127.0.0.1', family: 4 }]);
    const url = new URL(`http://pinned.test:${port}/p`);
    const v = await vetDestination(url, { hosts: ['pinned.test', '127.0.0.1'] });
    spy.mockImplementation((async () => [{ address: '10.0.0.1', family: 4 }]) as never);
    const cbLookup = vi.spyOn(dns, 'lookup');
    try {
      hosts.length = 0;
      const res = await request(url, { dispatcher: v.dispatcher });
      expect(await res.body.text()).toBe('hello from loopback'); // pinned.test does not exist in real DNS
      expect(hosts).toEqual([`pinned.test:${port}`]);
      expect(spy).toHaveBeenCalledTimes(1); // only the vetting lookup
      expect(cbLookup).not.toHaveBeenCalled();
      // The dispatcher refuses any other origin, e.g. a redirect target nobody vetted.
      const other = await failure(request(`http://127.0.0.2:${port}/`, { dispatcher: v.dispatcher }));
      expect(other).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'http-not-allowed' });
      const otherPort = await failure(request(`http://pinned.test:${port + 1}/`, { dispatcher: v.dispatcher }));
      expect(otherPort).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'http-not-allowed' });
    } finally {
      await v.dispatcher.close();
    }
  });

  it('TLS SNI is still the original name when connecting to the pinned address', async () => {
    // No certificate needed: the server records the ClientHello's SNI, then aborts the handshake.
    const sni: string[] = [];
    const tlsServer = tls.createServer({ SNICallback: (name, cb) => { sni.push(name); cb(new Error('no certificate')); } });
    tlsServer.on('tlsClientError', () => {});
    await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
    const tlsPort = (tlsServer.address() as AddressInfo).port;
    fakeDns([{ address: '127.0.0.1', family: 4 }]);
    const url = new URL(`https://pinned.test:${tlsPort}/`);
    const v = await vetDestination(url, { hosts: ['pinned.test', '127.0.0.1'] });
    try {
      const err = await failure(request(url, { dispatcher: v.dispatcher }));
      expect(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']).toContain(err.code); // our server refused the handshake
      expect(sni).toEqual(['pinned.test']);
    } finally {
      await v.dispatcher.close();
      await new Promise((resolve) => tlsServer.close(resolve));
    }
  });

  it('refuses the IPv4-mapped IPv6 literal of a loopback address unless granted', async () => {
    const url = new URL(`http://[::ffff:127.0.0.1]:${port}/`);
    expect(await failure(vetDestination(url, { hosts: ['*'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    expect(await failure(vetDestination(url, { hosts: ['*', '10.0.0.0/8', '::1'] }))).toMatchObject({ code: 'PADDOCK_CAPABILITY_DENIED', reason: 'ssrf-private-address' });
    // It reaches the IPv4 host, so granting that host (in either spelling) admits it.
    const v = await vetDestination(url, { hosts: ['127.0.0.1'] });
    expect([v.address, v.family]).toEqual(['::ffff:7f00:1', 6]);
    await v.dispatcher.close();
  });
});

// SSRF / DNS-rebinding guard for plugin HTTP. A plugin's URL is hostile: its host may be a
// literal internal address in any spelling, or a name whose DNS answer points inside (or will
// point inside on the *next* lookup). vetDestination() resolves the name once, vets every
// address, and hands back an undici dispatcher that can only connect to those vetted addresses,
// for that one origin; it never consults DNS again, so a rebinding answer cannot redirect it.

import dns from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { PaddockError } from '../errors.js';

export type AddressClass = 'public' | 'loopback' | 'private' | 'link-local' | 'unique-local' | 'multicast' | 'unspecified' | 'reserved';

export interface EgressPolicy {
  /** "example.com", "*.example.com" (subdomains only), "*", "127.0.0.1", "10.0.0.0/8", "::1",
   *  "fd00::/8", each with an optional ":port" ("[::1]:8080", "[fd00::]/8:443"; IPv6 needs brackets for a port). */
  hosts: string[];
}

export interface VettedDestination {
  /** The first vetted address (all of them are vetted; the dispatcher may use any). */
  address: string;
  family: 4 | 6;
  /** Connects only to the vetted address(es), only for this URL's origin. The caller owns it:
   *  call `await dispatcher.close()` when done (or `destroy()` to abort in-flight requests).
   *  Use it with the installed `undici` package's request()/fetch(), not Node's global fetch
   *  (a dispatcher from another undici copy is not guaranteed to be compatible). */
  dispatcher: Dispatcher;
}

// ---- address parsing -------------------------------------------------------------------

interface Addr { family: 4 | 6; value: bigint }

function parseV4(s: string): number | null {
  if (isIP(s) !== 4) return null;
  return s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** Parse an IP (v4, v6, v6 with a trailing dotted quad or a %zone) to a number; null if invalid. */
function parseAddr(raw: string): Addr | null {
  let s = raw.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const v4 = parseV4(s);
  if (v4 !== null) return { family: 4, value: BigInt(v4) };
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  if (isIP(s) !== 6) return null;
  let words: number[] = [];
  let tail4: number | null = null;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) !== -1) {
    tail4 = parseV4(s.slice(lastColon + 1));
    if (tail4 === null) return null;
    s = s.slice(0, lastColon + 1) + '0:0';
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const hw = head === '' ? [] : head.split(':').map((h) => parseInt(h, 16));
  if (rest === undefined) words = hw;
  else {
    const tw = rest === '' ? [] : rest.split(':').map((h) => parseInt(h, 16));
    words = [...hw, ...new Array<number>(8 - hw.length - tw.length).fill(0), ...tw];
  }
  if (words.length !== 8) return null;
  let value = words.reduce((acc, w) => (acc << 16n) | BigInt(w), 0n);
  if (tail4 !== null) value = (value & ~0xffffffffn) | BigInt(tail4);
  return { family: 6, value };
}

const V4 = (s: string): bigint => BigInt(parseV4(s)!);
const V6 = (s: string): bigint => parseAddr(s)!.value;
const inNet = (v: bigint, base: bigint, prefix: number, bits: number): boolean =>
  v >> BigInt(bits - prefix) === base >> BigInt(bits - prefix);

// IPv4 special-purpose ranges (RFC 6890 and friends), first match wins.
const V4_TABLE: Array<[string, number, AddressClass]> = [
  ['0.0.0.0', 32, 'unspecified'],
  ['0.0.0.0', 8, 'reserved'], // "this network"
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'private'], // carrier-grade NAT: internal to someone
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'], // includes 169.254.169.254 cloud metadata
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'], // IETF protocol assignments
  ['192.0.2.0', 24, 'reserved'], // TEST-NET-1
  ['192.88.99.0', 24, 'reserved'], // 6to4 relay anycast (deprecated)
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'reserved'], // benchmarking
  ['198.51.100.0', 24, 'reserved'], // TEST-NET-2
  ['203.0.113.0', 24, 'reserved'], // TEST-NET-3
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'], // includes 255.255.255.255 broadcast
];

function classifyV4(v: bigint): AddressClass {
  for (const [base, prefix, cls] of V4_TABLE) if (inNet(v, V4(base), prefix, 32)) return cls;
  return 'public';
}

function classifyV6(v: bigint): AddressClass {
  const net = (base: string, prefix: number) => inNet(v, V6(base), prefix, 128);
  if (v === 0n) return 'unspecified';
  if (v === 1n) return 'loopback';
  // Addresses that carry an IPv4 address: judge by what they reach.
  if (net('::ffff:0:0', 96)) return classifyV4(v & 0xffffffffn); // IPv4-mapped
  if (net('64:ff9b::', 96)) return classifyV4(v & 0xffffffffn); // NAT64 well-known prefix
  if (net('2002::', 16)) return classifyV4((v >> 80n) & 0xffffffffn); // 6to4: 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD
  if (net('::', 96)) return 'reserved'; // IPv4-compatible (deprecated)
  if (net('64:ff9b:1::', 48)) return 'reserved'; // local-use NAT64
  if (net('100::', 64)) return 'reserved'; // discard-only
  if (net('2001::', 23)) return 'reserved'; // IETF protocol assignments, incl. Teredo 2001::/32
  if (net('2001:db8::', 32)) return 'reserved'; // documentation
  if (net('3fff::', 20)) return 'reserved'; // documentation (RFC 9637)
  if (net('5f00::', 16)) return 'reserved'; // SRv6 SIDs
  if (net('fc00::', 7)) return 'unique-local';
  if (net('fe80::', 10)) return 'link-local';
  if (net('fec0::', 10)) return 'private'; // deprecated site-local
  if (net('ff00::', 8)) return 'multicast';
  if (net('2000::', 3)) return 'public'; // global unicast
  return 'reserved'; // everything else is unallocated
}

/** Classify an IP address. Anything that is not a valid IP is 'reserved' (fails closed). */
export function classifyAddress(ip: string): AddressClass {
  const a = parseAddr(ip);
  if (!a) return 'reserved';
  return a.family === 4 ? classifyV4(a.value) : classifyV6(a.value);
}

/** IPv4-mapped IPv6 reaches the IPv4 host, so it is granted (and matched) as that IPv4 address. */
function unmap(a: Addr): Addr {
  if (a.family === 6 && a.value >> 32n === 0xffffn) return { family: 4, value: a.value & 0xffffffffn };
  return a;
}

interface Cidr { family: 4 | 6; base: bigint; prefix: number }

function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf('/');
  const a = parseAddr(slash === -1 ? s : s.slice(0, slash));
  if (!a) return null;
  const bits = a.family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash !== -1) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) return null;
    prefix = Number(p);
  }
  return { family: a.family, base: a.value, prefix };
}

/** A grant written as IPv4-mapped IPv6 ("::ffff:10.0.0.0/104") is the IPv4 grant it spells. */
function unmapCidr(c: Cidr): Cidr {
  if (c.family === 6 && c.prefix >= 96 && c.base >> 32n === 0xffffn) return { family: 4, base: c.base & 0xffffffffn, prefix: c.prefix - 96 };
  return c;
}

/** True if `ip` equals an exact-IP grant or lies in a CIDR grant ("[::1]" brackets allowed).
 *  Entries that are neither (names, ports) are ignored. IPv4-mapped IPv6 matches as IPv4. */
export function addressGranted(ip: string, grants: string[]): boolean {
  const parsed = parseAddr(ip);
  if (!parsed) return false;
  const a = unmap(parsed);
  for (const g of grants) {
    const raw = typeof g === 'string' ? parseCidr(g.trim().replace(/^\[([^\]]*)\]/, '$1')) : null;
    if (!raw) continue;
    const c = unmapCidr(raw);
    if (c.family === a.family && inNet(a.value, c.base, c.prefix, a.family === 4 ? 32 : 128)) return true;
  }
  return false;
}

// ---- allowlist patterns ------------------------------------------------------------------

interface Pattern { kind: 'name' | 'ip'; host: string; port: string }

/** Split "host[:port]", "[v6][/n][:port]", "v4[/n][:port]", bare "v6[/n]" (no port). */
function parsePattern(raw: string): Pattern | null {
  const s = raw.trim().toLowerCase();
  if (s === '') return null;
  if (s.startsWith('[')) {
    const m = /^\[([^\]]+)\](\/\d{1,3})?(?::(\d{1,5}))?$/.exec(s);
    if (!m || !parseCidr(m[1] + (m[2] ?? ''))) return null;
    return { kind: 'ip', host: m[1] + (m[2] ?? ''), port: m[3] ?? '' };
  }
  if (parseCidr(s)) return { kind: 'ip', host: s, port: '' }; // bare IP / CIDR, incl. IPv6
  const m = /^(.*):(\d{1,5})$/.exec(s);
  const host = m ? m[1] : s;
  const port = m ? m[2] : '';
  if (parseCidr(host)) return { kind: 'ip', host, port };
  if (host.includes(':') || host.includes('/')) return null; // malformed; ignore (fail closed)
  return { kind: 'name', host, port };
}

function effectivePort(url: URL): string {
  return url.port || (url.protocol === 'https:' ? '443' : url.protocol === 'http:' ? '80' : '');
}

function urlHost(url: URL): string {
  return url.hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
}

function nameMatches(host: string, p: Pattern): boolean {
  if (p.host === '*') return true;
  if (isIP(host)) return false; // "*.0.1" must not match 10.0.0.1; IPs match only IP entries or "*"
  if (p.host.startsWith('*.')) return host.endsWith(p.host.slice(1)) && host.length > p.host.length - 1;
  return host === p.host;
}

/**
 * Does the URL's host (and port; default 80/443) match an allowlist pattern? Names: exact,
 * "*.x" (subdomains of x only, not x itself), "*" (anything). A literal-IP host matches "*" or
 * an IP/CIDR entry; name wildcards never match IP literals.
 */
export function hostMatches(url: URL, patterns: string[]): boolean {
  const host = urlHost(url);
  const port = effectivePort(url);
  for (const raw of patterns) {
    const p = typeof raw === 'string' ? parsePattern(raw) : null;
    if (!p || (p.port && p.port !== port)) continue;
    if (p.kind === 'name' ? nameMatches(host, p) : isIP(host) !== 0 && addressGranted(host, [p.host])) return true;
  }
  return false;
}

// ---- vetting -------------------------------------------------------------------------------

function denied(reason: 'ssrf-private-address' | 'http-not-allowed', message: string): PaddockError {
  const err = new PaddockError('PADDOCK_CAPABILITY_DENIED', message);
  (err as PaddockError & { reason: string }).reason = reason;
  return err;
}

/**
 * Vet `url` against `policy` and return a dispatcher pinned to the vetted address(es).
 * - scheme must be http/https, host must match the allowlist (hostMatches) — else 'http-not-allowed';
 * - a name is resolved once (all addresses); a literal IP is checked as is;
 * - every address must be 'public' or granted by an IP/CIDR entry whose port (if any) matches,
 *   else 'ssrf-private-address' (one bad address refuses the whole name);
 * - DNS failure: PADDOCK_HOST_CALL_FAILED.
 */
export async function vetDestination(url: URL, policy: EgressPolicy): Promise<VettedDestination> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw denied('http-not-allowed', `HTTP scheme ${url.protocol} is not allowed`);
  const patterns = Array.isArray(policy?.hosts) ? policy.hosts : [];
  if (!hostMatches(url, patterns)) throw denied('http-not-allowed', `HTTP request to ${url.host} is not allowed (not in the host allowlist)`);
  const host = urlHost(url);
  const port = effectivePort(url);
  const grants: string[] = [];
  for (const raw of patterns) {
    const p = typeof raw === 'string' ? parsePattern(raw) : null;
    if (p?.kind === 'ip' && (!p.port || p.port === port)) grants.push(p.host);
  }

  let addrs: Array<{ address: string; family: 4 | 6 }>;
  if (isIP(host)) {
    addrs = [{ address: host, family: isIP(host) as 4 | 6 }];
  } else {
    try {
      const res = await dns.promises.lookup(host, { all: true, verbatim: true });
      addrs = res.map((r) => ({ address: r.address, family: r.family === 6 ? 6 : 4 }));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new PaddockError('PADDOCK_HOST_CALL_FAILED', `DNS lookup for ${host} failed${typeof code === 'string' ? ` (${code})` : ''}`);
    }
    if (addrs.length === 0) throw new PaddockError('PADDOCK_HOST_CALL_FAILED', `DNS lookup for ${host} returned no addresses`);
  }
  for (const a of addrs) {
    // Check the address family we parsed, not just the one DNS claimed.
    const cls = classifyAddress(a.address);
    if (cls !== 'public' && !addressGranted(a.address, grants)) {
      // Only the class is reported: the resolved address itself is internal information.
      throw denied('ssrf-private-address', `HTTP request to ${url.host} refused: it resolves to a ${cls} address`);
    }
  }

  const lookup = pinnedLookup(host, addrs);
  const inner = buildConnector({ lookup } as buildConnector.BuildOptions);
  // The connector also pins the origin: a request for any other host/port/scheme (say, a
  // redirect the caller forgot to re-vet) fails instead of reaching an unvetted address.
  const connect: buildConnector.connector = (opts, callback) => {
    const h = opts.hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
    const p = opts.port || (opts.protocol === 'https:' ? '443' : '80');
    if (h !== host || String(p) !== port || opts.protocol !== url.protocol) {
      callback(denied('http-not-allowed', `this connection was vetted for ${url.host} only`), null);
      return;
    }
    inner(opts, callback);
  };
  return { address: addrs[0].address, family: addrs[0].family, dispatcher: new Agent({ connect }) };
}

/** A net/tls `lookup` that answers only for `host`, only with the vetted addresses, never via DNS. */
function pinnedLookup(host: string, addrs: Array<{ address: string; family: 4 | 6 }>): LookupFunction {
  return ((hostname: string, options: dns.LookupOptions | number, callback: (...args: unknown[]) => void) => {
    const opts: dns.LookupOptions = typeof options === 'number' ? { family: options } : options ?? {};
    const want = opts.family === 4 || opts.family === 'IPv4' ? 4 : opts.family === 6 || opts.family === 'IPv6' ? 6 : 0;
    const list = addrs.filter((a) => want === 0 || a.family === want);
    if (hostname.toLowerCase() !== host || list.length === 0) {
      const err = Object.assign(new Error(`no vetted address for ${hostname}`), { code: 'ENOTFOUND' });
      process.nextTick(callback, err, opts.all ? [] : undefined, undefined);
      return;
    }
    if (opts.all) process.nextTick(callback, null, list.map((a) => ({ address: a.address, family: a.family })));
    else process.nextTick(callback, null, list[0].address, list[0].family);
  }) as unknown as LookupFunction;
}

// CLI verbs that talk to a running `paddock serve` (tenant, plugin, call), plus the offline
// ones (plugin audit, doctor). Human tables by default, --json for scripts.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { PaddockError } from '../errors.js';
import { auditModule } from '../policy/audit.js';
import { parseManifest, parseManifestText } from '../policy/manifest.js';
import { loadPlugin } from './run.js';

interface GlobalOpts {
  url?: string;
  token?: string;
  json?: boolean;
  dataDir?: string;
}

function globals(cmd: Command): GlobalOpts {
  return cmd.optsWithGlobals() as GlobalOpts;
}

async function resolveToken(g: GlobalOpts, admin: boolean): Promise<string> {
  if (g.token) return g.token;
  const env = admin ? process.env.PADDOCK_ADMIN_TOKEN : (process.env.PADDOCK_TOKEN ?? process.env.PADDOCK_API_KEY);
  if (env) return env;
  if (admin) {
    try {
      return (await readFile(join(g.dataDir ?? './data', 'admin-token'), 'utf8')).trim();
    } catch {
      // fall through
    }
  }
  throw new PaddockError('PADDOCK_UNAUTHORIZED', admin ? 'no admin token: pass --token, set PADDOCK_ADMIN_TOKEN, or run next to the server\'s data directory' : 'no API key: pass --token or set PADDOCK_TOKEN');
}

/** Shows a spinner on stderr while `work` runs, when stderr is a terminal. */
async function withProgress<T>(label: string, work: Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) return work;
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let i = 0;
  const timer = setInterval(() => process.stderr.write(`\r${frames[i++ % frames.length]} ${label}`), 80);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write(`\r${' '.repeat(label.length + 2)}\r`);
  }
}

async function request(g: GlobalOpts, admin: boolean, method: string, path: string, body?: { json?: unknown; raw?: Uint8Array }): Promise<{ status: number; bytes: Uint8Array; json: unknown }> {
  const token = await resolveToken(g, admin);
  const base = (g.url ?? process.env.PADDOCK_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  let payload: BodyInit | undefined;
  if (body?.json !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body.json);
  } else if (body?.raw) {
    headers['content-type'] = 'application/octet-stream';
    payload = body.raw as unknown as BodyInit;
  }
  let res: Response;
  try {
    res = await fetch(base + path, { method, headers, body: payload });
  } catch (err) {
    throw new PaddockError('PADDOCK_SHUTTING_DOWN', `cannot reach ${base}: ${((err as Error).cause as Error)?.message ?? (err as Error).message}`);
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  let json: unknown = null;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    // raw output
  }
  if (res.status >= 400) {
    const e = (json as { error?: { code?: string; message?: string } } | null)?.error;
    const err = new PaddockError((e?.code as PaddockError['code']) ?? 'PADDOCK_INTERNAL', e?.message ?? `HTTP ${res.status}`);
    throw err;
  }
  return { status: res.status, bytes, json };
}

function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  const cell = (v: unknown) => (v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...rows.map((r) => line(columns.map((c) => cell(r[c]))))].join('\n') + '\n';
}

function print(g: GlobalOpts, value: unknown, human: () => string): void {
  process.stdout.write(g.json ? `${JSON.stringify(value, null, 2)}\n` : human());
}

async function jsonArg(value: string | undefined): Promise<unknown> {
  if (value === undefined) return undefined;
  const text = value.startsWith('@') ? await readFile(value.slice(1), 'utf8') : value;
  try {
    return JSON.parse(text);
  } catch {
    throw new PaddockError('PADDOCK_BAD_REQUEST', `not valid JSON: ${value.slice(0, 60)}`);
  }
}

/** A plugin to install: a folder (manifest + .wasm) or a .wasm with --manifest or --name/--version. */
async function pluginFromArgs(path: string, opts: { manifest?: string; name?: string; version?: string }): Promise<{ manifest: unknown; wasm: Uint8Array }> {
  const loaded = await loadPlugin(path);
  let manifest: unknown = loaded.manifest;
  if (opts.manifest) manifest = parseManifestText(await readFile(opts.manifest, 'utf8'));
  if (!manifest) {
    const base = path.split('/').pop()!.replace(/\.wasm$/, '');
    manifest = { name: opts.name ?? base, version: opts.version ?? '0.0.0' };
  } else if (opts.name || opts.version) {
    manifest = { ...(manifest as object), ...(opts.name ? { name: opts.name } : {}), ...(opts.version ? { version: opts.version } : {}) };
  }
  return { manifest, wasm: loaded.wasm };
}

const pluginColumns = ['name', 'version', 'enabled', 'state', 'digest', 'installedAt'];
const pluginRow = (p: Record<string, unknown>) => ({
  ...p,
  state: (p.broken ? 'broken' : (p.quarantine as { state?: string })?.state) ?? '-',
  digest: String(p.digest).slice(0, 12),
});

export function registerClientCommands(program: Command): void {
  program
    .option('--url <url>', 'server URL (env PADDOCK_URL, default http://127.0.0.1:8080)')
    .option('--token <token>', 'API key or admin token (env PADDOCK_TOKEN / PADDOCK_ADMIN_TOKEN)')
    .option('--data-dir <dir>', 'the server data directory, to find its admin token', './data')
    .option('--json', 'machine-readable output');

  const tenant = program.command('tenant').description('manage tenants (admin token)');
  tenant
    .command('add <name>')
    .description('create a tenant; prints its API key once')
    .option('--grants <json|@file>', 'capability grants, e.g. \'{"kv":{"read":true,"write":true}}\'')
    .option('--quotas <json|@file>', 'quotas, e.g. \'{"callsPerSecond":50}\'')
    .action(async (name: string, opts: { grants?: string; quotas?: string }, cmd: Command) => {
      const g = globals(cmd);
      const body = { name, ...(opts.grants ? { grants: await jsonArg(opts.grants) } : {}), ...(opts.quotas ? { quotas: await jsonArg(opts.quotas) } : {}) };
      const r = await request(g, true, 'POST', '/v1/tenants', { json: body });
      const t = r.json as { name: string; apiKey: string };
      print(g, t, () => `tenant ${t.name} created\nAPI key (shown once): ${t.apiKey}\n`);
    });
  tenant
    .command('list')
    .description('list tenants')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const r = await request(g, true, 'GET', '/v1/tenants');
      const rows = (r.json as { tenants: Array<Record<string, unknown>> }).tenants;
      print(g, rows, () => table(rows.map((t) => ({ ...t, rate: `${(t.quotas as { callsPerSecond: number }).callsPerSecond}/s` })), ['name', 'rate', 'grants', 'createdAt']));
    });
  tenant
    .command('rotate-key <name>')
    .description('revoke the tenant\'s keys and issue a new one')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const r = await request(g, true, 'POST', `/v1/tenants/${encodeURIComponent(name)}/rotate-key`);
      const t = r.json as { name: string; apiKey: string };
      print(g, t, () => `new API key for ${t.name} (shown once): ${t.apiKey}\n`);
    });
  tenant
    .command('remove <name>')
    .description('delete a tenant with its plugins and data')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      await request(g, true, 'DELETE', `/v1/tenants/${encodeURIComponent(name)}`);
      print(g, { removed: name }, () => `tenant ${name} removed\n`);
    });

  const plugin = program.command('plugin').description('manage plugins (tenant API key), or audit one offline');
  plugin
    .command('install <path>')
    .description('install a plugin: a folder (paddock.json|yaml + .wasm) or a .wasm file')
    .option('--manifest <file>', 'manifest file (JSON or YAML)')
    .option('--name <name>', 'plugin name (overrides the manifest)')
    .option('--plugin-version <version>', 'plugin version (overrides the manifest)')
    .option('--signature <base64>', 'ed25519 publisher signature')
    .option('--key-id <id>', 'which trusted publisher key signed it')
    .action(async (path: string, opts: { manifest?: string; name?: string; pluginVersion?: string; signature?: string; keyId?: string }, cmd: Command) => {
      const g = globals(cmd);
      const { manifest, wasm } = await pluginFromArgs(path, { ...opts, version: opts.pluginVersion });
      const body = { manifest, wasm: Buffer.from(wasm).toString('base64'), ...(opts.signature ? { signature: { value: opts.signature, ...(opts.keyId ? { keyId: opts.keyId } : {}) } } : {}) };
      const r = await withProgress(`installing ${(manifest as { name: string }).name} (${wasm.byteLength} bytes)`, request(g, false, 'POST', '/v1/plugins', { json: body }));
      const p = r.json as Record<string, unknown>;
      print(g, p, () => `installed ${p.name}@${p.version} sha256:${p.digest}\nexports: ${(p.exports as string[]).join(', ')}\n`);
    });
  plugin
    .command('list')
    .description('list your plugins')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const r = await request(g, false, 'GET', '/v1/plugins');
      const rows = (r.json as { plugins: Array<Record<string, unknown>> }).plugins;
      print(g, rows, () => table(rows.map(pluginRow), pluginColumns));
    });
  plugin
    .command('show <name>')
    .description('show a plugin: manifest, digest, status, violations (never runs its code)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const r = await request(g, false, 'GET', `/v1/plugins/${encodeURIComponent(name)}`);
      print(g, r.json, () => `${JSON.stringify(r.json, null, 2)}\n`);
    });
  for (const verb of ['enable', 'disable', 'reload'] as const) {
    plugin
      .command(`${verb} <name>`)
      .description(`${verb} a plugin`)
      .action(async (name: string, _o: unknown, cmd: Command) => {
        const g = globals(cmd);
        const r = await request(g, false, 'POST', `/v1/plugins/${encodeURIComponent(name)}/${verb}`);
        print(g, r.json, () => table([pluginRow(r.json as Record<string, unknown>)], pluginColumns));
      });
  }
  plugin
    .command('remove <name>')
    .description('remove a plugin')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      await request(g, false, 'DELETE', `/v1/plugins/${encodeURIComponent(name)}`);
      print(g, { removed: name }, () => `plugin ${name} removed\n`);
    });
  plugin
    .command('audit <path>')
    .description('audit a plugin offline, without running it: digest, imports, exports, capabilities it needs')
    .option('--manifest <file>', 'manifest file (JSON or YAML)')
    .action(async (path: string, opts: { manifest?: string }, cmd: Command) => {
      const g = globals(cmd);
      const { manifest, wasm } = await pluginFromArgs(path, opts);
      const m = parseManifest(manifest);
      const report = auditModule(wasm, m);
      const out = {
        name: m.name,
        version: m.version,
        digest: report.digest,
        bytes: wasm.byteLength,
        imports: report.info.imports.map((i) => `${i.module}.${i.name}`),
        exports: report.callable,
        memories: report.info.memories,
        hasStart: report.info.hasStart,
        declared: m.capabilities,
        verdict: 'ok',
      };
      print(g, out, () =>
        [
          `${m.name}@${m.version}  sha256:${report.digest}  ${wasm.byteLength} bytes`,
          `exports:  ${out.exports.join(', ') || '-'}`,
          `imports:  ${out.imports.join(', ') || '-'}`,
          `memory:   ${out.memories.map((x) => `${x.min}..${x.max ?? '∞'} pages`).join(', ') || '-'}${out.hasStart ? '   (has a start function)' : ''}`,
          `declares: ${JSON.stringify(m.capabilities)}`,
          'verdict:  ok — installable under this manifest',
          '',
        ].join('\n'),
      );
    });

  program
    .command('call <plugin> <function>')
    .description('call a plugin function on the server; the output bytes go to stdout')
    .option('--input <text>', 'input text')
    .option('--input-file <file>', 'read the input from a file')
    .action(async (name: string, fn: string, opts: { input?: string; inputFile?: string }, cmd: Command) => {
      const g = globals(cmd);
      const input = opts.inputFile ? new Uint8Array(await readFile(opts.inputFile)) : new TextEncoder().encode(opts.input ?? '');
      const r = await request(g, false, 'POST', `/v1/plugins/${encodeURIComponent(name)}/call/${encodeURIComponent(fn)}`, { raw: input });
      process.stdout.write(r.bytes);
    });

  program
    .command('doctor')
    .description('check this machine: Node, worker threads, wasm isolation, the store, and the server if --url is given')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { runDoctor } = await import('./doctor.js');
      const checks = await runDoctor(g.url ?? process.env.PADDOCK_URL, g.dataDir ?? './data');
      print(g, checks, () => table(checks as unknown as Array<Record<string, unknown>>, ['check', 'ok', 'detail']));
      if (checks.some((c) => !c.ok)) process.exitCode = 1;
    });
}

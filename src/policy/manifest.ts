// The plugin manifest: validated once, at the edge, with messages that name the field.

import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { PaddockError } from '../errors.js';

const identifier = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" or "-", 1 to 64 characters, starting with a letter or digit');
const functionName = z.string().min(1).max(128).regex(/^[A-Za-z_][A-Za-z0-9_.$-]*$/, 'a wasm export name (letters, digits, _ . $ -)');
const hostPattern = z
  .string()
  .min(1)
  .max(253)
  .regex(
    /^\*$|^(\*\.)?[A-Za-z0-9.-]+(\/\d{1,3})?(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](\/\d{1,3})?(:\d{1,5})?$|^[0-9A-Fa-f:.]+\/\d{1,3}$/,
    'a host name, "*.example.com", an IP address or CIDR range (optionally with :port), or "*"',
  );
const topicPattern = z.string().min(1).max(200).regex(/^[A-Za-z0-9_.*>-]+$/, 'a topic or topic pattern (letters, digits, _ - . and * wildcards)');
/** An absolute, already-normalised POSIX path: no "..", ".", "//" or trailing "/" to reinterpret later. */
const absolutePath = (v: string) => v.startsWith('/') && !v.includes('\0') && (v === '/' || (!v.endsWith('/') && v.split('/').slice(1).every((seg) => seg !== '' && seg !== '.' && seg !== '..')));
/** "HOST_DIR" or "HOST_DIR:GUEST_DIR", both absolute and normalised. */
const mountEntry = z
  .string()
  .min(1)
  .max(2048)
  .refine((v) => v.split(':').length <= 2 && v.split(':').every(absolutePath), 'an absolute, normalised directory ("/srv/data"), optionally ":/guest/path"; no "..", "." or trailing "/"');

export const capabilitiesSchema = z
  .object({
    kv: z.object({ read: z.boolean().default(false), write: z.boolean().default(false) }).strict().optional(),
    http: z
      .object({
        hosts: z.array(hostPattern).max(256).default([]),
        methods: z.array(z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])).optional(),
        maxResponseBytes: z.number().int().positive().optional(),
        timeoutMs: z.number().int().positive().optional(),
      })
      .strict()
      .optional(),
    intents: z.object({ emit: z.array(topicPattern).max(256).default([]) }).strict().optional(),
    log: z.boolean().optional(),
    config: z.boolean().optional(),
    clock: z.boolean().optional(),
    wasi: z.boolean().optional(),
    fs: z
      .object({
        read: z.array(mountEntry).max(64).default([]),
        write: z.array(mountEntry).max(64).default([]),
      })
      .strict()
      .optional(),
  })
  .strict();

export const limitsSchema = z
  .object({
    timeoutMs: z.number().int().positive().max(3_600_000).optional(),
    memoryPages: z.number().int().positive().max(65536).optional(),
    maxInputBytes: z.number().int().positive().optional(),
    maxOutputBytes: z.number().int().positive().optional(),
    maxVarBytes: z.number().int().nonnegative().optional(),
    maxHostCalls: z.number().int().nonnegative().optional(),
    maxHostCallBytes: z.number().int().nonnegative().optional(),
    maxLogBytes: z.number().int().nonnegative().optional(),
  })
  .strict();

export const manifestSchema = z
  .object({
    name: identifier,
    version: z.string().min(1).max(64),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits').optional(),
    exports: z.array(functionName).max(1024).optional(),
    capabilities: capabilitiesSchema.default({}),
    limits: limitsSchema.default({}),
    config: z.record(z.string().max(256), z.string().max(64 * 1024)).default({}),
    subscriptions: z
      .array(z.object({ topic: topicPattern, function: functionName, priority: z.number().int().min(-1000).max(1000).default(0) }).strict())
      .max(256)
      .default([]),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'off']).optional(),
  })
  .strict();

export type ManifestInput = z.input<typeof manifestSchema>;
export type Manifest = z.output<typeof manifestSchema>;
export type Capabilities = z.output<typeof capabilitiesSchema>;
export type Limits = z.output<typeof limitsSchema>;

/** "capabilities.http.hosts[0]: ..." — zod issues rendered with the offending field first. */
export function formatZodError(error: z.ZodError, root = ''): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => {
      let path = root;
      for (const part of issue.path) {
        path += typeof part === 'number' ? `[${part}]` : path ? `.${String(part)}` : String(part);
      }
      return `${path || '(root)'}: ${issue.message}`;
    })
    .join('; ');
}

export function parseManifest(input: unknown): Manifest {
  const parsed = manifestSchema.safeParse(input);
  if (!parsed.success) throw new PaddockError('PADDOCK_INVALID_MANIFEST', `invalid manifest: ${formatZodError(parsed.error)}`);
  const m = parsed.data;
  for (const sub of m.subscriptions) {
    if (m.exports && !m.exports.includes(sub.function)) {
      throw new PaddockError('PADDOCK_INVALID_MANIFEST', `invalid manifest: subscriptions: function "${sub.function}" is not listed in exports`);
    }
  }
  return m;
}

/** Parses manifest text, JSON or YAML (JSON is tried first: every JSON document is also YAML). */
export function parseManifestText(text: string): Manifest {
  let data: unknown;
  const trimmed = text.trimStart();
  try {
    data = trimmed.startsWith('{') ? JSON.parse(text) : parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw new PaddockError('PADDOCK_INVALID_MANIFEST', `manifest is neither valid JSON nor YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseManifest(data);
}

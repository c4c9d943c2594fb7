// Server configuration: command-line flags over the config file (JSON or YAML) over embedded
// defaults, validated once here.

import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { PaddockError } from '../errors.js';
import { executorOptionsSchema } from '../executor.js';
import { capabilitiesSchema, formatZodError } from '../policy/manifest.js';

export const quotasSchema = z
  .object({
    callsPerSecond: z.number().positive().default(100),
    burst: z.number().int().min(1).default(200),
    maxConcurrent: z.number().int().min(1).default(8),
    maxQueued: z.number().int().min(0).default(1000),
    maxTimeoutMs: z.number().int().positive().default(5000),
    maxMemoryPages: z.number().int().positive().max(65536).default(256),
    kvBytes: z.number().int().nonnegative().default(10 * 1024 * 1024),
    /** Install only plugins signed by a trusted publisher key. */
    requireSigned: z.boolean().default(false),
  })
  .strict();

export type Quotas = z.output<typeof quotasSchema>;

export const tenantInputSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lowercase letters, digits and "-", 1 to 63 characters'),
    quotas: quotasSchema.partial().default({}),
    grants: capabilitiesSchema.default({ log: true }),
  })
  .strict();

export const serverConfigSchema = z
  .object({
    port: z.number().int().min(0).max(65535).default(8080),
    host: z.string().default('127.0.0.1'),
    dataDir: z.string().default('./data'),
    adminToken: z.string().min(16).optional(),
    /** Largest request body (plugin uploads included). */
    bodyLimitBytes: z.number().int().positive().default(64 * 1024 * 1024),
    /** Per-request deadline for the HTTP layer (calls have their own, shorter, deadlines). */
    requestTimeoutMs: z.number().int().positive().default(120_000),
    /** Quotas for tenants that do not set their own. */
    defaultQuotas: quotasSchema.prefault({}),
    /** ed25519 publisher keys trusted for plugin signatures: id → public key (PEM, or base64 of the raw 32 bytes). */
    trustedKeys: z.record(z.string(), z.string()).default({}),
    /** Tenants created (or updated) at start-up; their API keys are printed once when first created. */
    tenants: z.array(tenantInputSchema).default([]),
    executor: executorOptionsSchema.prefault({}),
    /** Plugin log lines let through per plugin (token bucket); the rest are counted and dropped. */
    pluginLogs: z.object({ linesPerSecond: z.number().positive().default(100), burst: z.number().int().min(1).default(200) }).strict().prefault({}),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  })
  .strict();

export type ServerConfigInput = z.input<typeof serverConfigSchema>;
export type ServerConfig = z.output<typeof serverConfigSchema>;

export function parseServerConfig(input: unknown): ServerConfig {
  const parsed = serverConfigSchema.safeParse(input);
  if (!parsed.success) throw new PaddockError('PADDOCK_BAD_REQUEST', `invalid server configuration: ${formatZodError(parsed.error)}`);
  return parsed.data;
}

export async function loadConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PaddockError('PADDOCK_NOT_FOUND', `cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return (path.endsWith('.json') ? JSON.parse(text) : parseYaml(text)) as Record<string, unknown>;
  } catch (err) {
    throw new PaddockError('PADDOCK_BAD_REQUEST', `config file ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
}

// Install-time audit: decides from the module's import and export sections alone — no plugin
// code runs — whether the module may be installed under its manifest.

import { createHash } from 'node:crypto';
import { PaddockError } from '../errors.js';
import { EXTISM_ENV_FUNCTIONS, EXTISM_ENV_MODULE, PADDOCK_USER_FUNCTIONS, PADDOCK_USER_MODULE, WASI_MODULE } from '../pool/protocol.js';
import type { Capabilities, Manifest } from './manifest.js';
import { inspectWasm, type ModuleInfo } from './wasm-module.js';

const ENV_FUNCTIONS: ReadonlySet<string> = new Set(EXTISM_ENV_FUNCTIONS);
const HTTP_FUNCTIONS = new Set(['http_request', 'http_status_code', 'http_headers']);
const LOG_FUNCTIONS = new Set(['log_trace', 'log_debug', 'log_info', 'log_warn', 'log_error']);

export interface AuditReport {
  digest: string;
  info: ModuleInfo;
  /** Function exports a caller may invoke. */
  callable: string[];
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Which capability an extism:host/env import needs; null when it needs none. */
function envCapability(name: string): keyof Capabilities | null {
  if (HTTP_FUNCTIONS.has(name)) return 'http';
  if (LOG_FUNCTIONS.has(name)) return 'log';
  return null;
}

/** "kv.read" style capability names, as PADDOCK_USER_FUNCTIONS spells them. */
function declares(c: Capabilities, capability: string): boolean {
  switch (capability) {
    case 'kv.read':
      return Boolean(c.kv?.read);
    case 'kv.write':
      return Boolean(c.kv?.write);
    case 'intents':
      return Boolean(c.intents);
    case 'clock':
      return Boolean(c.clock);
    case 'fs':
      return Boolean(c.fs && (c.fs.read.length > 0 || c.fs.write.length > 0));
    default:
      return false;
  }
}

export function auditModule(bytes: Uint8Array, manifest: Manifest, declared: Capabilities = manifest.capabilities): AuditReport {
  const digest = sha256Hex(bytes);
  if (manifest.sha256 && manifest.sha256 !== digest) {
    throw new PaddockError('PADDOCK_DIGEST_MISMATCH', `wasm digest is sha256:${digest}, manifest pins sha256:${manifest.sha256}`);
  }
  const info = inspectWasm(bytes);
  for (const imp of info.imports) {
    const where = `${imp.module}.${imp.name}`;
    if (imp.module === EXTISM_ENV_MODULE) {
      if (imp.kind !== 'function' || !ENV_FUNCTIONS.has(imp.name)) {
        throw new PaddockError('PADDOCK_UNDECLARED_IMPORT', `unknown Extism host import ${where} (${imp.kind})`);
      }
      const cap = envCapability(imp.name);
      if (cap && !declared[cap]) {
        throw new PaddockError('PADDOCK_UNDECLARED_IMPORT', `import ${where} needs the "${cap}" capability, which the manifest does not declare`);
      }
    } else if (imp.module === PADDOCK_USER_MODULE) {
      const fn = imp.kind === 'function' && Object.hasOwn(PADDOCK_USER_FUNCTIONS, imp.name) ? PADDOCK_USER_FUNCTIONS[imp.name as keyof typeof PADDOCK_USER_FUNCTIONS] : null;
      if (!fn) throw new PaddockError('PADDOCK_UNDECLARED_IMPORT', `unknown Paddock host import ${where} (${imp.kind})`);
      if (fn.capability && !declares(declared, fn.capability)) {
        throw new PaddockError('PADDOCK_UNDECLARED_IMPORT', `import ${where} needs the "${fn.capability}" capability, which the manifest does not declare`);
      }
    } else if (imp.module === WASI_MODULE) {
      if (!declared.wasi) {
        throw new PaddockError('PADDOCK_UNDECLARED_IMPORT', `import ${where} needs the "wasi" capability, which the manifest does not declare`);
      }
    } else {
      throw new PaddockError('PADDOCK_UNDECLARED_IMPORT', `import ${where} (${imp.kind}) is not provided by Paddock`);
    }
  }
  const functions = new Set(info.exports.filter((e) => e.kind === 'function').map((e) => e.name));
  for (const name of manifest.exports ?? []) {
    if (!functions.has(name)) throw new PaddockError('PADDOCK_NO_SUCH_EXPORT', `manifest declares export "${name}", which the module does not export`);
  }
  for (const sub of manifest.subscriptions) {
    if (!functions.has(sub.function)) throw new PaddockError('PADDOCK_NO_SUCH_EXPORT', `subscription to "${sub.topic}" names function "${sub.function}", which the module does not export`);
  }
  const callable = manifest.exports ?? [...functions];
  return { digest, info, callable };
}

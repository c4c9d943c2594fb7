// The one table of Paddock's stable error codes. Every layer (library, HTTP, CLI, metrics)
// maps from here; a code is never reused for another meaning. docs/errors.md is kept in sync
// by test/errors.test.ts.

export const ERRORS = {
  PADDOCK_TIMEOUT: { status: 504, description: 'the call (or the plugin initialisation it needed) ran past its wall-clock deadline; the worker running it was replaced' },
  PADDOCK_MEMORY_LIMIT: { status: 422, description: "the plugin hit its linear-memory cap, or its worker ran out of heap" },
  PADDOCK_OUTPUT_TOO_LARGE: { status: 422, description: 'the plugin produced more output bytes than allowed' },
  PADDOCK_INPUT_TOO_LARGE: { status: 413, description: 'the call input is larger than allowed' },
  PADDOCK_TRAP: { status: 422, description: 'the plugin trapped (unreachable, division by zero, out-of-bounds access, stack overflow, ...)' },
  PADDOCK_PLUGIN_ERROR: { status: 422, description: 'the plugin reported an error (error_set) or returned a non-zero status' },
  PADDOCK_INVALID_WASM: { status: 400, description: 'the bytes are not a valid WebAssembly module, or use a feature Paddock refuses' },
  PADDOCK_INVALID_MANIFEST: { status: 400, description: 'the manifest failed validation; the message names the field' },
  PADDOCK_UNDECLARED_IMPORT: { status: 400, description: 'the module imports a host function whose capability is not declared, or something unknown' },
  PADDOCK_NO_SUCH_EXPORT: { status: 404, description: 'the function is not exported by the plugin (or not declared in its manifest)' },
  PADDOCK_NOT_FOUND: { status: 404, description: 'no such plugin (or tenant, or resource) for this caller' },
  PADDOCK_CAPABILITY_DENIED: { status: 403, description: 'a host call or option needs a capability that is not granted' },
  PADDOCK_RATE_LIMITED: { status: 429, description: 'over the rate limit; retry later' },
  PADDOCK_QUEUE_FULL: { status: 429, description: 'too many calls queued; retry later' },
  PADDOCK_QUARANTINED: { status: 503, description: 'the plugin is quarantined after repeated violations' },
  PADDOCK_DISABLED: { status: 409, description: 'the plugin is disabled' },
  PADDOCK_UNAUTHORIZED: { status: 401, description: 'missing or invalid credentials' },
  PADDOCK_DIGEST_MISMATCH: { status: 400, description: 'the wasm digest does not match the pinned sha256' },
  PADDOCK_BAD_REQUEST: { status: 400, description: 'the request or option is malformed' },
  PADDOCK_SHUTTING_DOWN: { status: 503, description: 'the executor is closing or closed' },
  PADDOCK_SIGNATURE_INVALID: { status: 400, description: 'the publisher signature is missing or does not verify' },
  // Added by Paddock beyond the contract's list.
  PADDOCK_INIT_FAILED: { status: 422, description: "the plugin's initialisation (start/_initialize) timed out or trapped; it is not retried until a new version is installed" },
  PADDOCK_WORKER_CRASHED: { status: 500, description: 'the worker running the call exited unexpectedly; it was replaced' },
  PADDOCK_INSTANCE_LIMIT: { status: 503, description: 'no room for another live plugin instance in this process' },
  PADDOCK_QUOTA_EXCEEDED: { status: 507, description: "a write would take the plugin's KV (or other store) over its byte quota" },
  PADDOCK_HOST_CALL_FAILED: { status: 502, description: 'a host function failed (upstream error, host-call timeout)' },
  PADDOCK_INTERNAL: { status: 500, description: 'a bug in Paddock; please report it' },
} as const satisfies Record<string, { status: number; description: string }>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, x);
}

export class PaddockError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PaddockError';
    this.code = code;
    this.status = ERRORS[code].status;
    if (opts.details) this.details = opts.details;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Match on `code`, never `instanceof`: identity does not survive postMessage or a second copy of the package. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** Normalise anything thrown into a PaddockError without losing the original. */
export function toPaddockError(err: unknown, fallback: ErrorCode = 'PADDOCK_INTERNAL'): PaddockError {
  if (err instanceof PaddockError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (isErrorCode(code)) return new PaddockError(code, message, { cause: err });
  return new PaddockError(fallback, message, { cause: err });
}

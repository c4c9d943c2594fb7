import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { ERRORS, PaddockError, hasCode } from '../dist/index.js';

describe('error codes', () => {
  it('docs/errors.md lists exactly the codes of the errors table, with their HTTP status', async () => {
    const doc = await readFile(new URL('../docs/errors.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `(PADDOCK_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    expect(rows).toEqual(Object.entries(ERRORS).map(([code, e]) => [code, e.status]));
  });

  it('contains every code of the contract', () => {
    const contract = ['PADDOCK_TIMEOUT', 'PADDOCK_MEMORY_LIMIT', 'PADDOCK_OUTPUT_TOO_LARGE', 'PADDOCK_INPUT_TOO_LARGE', 'PADDOCK_TRAP', 'PADDOCK_PLUGIN_ERROR', 'PADDOCK_INVALID_WASM', 'PADDOCK_INVALID_MANIFEST', 'PADDOCK_UNDECLARED_IMPORT', 'PADDOCK_NO_SUCH_EXPORT', 'PADDOCK_NOT_FOUND', 'PADDOCK_CAPABILITY_DENIED', 'PADDOCK_RATE_LIMITED', 'PADDOCK_QUEUE_FULL', 'PADDOCK_QUARANTINED', 'PADDOCK_DISABLED', 'PADDOCK_UNAUTHORIZED', 'PADDOCK_DIGEST_MISMATCH', 'PADDOCK_BAD_REQUEST', 'PADDOCK_SHUTTING_DOWN', 'PADDOCK_SIGNATURE_INVALID'];
    for (const code of contract) expect(Object.keys(ERRORS)).toContain(code);
  });

  it('PaddockError carries code and status, and hasCode matches on the code alone', () => {
    const e = new PaddockError('PADDOCK_QUEUE_FULL', 'full');
    expect([e.code, e.status, e.name]).toEqual(['PADDOCK_QUEUE_FULL', 429, 'PaddockError']);
    expect(hasCode({ code: 'PADDOCK_QUEUE_FULL' }, 'PADDOCK_QUEUE_FULL')).toBe(true);
    expect(hasCode(new Error('x'), 'PADDOCK_QUEUE_FULL')).toBe(false);
  });
});

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const exec = promisify(execFile);

describe('bench smoke (no timing is asserted)', () => {
  it('runs every section and fills every row of the table', async () => {
    const out = await mkdtemp(join(tmpdir(), 'paddock-bench-smoke-'));
    try {
      await exec(process.execPath, [fileURLToPath(new URL('../bench/run.mjs', import.meta.url)), '--smoke', '--out', out], { timeout: 120_000 });
      const { meta, rows } = JSON.parse(await readFile(join(out, 'latest.json'), 'utf8'));
      expect(meta.smoke).toBe(true);
      expect(new Set(rows.map((r: { section: string }) => r.section))).toEqual(new Set(['a', 'b', 'c', 'd', 'e']));
      for (const r of rows) expect(Number.isFinite(r.value)).toBe(true);
      expect(await readFile(join(out, 'latest.md'), 'utf8')).toMatch(/^\| a \| Paddock createExecutor/m);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  }, 150_000);
});

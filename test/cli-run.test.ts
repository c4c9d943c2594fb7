import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from './helpers/wat.js';

const bin = fileURLToPath(new URL('../bin/paddock.js', import.meta.url));
const plugins = fileURLToPath(new URL('../build/plugins/', import.meta.url));
const exec = promisify(execFile);

async function paddock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string; raw: Buffer }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, ...args], { timeout: 20_000, encoding: 'buffer' });
    return { code: 0, stdout: stdout.toString(), stderr: stderr.toString(), raw: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: Buffer; stderr: Buffer };
    return { code: e.code, stdout: e.stdout.toString(), stderr: e.stderr.toString(), raw: e.stdout };
  }
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'paddock-cli-'));
  for (const name of ['loop-forever', 'memory-bomb', 'unreachable', 'echo']) {
    await writeFile(join(dir, `${name}.wasm`), await fixture(name));
  }
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('paddock run', () => {
  it('runs an AssemblyScript (as-pdk) plugin unmodified and writes its output to stdout', async () => {
    const r = await paddock('run', join(plugins, 'count-vowels.wasm'), 'count_vowels', '--input', 'Hello, World!');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ count: 3, total: 3, vowels: 'aeiouAEIOU' });
  });

  it('passes --config values and keeps plugin vars across --repeat calls of one instance', async () => {
    const greet = await paddock('run', join(plugins, 'greet.wasm'), 'greet', '--input', 'Ada', '--config', 'greeting=Howdy');
    expect(greet.stdout).toBe('Howdy, Ada!');
    const repeated = await paddock('run', join(plugins, 'count-vowels.wasm'), 'count_vowels', '--input', 'aa', '--repeat', '3');
    expect(repeated.stdout).toBe(['2', '4', '6'].map((t) => `{"count":2,"total":${t},"vowels":"aeiouAEIOU"}`).join(''));
  });

  it('runs a plugin folder: its .wasm with the paddock.yaml manifest beside it', async () => {
    const folder = join(dir, 'greeter');
    await mkdir(folder);
    await writeFile(join(folder, 'greet.wasm'), await readFile(join(plugins, 'greet.wasm')));
    await writeFile(join(folder, 'paddock.yaml'), 'name: greeter\nversion: 1.0.0\nconfig:\n  greeting: Ahoy\n');
    const r = await paddock('run', folder, 'greet', '--input', 'Sam');
    expect([r.code, r.stdout]).toEqual([0, 'Ahoy, Sam!']);
  });

  it('reads input from --input-file, byte for byte', async () => {
    const f = join(dir, 'input.bin');
    await writeFile(f, Buffer.from([0, 255, 10, 13, 0]));
    const r = await paddock('run', join(dir, 'echo.wasm'), 'echo', '--input-file', f);
    expect(r.raw).toEqual(Buffer.from([0, 255, 10, 13, 0]));
  });

  it('fails with one line "CODE: message" on stderr and a non-zero exit', async () => {
    const loop = await paddock('run', join(dir, 'loop-forever.wasm'), 'run', '--timeout-ms', '200');
    expect(loop.code).toBe(1);
    expect(loop.stderr).toMatch(/^PADDOCK_TIMEOUT: .+\n$/);
    const bomb = await paddock('run', join(dir, 'memory-bomb.wasm'), 'run', '--memory-pages', '16');
    expect(bomb.stderr).toMatch(/^PADDOCK_MEMORY_LIMIT: .*16 pages/);
    const trap = await paddock('run', join(dir, 'unreachable.wasm'), 'run');
    expect(trap.stderr).toMatch(/^PADDOCK_TRAP: /);
    const missing = await paddock('run', join(dir, 'nope.wasm'), 'run');
    expect(missing.stderr).toMatch(/^PADDOCK_NOT_FOUND: /);
    const noExport = await paddock('run', join(dir, 'echo.wasm'), 'nothing');
    expect(noExport.stderr).toMatch(/^PADDOCK_NO_SUCH_EXPORT: /);
    const failer = await paddock('run', join(plugins, 'failer.wasm'), 'fail');
    expect(failer.stderr).toMatch(/^PADDOCK_PLUGIN_ERROR: something went wrong/);
  });

  it('prints plugin logs to stderr with --log-level', async () => {
    const r = await paddock('run', join(plugins, 'logger.wasm'), 'log_all', '--log-level', 'debug');
    expect(r.stdout).toBe('logged');
    expect(r.stderr).toMatch(/\[info\]/);
    expect(r.stderr).toMatch(/\[debug\]/);
    expect(r.stderr).toMatch(/\[warn\]/);
    expect(r.stderr).toMatch(/\[error\]/);
  });
});

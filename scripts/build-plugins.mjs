#!/usr/bin/env node
// Compiles the AssemblyScript example plugins in examples/plugins/<name>/index.ts
// to build/plugins/<name>.wasm.
//
//   node scripts/build-plugins.mjs              # every plugin
//   node scripts/build-plugins.mjs echo greet   # just these
//
// Flags used for every plugin:
//   -O3 --shrinkLevel 0        optimise for speed
//   --use abort=index/onAbort  each plugin's own abort handler replaces the
//                              default `env.abort` import, which Extism hosts
//                              do not provide (see @extism/as-pdk's README)
// The default (incremental GC) runtime is kept: a plugin instance lives across
// many calls, so garbage has to be collected.
import { mkdir, readdir, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import asc from 'assemblyscript/asc';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const pluginsDir = join(root, 'examples', 'plugins');
const outDir = join(root, 'build', 'plugins');

const available = (await readdir(pluginsDir, { withFileTypes: true }))
  .filter((entry) => entry.isDirectory() && existsSync(join(pluginsDir, entry.name, 'index.ts')))
  .map((entry) => entry.name)
  .sort();

const requested = process.argv.slice(2);
const unknown = requested.filter((name) => !available.includes(name));
if (unknown.length > 0) {
  console.error(`unknown plugin(s): ${unknown.join(', ')} (available: ${available.join(', ')})`);
  process.exit(1);
}
const names = requested.length > 0 ? requested : available;
if (names.length === 0) {
  console.error(`no plugins found under ${relative(root, pluginsDir)}`);
  process.exit(1);
}

await mkdir(outDir, { recursive: true });

let failures = 0;
for (const name of names) {
  const outFile = join(outDir, `${name}.wasm`);
  const started = performance.now();
  let output = '';
  const collect = { write: (chunk) => { output += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString(); } };
  const { error } = await asc.main(
    [
      'index.ts',
      '--baseDir', join(pluginsDir, name),
      '--outFile', outFile,
      '-O3',
      '--shrinkLevel', '0',
      '--use', 'abort=index/onAbort',
      '--noColors',
    ],
    { stdout: collect, stderr: collect },
  );
  if (error) {
    failures++;
    console.error(`✗ ${name}: ${error.message}\n${output.trimEnd()}`);
    continue;
  }
  if (output.trim()) console.error(output.trimEnd()); // warnings
  const { size } = await stat(outFile);
  const ms = Math.round(performance.now() - started);
  console.log(`✓ ${name.padEnd(14)} ${String(size).padStart(7)} bytes  ${relative(root, outFile)}  (${ms} ms)`);
}

if (failures > 0) {
  console.error(`${failures} of ${names.length} plugin(s) failed to build`);
  process.exit(1);
}

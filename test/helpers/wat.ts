// Compiles the WAT fixtures with wabt (a pure-wasm build of the reference toolkit), so the
// hostile modules live in the repo as readable text rather than opaque binaries.
import { readFile } from 'node:fs/promises';
import wabtInit from 'wabt';

type Wabt = Awaited<ReturnType<typeof wabtInit>>;

let wabt: Promise<Wabt> | undefined;

// Post-MVP features some fixtures (and the parser tests) use; enabling them only widens what
// parses, it never changes how an MVP module is encoded.
const FEATURES = {
  mutable_globals: true,
  sat_float_to_int: true,
  sign_extension: true,
  multi_value: true,
  bulk_memory: true,
  reference_types: true,
  exceptions: true,
  threads: true,
  memory64: true,
  multi_memory: true, // absent from the typings, honoured by the build
};

const FIXTURES = new URL('../fixtures/wat/', import.meta.url);

export async function watToWasm(source: string, filename = 'inline.wat'): Promise<Uint8Array> {
  wabt ??= wabtInit();
  const module = (await wabt).parseWat(filename, source, FEATURES);
  try {
    module.resolveNames();
    // wabt.js's validate() takes the feature set too, though its typings omit the parameter.
    (module as unknown as { validate(features: typeof FEATURES): void }).validate(FEATURES);
    return Uint8Array.from(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

export async function fixture(name: string): Promise<Uint8Array> {
  const source = await readFile(new URL(`${name}.wat`, FIXTURES), 'utf8');
  return watToWasm(source, `${name}.wat`);
}

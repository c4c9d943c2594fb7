import type { Executor, ExecutorOptions } from '../../dist/index.js';
import { createExecutor } from '../../dist/index.js';
import { fixture } from './wat.js';

/** Executors created by a test file; closed by `destroyAll` in afterEach/afterAll. */
const live = new Set<Executor>();

export async function newExecutor(options: ExecutorOptions = {}): Promise<Executor> {
  const ex = await createExecutor(options);
  live.add(ex);
  return ex;
}

export async function destroyAll(): Promise<void> {
  await Promise.all([...live].map((ex) => ex.destroy()));
  live.clear();
}

export async function installFixture(ex: Executor, name: string, fixtureName = name, manifest: Record<string, unknown> = {}, tenant?: string) {
  return ex.install({ name, version: '1.0.0', ...manifest }, await fixture(fixtureName), tenant ? { tenant } : {});
}

export const text = (b: Uint8Array) => new TextDecoder().decode(b);

export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return (err as { code?: string }).code ?? `UNCODED: ${String(err)}`;
  }
}

export function u64(b: Uint8Array): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
}

// Two ways for a call to fail.
import { Memory } from "@extism/as-pdk";
import { error_set } from "@extism/as-pdk/lib/env";

// A handled failure: set an error message and return non-zero.
export function fail(): i32 {
  error_set(Memory.allocateString("something went wrong").offset);
  return 1;
}

// An unhandled failure: AssemblyScript compiles `throw` to abort(), which runs
// onAbort below and then traps, so the call fails.
export function abort_now(): i32 {
  throw new Error("abort_now was called");
}

// Built with `--use abort=index/onAbort`: report AssemblyScript aborts through
// Extism's error channel (the compiler emits a trap right after this returns).
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(Memory.allocateString(text).offset);
}

// echo: returns the input bytes unchanged. noop: succeeds without any output.
import { Host, Memory } from "@extism/as-pdk";
import { error_set } from "@extism/as-pdk/lib/env";

export function echo(): i32 {
  Host.output(Host.input());
  return 0;
}

export function noop(): i32 {
  return 0;
}

// Built with `--use abort=index/onAbort`: report AssemblyScript aborts through
// Extism's error channel (the compiler emits a trap right after this returns).
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(Memory.allocateString(text).offset);
}

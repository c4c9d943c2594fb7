// Greets the input, using the host-provided config key "greeting" if present.
import { Config, Host, Memory } from "@extism/as-pdk";
import { error_set } from "@extism/as-pdk/lib/env";

export function greet(): i32 {
  const greeting = Config.get("greeting");
  const text = `${greeting !== null ? greeting : "Hello"}, ${Host.inputString()}!`;
  // Host.outputString() sizes the output in UTF-16 units, so send UTF-8 bytes instead.
  Host.output(Uint8Array.wrap(String.UTF8.encode(text)));
  return 0;
}

// Built with `--use abort=index/onAbort`: report AssemblyScript aborts through
// Extism's error channel (the compiler emits a trap right after this returns).
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(Memory.allocateString(text).offset);
}

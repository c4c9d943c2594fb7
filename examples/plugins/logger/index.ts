// Logs one message at each level the PDK supports, then outputs "logged".
import { Host, LogLevel, Memory } from "@extism/as-pdk";
import { error_set } from "@extism/as-pdk/lib/env";

export function log_all(): i32 {
  Host.log(LogLevel.Info, "info from logger plugin");
  Host.log(LogLevel.Debug, "debug from logger plugin");
  Host.log(LogLevel.Warn, "warn from logger plugin");
  Host.log(LogLevel.Error, "error from logger plugin");
  Host.outputString("logged");
  return 0;
}

// Built with `--use abort=index/onAbort`: report AssemblyScript aborts through
// Extism's error channel (the compiler emits a trap right after this returns).
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(Memory.allocateString(text).offset);
}

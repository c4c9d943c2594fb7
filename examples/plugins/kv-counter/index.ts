// A hit counter in the plugin's KV store (built on the Paddock SDK).
//   incr  input: key (default "hits") → the new count
//   get   input: key (default "hits") → the stored value, or "" if there is none
//   reset input: key (default "hits") → "deleted" or "missing"
//   keys  → JSON array of every key
// When the host refuses KV (not granted, over quota, ...) the output is "denied: <code>".
import { input, jsonStringArray, kv, lastError, output, reportAbort } from "../../../sdk/assemblyscript";

function keyFromInput(): string {
  const key = input.string();
  return key.length > 0 ? key : "hits";
}

function denied(): i32 {
  const err = lastError();
  output.string(`denied: ${err !== null ? err.code : "UNKNOWN"}`);
  return 0;
}

export function incr(): i32 {
  const key = keyFromInput();
  const current = kv.get(key);
  if (lastError() !== null) return denied();
  let count: i64 = 0;
  if (current !== null && current.length > 0) count = I64.parseInt(current);
  const next = (count + 1).toString();
  if (!kv.set(key, next)) return denied();
  output.string(next);
  return 0;
}

export function get(): i32 {
  const value = kv.get(keyFromInput());
  if (lastError() !== null) return denied();
  output.string(value !== null ? value : "");
  return 0;
}

export function reset(): i32 {
  const deleted = kv.delete(keyFromInput());
  if (lastError() !== null) return denied();
  output.string(deleted ? "deleted" : "missing");
  return 0;
}

export function keys(): i32 {
  const all = kv.list("");
  if (lastError() !== null) return denied();
  output.string(jsonStringArray(all));
  return 0;
}

function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  reportAbort(message, file, line, column);
}

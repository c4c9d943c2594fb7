// The classic Extism demo: count the vowels in the input and keep a running
// total across calls in the plugin variable "total".
import { Host, Memory, Var } from "@extism/as-pdk";
import { error_set } from "@extism/as-pdk/lib/env";

const VOWELS = "aeiouAEIOU";

export function count_vowels(): i32 {
  const input = Host.inputString();
  let count = 0;
  for (let i = 0; i < input.length; i++) {
    if (VOWELS.includes(input.charAt(i))) count++;
  }

  // Vars persist between calls on the same plugin instance; stored as decimal text.
  const previous = Var.getString("total");
  const total = (previous === null ? 0 : I32.parseInt(previous)) + count;
  Var.set("total", Uint8Array.wrap(String.UTF8.encode(total.toString())));

  Host.outputString(`{"count":${count},"total":${total},"vowels":"${VOWELS}"}`);
  return 0;
}

// Built with `--use abort=index/onAbort`: report AssemblyScript aborts through
// Extism's error channel (the compiler emits a trap right after this returns).
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(Memory.allocateString(text).offset);
}

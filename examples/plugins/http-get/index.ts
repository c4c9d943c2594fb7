// GETs the URL given as input through the host's HTTP support and outputs the body.
import { Host, Memory } from "@extism/as-pdk";
import { error_set, http_request, length } from "@extism/as-pdk/lib/env";

// Part of the Extism host ABI, but not declared by @extism/as-pdk 1.0.0.
@external("extism:host/env", "http_status_code")
declare function http_status_code(): i32;

function fail(message: string): i32 {
  error_set(Memory.allocateString(message).offset);
  return 1;
}

export function fetch(): i32 {
  const url = Host.inputString();
  const request = `{"method":"GET","url":${jsonString(url)}}`;
  const response = http_request(Memory.allocateString(request).offset, 0);

  const status = http_status_code(); // 0 when no response arrived
  if (status < 200 || status > 299) {
    return fail(status == 0 ? `GET ${url} failed: no response` : `GET ${url} failed: HTTP ${status}`);
  }

  // Hand the host's response block straight back as the output.
  if (response != 0) Host.outputMemory(new Memory(response, length(response)));
  return 0;
}

// Quotes a string as a JSON string literal (enough for URLs).
function jsonString(s: string): string {
  return '"' + s.replaceAll("\\", "\\\\").replaceAll('"', '\\"') + '"';
}

// Built with `--use abort=index/onAbort`: report AssemblyScript aborts through
// Extism's error channel (the compiler emits a trap right after this returns).
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(Memory.allocateString(text).offset);
}

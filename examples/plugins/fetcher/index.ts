// fetch: sends an HTTP request through the host and outputs "<status> <body>".
//   input: "URL", or "METHOD URL"; anything after the first newline is the request body.
// When no response arrives the output is "refused: <code>" (the host's allowlist said no)
// or "failed: <code>" (the request itself failed: connection refused, timeout, ...).
import { http, output, input, reportAbort } from "../../../sdk/assemblyscript";

export function fetch(): i32 {
  const text = input.string();
  let head = text;
  let body: string | null = null;
  const nl = text.indexOf("\n");
  if (nl >= 0) {
    head = text.substring(0, nl);
    body = text.substring(nl + 1);
  }
  head = head.trim();
  let method = "GET";
  let url = head;
  const space = head.indexOf(" ");
  if (space > 0) {
    method = head.substring(0, space).toUpperCase();
    url = head.substring(space + 1).trim();
  }

  const headers = new Map<string, string>();
  headers.set("x-paddock-plugin", "fetcher");
  const res = http.fetch(url, method, body, headers);
  if (res.status == 0) {
    const code = res.error !== null ? res.error! : "UNKNOWN";
    const refused = code == "PADDOCK_CAPABILITY_DENIED" || code == "PADDOCK_RATE_LIMITED";
    output.string(`${refused ? "refused" : "failed"}: ${code}`);
    return 0;
  }
  output.string(`${res.status} ${res.text()}`);
  return 0;
}

function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  reportAbort(message, file, line, column);
}

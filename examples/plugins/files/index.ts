// Files under the directories the operator mounted (guest paths).
//   read  input: path             → the file's content
//   write input: "path\ncontent"  → "wrote <n>" (bytes)
//   ls    input: path             → JSON [{"name":..,"type":"file"|"dir"|"other"}, ...]
// On failure the output is "refused: <code>" (policy: not mounted, read-only, escapes the
// mount), "missing: <code>" (no such file) or "error: <code>" (anything else).
import { FsEntry, fs, input, jsonString, lastError, output, reportAbort } from "../../../sdk/assemblyscript";

function failure(): i32 {
  const err = lastError();
  const code = err !== null ? err.code : "UNKNOWN";
  const kind = code == "PADDOCK_CAPABILITY_DENIED" ? "refused" : code == "PADDOCK_NOT_FOUND" ? "missing" : "error";
  output.string(`${kind}: ${code}`);
  return 0;
}

export function read(): i32 {
  const data = fs.read(input.string());
  if (data === null) return failure();
  output.bytes(data);
  return 0;
}

export function write(): i32 {
  const text = input.string();
  const nl = text.indexOf("\n");
  const path = nl >= 0 ? text.substring(0, nl) : text;
  const content = nl >= 0 ? text.substring(nl + 1) : "";
  const data = Uint8Array.wrap(String.UTF8.encode(content));
  if (!fs.write(path, data)) return failure();
  output.string(`wrote ${data.length}`);
  return 0;
}

export function ls(): i32 {
  const entries = fs.list(input.string());
  if (entries === null) return failure();
  const parts = new Array<string>(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const e: FsEntry = entries[i];
    parts[i] = `{"name":${jsonString(e.name)},"type":${jsonString(e.type)}}`;
  }
  output.string("[" + parts.join(",") + "]");
  return 0;
}

function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  reportAbort(message, file, line, column);
}

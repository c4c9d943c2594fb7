// Paddock plugin SDK for AssemblyScript, on top of @extism/as-pdk.
//
//   import { kv, log, input, output, lastError, reportAbort } from "../../../sdk/assemblyscript";
//
//   export function incr(): i32 {
//     const v = kv.get("hits");
//     const err = lastError();
//     if (err !== null) { output.string(`denied: ${err.code}`); return 0; }
//     ...
//   }
//
// Error convention (AssemblyScript has no catchable exceptions): every wrapper of a Paddock host
// function returns a plain value that also marks failure (null, false, -1 or an empty list, see
// each function), and sets `lastError()` — null after a call that succeeded, the host's
// {code, message} after one that was refused or failed. Where a plain value is ambiguous
// (kv.get's null: missing or refused?), check lastError().
//
// Imports: a `paddock_*` host function ends up in the .wasm only if the plugin calls the
// wrapper that uses it (the compiler drops unused @external declarations), so a plugin that
// never touches fs does not need the fs capability.

import {
  alloc,
  config_get,
  error_set,
  free,
  http_request,
  input_length,
  input_load_u64,
  input_load_u8,
  length,
  load_u64,
  load_u8,
  log_debug,
  log_error,
  log_info,
  log_warn,
  output_set,
  store_u64,
  store_u8,
} from "@extism/as-pdk/lib/env";
import { JsonValue, jsonString } from "./json";

export { JsonKind, JsonValue, jsonString, jsonStringArray } from "./json";

// ---- host imports -------------------------------------------------------------------------
// Part of the Extism host ABI but not declared by @extism/as-pdk 1.0.0.
@external("extism:host/env", "http_status_code")
declare function http_status_code(): i32;
@external("extism:host/env", "http_headers")
declare function http_headers(): u64;
@external("extism:host/env", "log_trace")
declare function log_trace(offset: u64): void;

// Paddock's own host functions: block addresses in, a block address / number / -1 out.
@external("extism:host/user", "paddock_kv_get")
declare function paddock_kv_get(key: u64): i64;
@external("extism:host/user", "paddock_kv_set")
declare function paddock_kv_set(key: u64, value: u64): i64;
@external("extism:host/user", "paddock_kv_delete")
declare function paddock_kv_delete(key: u64): i64;
@external("extism:host/user", "paddock_kv_list")
declare function paddock_kv_list(prefix: u64): i64;
@external("extism:host/user", "paddock_intent_emit")
declare function paddock_intent_emit(topic: u64, payload: u64): i64;
@external("extism:host/user", "paddock_clock_now")
declare function paddock_clock_now(): i64;
@external("extism:host/user", "paddock_fs_read")
declare function paddock_fs_read(path: u64): i64;
@external("extism:host/user", "paddock_fs_write")
declare function paddock_fs_write(path: u64, data: u64): i64;
@external("extism:host/user", "paddock_fs_list")
declare function paddock_fs_list(path: u64): i64;
@external("extism:host/user", "paddock_last_error")
declare function paddock_last_error(): i64;

// ---- kernel-memory blocks -----------------------------------------------------------------
// Copies go 8 bytes at a time and honour a view's byteOffset (as-pdk's Memory.store/load
// assume a view that starts at offset 0 of its buffer).

function copyIn(ptr: usize, len: i32): u64 {
  const addr = alloc(<u64>len);
  let i = 0;
  for (; i + 8 <= len; i += 8) store_u64(addr + <u64>i, load<u64>(ptr + <usize>i));
  for (; i < len; i++) store_u8(addr + <u64>i, load<u8>(ptr + <usize>i));
  return addr;
}

/** A new block holding the bytes. */
function bytesBlock(data: Uint8Array): u64 {
  return copyIn(data.dataStart, data.length);
}

/** A new block holding the string as UTF-8. */
function stringBlock(s: string): u64 {
  const buf = String.UTF8.encode(s);
  return copyIn(changetype<usize>(buf), buf.byteLength);
}

/** The bytes of a block (a copy in guest memory). */
function readBlock(addr: u64): Uint8Array {
  const len = <i32>length(addr);
  const out = new Uint8Array(len);
  const ptr = out.dataStart;
  let i = 0;
  for (; i + 8 <= len; i += 8) store<u64>(ptr + <usize>i, load_u64(addr + <u64>i));
  for (; i < len; i++) store<u8>(ptr + <usize>i, load_u8(addr + <u64>i));
  return out;
}

function decodeUtf8(bytes: Uint8Array): string {
  return String.UTF8.decodeUnsafe(bytes.dataStart, <usize>bytes.length);
}

/** Reads a result block as text and gives it back to the host. */
function takeString(addr: u64): string {
  const s = decodeUtf8(readBlock(addr));
  free(addr);
  return s;
}

function takeBytes(addr: u64): Uint8Array {
  const b = readBlock(addr);
  free(addr);
  return b;
}

// ---- errors -------------------------------------------------------------------------------

/** Why the host refused or failed a call: a stable code (PADDOCK_...) and a message. */
export class PaddockHostError {
  constructor(public code: string, public message: string) {}

  toString(): string {
    return this.code + ": " + this.message;
  }
}

let lastHostError: PaddockHostError | null = null;

/**
 * The error of the most recent SDK call into the host (kv, intents, clock, fs, http): null if
 * that call succeeded. Read it right after the call whose result you need to tell apart.
 */
export function lastError(): PaddockHostError | null {
  return lastHostError;
}

/** Fetches {code, message} from paddock_last_error() after a host function returned -1. */
function recordFailure(): void {
  const addr = paddock_last_error();
  let code = "PADDOCK_HOST_CALL_FAILED";
  let message = "the host reported a failure without details";
  if (addr > 0) {
    const parsed = JsonValue.parse(takeString(<u64>addr));
    if (parsed !== null) {
      const c = parsed.get("code");
      const m = parsed.get("message");
      if (c !== null && c.isString()) code = c.text;
      if (m !== null && m.isString()) message = m.text;
    }
  }
  lastHostError = new PaddockHostError(code, message);
}

function recordSuccess(): void {
  lastHostError = null;
}

/** Turns a host status (-1 = refused or failed) into a bool, recording lastError(). */
function settled(r: i64): bool {
  if (r == -1) {
    recordFailure();
    return false;
  }
  recordSuccess();
  return true;
}

/** Reports a plugin error (the call fails with PADDOCK_PLUGIN_ERROR); returns 1 for `return fail(...)`. */
export function fail(message: string): i32 {
  error_set(stringBlock(message));
  return 1;
}

/**
 * Body of a plugin's abort handler (plugins are built with `--use abort=index/onAbort`):
 *
 *   function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
 *     reportAbort(message, file, line, column);
 *   }
 */
export function reportAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  const text = `${message !== null ? message : "abort"} at ${file !== null ? file : "?"}:${line}:${column}`;
  error_set(stringBlock(text));
}

// ---- input / output / config / log --------------------------------------------------------

export abstract class input {
  /** The call's input bytes. */
  static bytes(): Uint8Array {
    const len = <i32>input_length();
    const out = new Uint8Array(len);
    const ptr = out.dataStart;
    let i = 0;
    for (; i + 8 <= len; i += 8) store<u64>(ptr + <usize>i, input_load_u64(<u64>i));
    for (; i < len; i++) store<u8>(ptr + <usize>i, input_load_u8(<u64>i));
    return out;
  }

  /** The call's input decoded as UTF-8. */
  static string(): string {
    return decodeUtf8(input.bytes());
  }
}

export abstract class output {
  static bytes(data: Uint8Array): void {
    output_set(bytesBlock(data), <u64>data.length);
  }

  /** Sets the output to the string as UTF-8 (as-pdk's Host.outputString sizes it in UTF-16 units). */
  static string(s: string): void {
    const buf = String.UTF8.encode(s);
    output_set(copyIn(changetype<usize>(buf), buf.byteLength), <u64>buf.byteLength);
  }
}

export abstract class config {
  /** A value from the manifest's `config`; null if the key is not set. */
  static get(key: string): string | null {
    const k = stringBlock(key);
    const addr = config_get(k);
    if (addr == 0) {
      free(k);
      return null;
    }
    const value = takeString(addr);
    free(k);
    return value;
  }
}

/** Logging; needs the `log` capability. Lines below the manifest's logLevel are dropped by the host. */
export abstract class log {
  static trace(message: string): void {
    const b = stringBlock(message);
    log_trace(b);
    free(b);
  }

  static debug(message: string): void {
    const b = stringBlock(message);
    log_debug(b);
    free(b);
  }

  static info(message: string): void {
    const b = stringBlock(message);
    log_info(b);
    free(b);
  }

  static warn(message: string): void {
    const b = stringBlock(message);
    log_warn(b);
    free(b);
  }

  static error(message: string): void {
    const b = stringBlock(message);
    log_error(b);
    free(b);
  }
}

// ---- kv -----------------------------------------------------------------------------------

/** The plugin's own key-value store (keys: 1 to 1024 UTF-8 bytes). kv.read / kv.write capabilities. */
export abstract class kv {
  /** The value's bytes; null if the key is missing or the call failed (see lastError()). */
  static getBytes(key: string): Uint8Array | null {
    const k = stringBlock(key);
    const r = paddock_kv_get(k);
    if (r == -1) {
      free(k);
      recordFailure();
      return null;
    }
    recordSuccess();
    const value: Uint8Array | null = r == 0 ? null : takeBytes(<u64>r);
    free(k);
    return value;
  }

  /** The value as UTF-8 text; null if the key is missing or the call failed (see lastError()). */
  static get(key: string): string | null {
    const value = kv.getBytes(key);
    return value === null ? null : decodeUtf8(value);
  }

  /** Stores the bytes; false if refused or over quota (see lastError()). */
  static setBytes(key: string, value: Uint8Array): bool {
    const k = stringBlock(key);
    const v = bytesBlock(value);
    const r = paddock_kv_set(k, v);
    free(v);
    free(k);
    return settled(r);
  }

  /** Stores the string as UTF-8; false if refused or over quota (see lastError()). */
  static set(key: string, value: string): bool {
    return kv.setBytes(key, Uint8Array.wrap(String.UTF8.encode(value)));
  }

  /** True if the key existed and was deleted; false if it was missing or the call failed (see lastError()). */
  static delete(key: string): bool {
    const k = stringBlock(key);
    const r = paddock_kv_delete(k);
    free(k);
    if (r == -1) {
      recordFailure();
      return false;
    }
    recordSuccess();
    return r == 1;
  }

  /** Keys starting with `prefix`, sorted (the host caps the list); empty if the call failed (see lastError()). */
  static list(prefix: string = ""): string[] {
    const p: u64 = prefix.length > 0 ? stringBlock(prefix) : 0;
    const r = paddock_kv_list(p);
    const keys = new Array<string>();
    if (r == -1) {
      if (p != 0) free(p);
      recordFailure();
      return keys;
    }
    recordSuccess();
    if (r != 0) {
      const parsed = JsonValue.parse(takeString(<u64>r));
      if (parsed !== null) {
        for (let i = 0; i < parsed.length; i++) {
          const item = parsed.items[i];
          if (item.isString()) keys.push(item.text);
        }
      }
    }
    if (p != 0) free(p);
    return keys;
  }
}

// ---- intents ------------------------------------------------------------------------------

/** Intents (events) for other plugins; delivered only after the current call succeeds. `intents` capability. */
export abstract class intents {
  /** Queues an intent on `topic`; false if the topic is not granted (see lastError()). */
  static emit(topic: string, payload: string): bool {
    const buf = String.UTF8.encode(payload);
    return intents.emitRaw(topic, copyIn(changetype<usize>(buf), buf.byteLength));
  }

  static emitBytes(topic: string, payload: Uint8Array): bool {
    return intents.emitRaw(topic, bytesBlock(payload));
  }

  private static emitRaw(topic: string, payloadBlock: u64): bool {
    const t = stringBlock(topic);
    const r = paddock_intent_emit(t, payloadBlock);
    free(t);
    free(payloadBlock);
    return settled(r);
  }
}

// ---- clock --------------------------------------------------------------------------------

export abstract class clock {
  /** Milliseconds since the Unix epoch; -1 if the clock is not granted (see lastError()). */
  static now(): i64 {
    const r = paddock_clock_now();
    if (r == -1) {
      recordFailure();
      return -1;
    }
    recordSuccess();
    return r;
  }
}

// ---- fs -----------------------------------------------------------------------------------

export class FsEntry {
  constructor(public name: string, public type: string) {}

  isFile(): bool {
    return this.type == "file";
  }

  isDir(): bool {
    return this.type == "dir";
  }
}

/**
 * Files under the directories the operator mounted (guest paths, e.g. "/data/a.txt"). `fs`
 * capability. Typical error codes: PADDOCK_CAPABILITY_DENIED (not mounted, read-only, escapes
 * the mount), PADDOCK_NOT_FOUND, PADDOCK_BAD_REQUEST (a directory, too large).
 */
export abstract class fs {
  /** The file's bytes; null if the call failed (see lastError()). */
  static read(path: string): Uint8Array | null {
    const p = stringBlock(path);
    const r = paddock_fs_read(p);
    if (r == -1) {
      free(p);
      recordFailure();
      return null;
    }
    recordSuccess();
    const data = r == 0 ? new Uint8Array(0) : takeBytes(<u64>r);
    free(p);
    return data;
  }

  /** The file as UTF-8 text; null if the call failed (see lastError()). */
  static readString(path: string): string | null {
    const data = fs.read(path);
    return data === null ? null : decodeUtf8(data);
  }

  /** Creates or replaces the file; false if the call failed (see lastError()). */
  static write(path: string, data: Uint8Array): bool {
    const p = stringBlock(path);
    const d = bytesBlock(data);
    const r = paddock_fs_write(p, d);
    free(d);
    free(p);
    return settled(r);
  }

  static writeString(path: string, text: string): bool {
    return fs.write(path, Uint8Array.wrap(String.UTF8.encode(text)));
  }

  /** A directory's entries, sorted by name; null if the call failed (see lastError()). */
  static list(path: string): FsEntry[] | null {
    const p = stringBlock(path);
    const r = paddock_fs_list(p);
    if (r == -1) {
      free(p);
      recordFailure();
      return null;
    }
    recordSuccess();
    const entries = new Array<FsEntry>();
    if (r != 0) {
      const parsed = JsonValue.parse(takeString(<u64>r));
      if (parsed !== null) {
        for (let i = 0; i < parsed.length; i++) {
          const item = parsed.items[i];
          const name = item.get("name");
          const type = item.get("type");
          if (name !== null && name.isString()) entries.push(new FsEntry(name.text, type !== null && type.isString() ? type.text : "other"));
        }
      }
    }
    free(p);
    return entries;
  }
}

// ---- http ---------------------------------------------------------------------------------

export class HttpResponse {
  /** HTTP status; 0 when no response arrived (refused by the host, or the request failed). */
  status: i32 = 0;
  body: Uint8Array = new Uint8Array(0);
  /** Response headers, lower-case names. */
  headers: Map<string, string> = new Map<string, string>();
  /** When status is 0: the host's error code (e.g. PADDOCK_CAPABILITY_DENIED); otherwise null. */
  error: string | null = null;
  /** When status is 0: the host's error message; otherwise null. */
  errorMessage: string | null = null;

  /** True for a 2xx status. */
  get ok(): bool {
    return this.status >= 200 && this.status < 300;
  }

  /** The body decoded as UTF-8. */
  text(): string {
    return decodeUtf8(this.body);
  }

  header(name: string): string | null {
    const key = name.toLowerCase();
    return this.headers.has(key) ? this.headers.get(key) : null;
  }
}

export abstract class http {
  /**
   * Sends a request through the host (`http` capability; the host's allowlist decides). Never
   * traps on refusal: check `status` (0 = no response) and `error`; lastError() is set too.
   */
  static fetch(url: string, method: string = "GET", body: string | null = null, headers: Map<string, string> | null = null): HttpResponse {
    let request = "{\"method\":" + jsonString(method) + ",\"url\":" + jsonString(url);
    if (headers !== null) {
      const names = headers.keys();
      const parts = new Array<string>(names.length);
      for (let i = 0; i < names.length; i++) parts[i] = jsonString(names[i]) + ":" + jsonString(headers.get(names[i]));
      request += ",\"headers\":{" + parts.join(",") + "}";
    }
    request += "}";
    const req = stringBlock(request);
    const bodyBlock: u64 = body !== null ? stringBlock(body) : 0;
    const r = http_request(req, bodyBlock);
    const res = new HttpResponse();
    res.status = http_status_code();
    if (res.status == 0) {
      // Extism's http_request has no error channel: Paddock puts the reason in paddock_last_error.
      recordFailure();
      const err = lastHostError!;
      res.error = err.code;
      res.errorMessage = err.message;
    } else {
      recordSuccess();
      const h = http_headers();
      if (h != 0) {
        const parsed = JsonValue.parse(takeString(h));
        if (parsed !== null) {
          for (let i = 0; i < parsed.keys.length; i++) {
            const v = parsed.items[i];
            if (v.isString()) res.headers.set(parsed.keys[i].toLowerCase(), v.text);
          }
        }
      }
      if (r != 0) res.body = takeBytes(r);
    }
    if (bodyBlock != 0) free(bodyBlock);
    free(req);
    return res;
  }
}

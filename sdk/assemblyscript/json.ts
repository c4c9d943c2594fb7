// A small JSON reader/writer for plugins: enough for the host's replies (error objects, key
// lists, directory listings, HTTP headers) and for simple JSON inputs such as `{"id":1}`.
//
//   const v = JsonValue.parse(text);          // null when text is not valid JSON
//   if (v !== null && v.isObject()) {
//     const id = v.get("id");                 // null when there is no such member
//     if (id !== null) log.info(id.isString() ? id.text : id.toString());
//   }
//
// Numbers keep their literal text (`text`), so an integer id round-trips as "42", not "42.0".

export enum JsonKind {
  Null,
  Bool,
  Number,
  String,
  Array,
  Object,
}

/** Nesting deeper than this is rejected rather than risking the guest's stack. */
const MAX_DEPTH = 64;

export class JsonValue {
  kind: JsonKind = JsonKind.Null;
  boolValue: bool = false;
  /** A string's value, or a number's literal text. */
  text: string = "";
  /** Array items, or object member values (parallel to `keys`). */
  items: JsonValue[] = [];
  /** Object member names, in document order. */
  keys: string[] = [];

  /** Parses a whole JSON document; null when it is not valid JSON. */
  static parse(source: string): JsonValue | null {
    const p = new JsonParser(source);
    const v = p.value(0);
    if (v === null) return null;
    p.skipSpace();
    return p.pos == source.length ? v : null;
  }

  static ofString(s: string): JsonValue {
    const v = new JsonValue();
    v.kind = JsonKind.String;
    v.text = s;
    return v;
  }

  isNull(): bool { return this.kind == JsonKind.Null; }
  isBool(): bool { return this.kind == JsonKind.Bool; }
  isNumber(): bool { return this.kind == JsonKind.Number; }
  isString(): bool { return this.kind == JsonKind.String; }
  isArray(): bool { return this.kind == JsonKind.Array; }
  isObject(): bool { return this.kind == JsonKind.Object; }

  /** Items of an array, members of an object, 0 otherwise. */
  get length(): i32 {
    return this.kind == JsonKind.Array || this.kind == JsonKind.Object ? this.items.length : 0;
  }

  /** An object's member (the last one if the name repeats); null if absent or not an object. */
  get(key: string): JsonValue | null {
    if (this.kind != JsonKind.Object) return null;
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** An array's item; null if out of range or not an array. */
  at(index: i32): JsonValue | null {
    if (this.kind != JsonKind.Array || index < 0 || index >= this.items.length) return null;
    return this.items[index];
  }

  /** The string value, or null for any other kind. */
  asString(): string | null {
    return this.kind == JsonKind.String ? this.text : null;
  }

  /** The numeric value; NaN for any other kind. */
  asF64(): f64 {
    return this.kind == JsonKind.Number ? parseFloat(this.text) : NaN;
  }

  /** The numeric value truncated to an integer; 0 for any other kind. */
  asI64(): i64 {
    if (this.kind != JsonKind.Number) return 0;
    const t = this.text;
    if (t.includes(".") || t.includes("e") || t.includes("E")) return <i64>parseFloat(t);
    return I64.parseInt(t);
  }

  asBool(): bool {
    return this.kind == JsonKind.Bool && this.boolValue;
  }

  /** Serialises back to JSON text. */
  toString(): string {
    switch (this.kind) {
      case JsonKind.Null:
        return "null";
      case JsonKind.Bool:
        return this.boolValue ? "true" : "false";
      case JsonKind.Number:
        return this.text;
      case JsonKind.String:
        return jsonString(this.text);
      case JsonKind.Array: {
        const parts = new Array<string>(this.items.length);
        for (let i = 0; i < this.items.length; i++) parts[i] = this.items[i].toString();
        return "[" + parts.join(",") + "]";
      }
      default: {
        const parts = new Array<string>(this.items.length);
        for (let i = 0; i < this.items.length; i++) parts[i] = jsonString(this.keys[i]) + ":" + this.items[i].toString();
        return "{" + parts.join(",") + "}";
      }
    }
  }
}

/** Quotes a string as a JSON string literal. */
export function jsonString(s: string): string {
  let out = "\"";
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | null = null;
    if (c == 0x22) esc = "\\\"";
    else if (c == 0x5c) esc = "\\\\";
    else if (c == 0x0a) esc = "\\n";
    else if (c == 0x0d) esc = "\\r";
    else if (c == 0x09) esc = "\\t";
    else if (c < 0x20) esc = "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
    if (esc !== null) {
      out += s.substring(start, i) + esc;
      start = i + 1;
    }
  }
  return out + s.substring(start) + "\"";
}

/** JSON text of an array of strings, e.g. `["a","b"]`. */
export function jsonStringArray(values: string[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) parts[i] = jsonString(values[i]);
  return "[" + parts.join(",") + "]";
}

class JsonParser {
  src: string;
  pos: i32 = 0;

  constructor(src: string) {
    this.src = src;
  }

  peek(): i32 {
    return this.pos < this.src.length ? this.src.charCodeAt(this.pos) : -1;
  }

  skipSpace(): void {
    while (this.pos < this.src.length) {
      const c = this.src.charCodeAt(this.pos);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.pos++;
    }
  }

  literal(word: string): bool {
    if (this.src.substr(this.pos, word.length) != word) return false;
    this.pos += word.length;
    return true;
  }

  value(depth: i32): JsonValue | null {
    if (depth > MAX_DEPTH) return null;
    this.skipSpace();
    const c = this.peek();
    const v = new JsonValue();
    if (c == 0x7b /* { */) {
      this.pos++;
      v.kind = JsonKind.Object;
      this.skipSpace();
      if (this.peek() == 0x7d) {
        this.pos++;
        return v;
      }
      for (;;) {
        this.skipSpace();
        const key = this.string();
        if (key === null) return null;
        this.skipSpace();
        if (this.peek() != 0x3a /* : */) return null;
        this.pos++;
        const member = this.value(depth + 1);
        if (member === null) return null;
        v.keys.push(key);
        v.items.push(member);
        this.skipSpace();
        const sep = this.peek();
        this.pos++;
        if (sep == 0x7d /* } */) return v;
        if (sep != 0x2c /* , */) return null;
      }
    }
    if (c == 0x5b /* [ */) {
      this.pos++;
      v.kind = JsonKind.Array;
      this.skipSpace();
      if (this.peek() == 0x5d) {
        this.pos++;
        return v;
      }
      for (;;) {
        const item = this.value(depth + 1);
        if (item === null) return null;
        v.items.push(item);
        this.skipSpace();
        const sep = this.peek();
        this.pos++;
        if (sep == 0x5d /* ] */) return v;
        if (sep != 0x2c /* , */) return null;
      }
    }
    if (c == 0x22 /* " */) {
      const s = this.string();
      if (s === null) return null;
      v.kind = JsonKind.String;
      v.text = s;
      return v;
    }
    if (c == 0x74 /* t */ && this.literal("true")) {
      v.kind = JsonKind.Bool;
      v.boolValue = true;
      return v;
    }
    if (c == 0x66 /* f */ && this.literal("false")) {
      v.kind = JsonKind.Bool;
      return v;
    }
    if (c == 0x6e /* n */ && this.literal("null")) return v;
    if (c == 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      const num = this.number();
      if (num === null) return null;
      v.kind = JsonKind.Number;
      v.text = num;
      return v;
    }
    return null;
  }

  digits(): i32 {
    const start = this.pos;
    while (this.pos < this.src.length) {
      const c = this.src.charCodeAt(this.pos);
      if (c < 0x30 || c > 0x39) break;
      this.pos++;
    }
    return this.pos - start;
  }

  number(): string | null {
    const start = this.pos;
    if (this.peek() == 0x2d) this.pos++;
    const first = this.peek();
    const n = this.digits();
    if (n == 0 || (first == 0x30 && n > 1)) return null; // no digits, or a leading zero
    if (this.peek() == 0x2e /* . */) {
      this.pos++;
      if (this.digits() == 0) return null;
    }
    const e = this.peek();
    if (e == 0x65 || e == 0x45) {
      this.pos++;
      const sign = this.peek();
      if (sign == 0x2b || sign == 0x2d) this.pos++;
      if (this.digits() == 0) return null;
    }
    return this.src.substring(start, this.pos);
  }

  /** A string literal at the cursor (which must be on the opening quote). */
  string(): string | null {
    if (this.peek() != 0x22) return null;
    this.pos++;
    let out = "";
    let start = this.pos;
    const src = this.src;
    while (this.pos < src.length) {
      const c = src.charCodeAt(this.pos);
      if (c == 0x22) {
        out += src.substring(start, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) return null; // raw control characters are not allowed in JSON strings
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += src.substring(start, this.pos);
      this.pos++;
      const e = this.peek();
      this.pos++;
      if (e == 0x22) out += "\"";
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75 /* u */) {
        if (this.pos + 4 > src.length) return null;
        let unit = 0;
        for (let k = 0; k < 4; k++) {
          const h = src.charCodeAt(this.pos + k);
          let d = -1;
          if (h >= 0x30 && h <= 0x39) d = h - 0x30;
          else if (h >= 0x61 && h <= 0x66) d = h - 0x61 + 10;
          else if (h >= 0x41 && h <= 0x46) d = h - 0x41 + 10;
          if (d < 0) return null;
          unit = (unit << 4) | d;
        }
        this.pos += 4;
        // Strings are UTF-16 in AssemblyScript: a \uD83D\uDE00 pair becomes one code point.
        out += String.fromCharCode(unit);
      } else return null;
      start = this.pos;
    }
    return null; // unterminated
  }
}

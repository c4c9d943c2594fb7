// Order routing with intents.
//   route      input: an order {"id":..,"total":..} → emits "orders.created" with the same
//              payload, and "orders.big" too when total > 100; outputs "emitted <n>", followed by
//              " (refused <topic>: <code>)" for each topic the host refused.
//   on_order   subscriber (e.g. to "orders.*"): stores the order under "order:<id>" and logs it;
//              outputs "stored <id>" (or "denied: <code>" when KV is refused).
//   get_order  input: an order id → the stored order JSON, or "" if there is none.
import { JsonValue, fail, input, intents, kv, lastError, log, output, reportAbort } from "../../../sdk/assemblyscript";

class Order {
  /** `totalText` is the total as written in the JSON (for messages). */
  constructor(public id: string, public total: f64, public totalText: string) {}
}

/** Parses {"id": string | number, "total": number}; null (and a logged error) if malformed. */
function parseOrder(text: string): Order | null {
  const v = JsonValue.parse(text);
  if (v === null || !v.isObject()) {
    log.error("order is not a JSON object");
    return null;
  }
  const id = v.get("id");
  const total = v.get("total");
  if (id === null || !(id.isString() || id.isNumber()) || total === null || !total.isNumber()) {
    log.error(`order needs "id" (string or number) and "total" (number): ${text}`);
    return null;
  }
  return new Order(id.isString() ? id.text : id.toString(), total.asF64(), total.toString());
}

export function route(): i32 {
  const payload = input.bytes();
  const order = parseOrder(String.UTF8.decodeUnsafe(payload.dataStart, payload.length));
  if (order === null) return fail("route: input is not a valid order");
  log.debug(`routing order ${order.id}`);

  let emitted = 0;
  let refused = "";
  if (intents.emitBytes("orders.created", payload)) emitted++;
  else refused += ` (refused orders.created: ${lastError()!.code})`;
  if (order.total > 100) {
    log.warn(`big order ${order.id}: total ${order.totalText}`);
    if (intents.emitBytes("orders.big", payload)) emitted++;
    else refused += ` (refused orders.big: ${lastError()!.code})`;
  }
  output.string(`emitted ${emitted}${refused}`);
  return 0;
}

export function on_order(): i32 {
  const payload = input.bytes();
  const order = parseOrder(String.UTF8.decodeUnsafe(payload.dataStart, payload.length));
  if (order === null) return fail("on_order: payload is not a valid order");
  if (!kv.setBytes(`order:${order.id}`, payload)) {
    const err = lastError()!;
    log.error(`could not store order ${order.id}: ${err.code}`);
    output.string(`denied: ${err.code}`);
    return 0;
  }
  log.info(`stored order ${order.id}`);
  output.string(`stored ${order.id}`);
  return 0;
}

export function get_order(): i32 {
  const value = kv.get(`order:${input.string()}`);
  const err = lastError();
  if (err !== null) {
    output.string(`denied: ${err.code}`);
    return 0;
  }
  output.string(value !== null ? value : "");
  return 0;
}

function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  reportAbort(message, file, line, column);
}

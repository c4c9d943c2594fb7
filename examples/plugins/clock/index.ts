// now → the host clock in milliseconds since the epoch, as decimal text,
// or "refused: <code>" when the clock is not granted.
import { clock, lastError, output, reportAbort } from "../../../sdk/assemblyscript";

export function now(): i32 {
  const ms = clock.now();
  const err = lastError();
  output.string(err !== null ? `refused: ${err.code}` : ms.toString());
  return 0;
}

function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  reportAbort(message, file, line, column);
}

// Worker side of the host-call channel. The guest's host import must return synchronously, so
// the worker blocks in Atomics.wait until the main-thread broker has answered:
//
//   worker (blocked inside wasm → host import)        main thread (event loop free)
//   1. port.postMessage(request)               ───▶   2. broker checks grant, rate-limits,
//   4. seen = flag[0]; drain port; if no reply:         runs the (possibly async) handler
//      Atomics.wait(flag, 0, seen, remaining)     ◀───   3. port.postMessage(reply);
//   5. receiveMessageOnPort(port) → reply                 Atomics.add(flag, 0, 1); notify
// Replies carry the request's seq; a stale reply (an earlier request that timed out here) is
// dropped rather than mistaken for the current one.

import { MessageChannel, type MessagePort, parentPort, receiveMessageOnPort, threadId } from 'node:worker_threads';
import { type HostCallReply, type HostCallRequest, type HostFunctionName, type PluginSpec, VIOLATION_EXIT_CODE, type WorkerHello } from './protocol.js';
import { GuestFault, HostRefusal } from './runtime/kernel-memory.js';
import type { HostBridge } from './runtime/plugin-instance.js';

export class BrokerClient implements HostBridge {
  #port: MessagePort;
  #flag: Int32Array;
  #seq = 0;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    const flag = new SharedArrayBuffer(4);
    this.#port = port1;
    this.#flag = new Int32Array(flag);
    // Never let the channel keep the worker alive; piscina owns the worker's lifetime.
    port1.unref();
    const hello: WorkerHello = { type: 'paddock:hello', threadId, port: port2 as unknown as WorkerHello['port'], flag };
    parentPort?.postMessage(hello, [port2]);
  }

  /**
   * Blocks (bounded) until the main thread sends the plugins to pre-instantiate. Called once
   * while the worker module loads, i.e. before piscina reports the worker ready.
   */
  awaitWarmList(timeoutMs: number): PluginSpec[] {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(this.#flag, 0);
      let received = receiveMessageOnPort(this.#port);
      while (received) {
        const m = received.message as { type?: string; specs?: PluginSpec[] };
        if (m.type === 'warm') return m.specs ?? [];
        received = receiveMessageOnPort(this.#port);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) return [];
      Atomics.wait(this.#flag, 0, seen, remaining);
    }
  }

  /** Fire-and-forget notice to the main thread (phase changes); never blocks. */
  notify(message: unknown): void {
    this.#port.postMessage(message);
  }

  call(callId: number, fn: HostFunctionName, payload: unknown, deadline: number): unknown {
    const seq = ++this.#seq;
    const request: HostCallRequest = { type: 'hostcall', seq, callId, fn, payload };
    this.#port.postMessage(request);
    for (;;) {
      // Read the counter before draining: a reply posted after the drain bumps it, so the wait
      // below returns at once instead of sleeping past a reply that already arrived.
      const seen = Atomics.load(this.#flag, 0);
      let received = receiveMessageOnPort(this.#port);
      while (received) {
        const reply = received.message as HostCallReply;
        if (reply.type === 'hostreply' && reply.seq === seq) {
          if (reply.ok) return reply.value;
          const { code, message, reason = 'host-call' } = reply.error;
          // Strict policy: the broker wants this worker gone. Exiting the thread fails only
          // the current call (piscina sees the exit) and gets a clean replacement.
          if (reply.action === 'kill') process.exit(VIOLATION_EXIT_CODE);
          if (reply.action === 'fail') throw new GuestFault(code, message, reason);
          throw new HostRefusal(code, message, reason);
        }
        received = receiveMessageOnPort(this.#port);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new GuestFault('PADDOCK_TIMEOUT', `host call ${fn} did not answer before the call's deadline`, 'host-call-timeout');
      }
      Atomics.wait(this.#flag, 0, seen, remaining);
    }
  }
}

// Piscina worker entry: a thin reactor around the in-thread Runner. Imports only worker-side
// modules and the shared protocol.

import { threadId, workerData } from 'node:worker_threads';
import { BrokerClient } from './broker-client.js';
import type { BatchResult, Task } from './protocol.js';
import { Runner } from './runtime/runner.js';

interface WorkerOptions {
  maxInstances: number;
}

const options = (workerData ?? { maxInstances: 16 }) as WorkerOptions;
const broker = new BrokerClient();
const runner = new Runner({
  maxInstances: options.maxInstances,
  bridge: broker,
  threadId,
  onPhase: (callId, phase) => {
    if (callId !== 0) broker.notify({ type: 'phase', callId, phase });
  },
});

// Join warm: instantiate the hot plugins before piscina sees this worker as ready.
runner.warm(broker.awaitWarmList(2000));

export default function handle(task: Task): BatchResult {
  return runner.runBatch(task);
}

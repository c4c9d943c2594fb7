// Routes plugins' own log lines into the service's structured log, at the level the plugin
// asked for, with tenant/plugin/call ids — rate-limited per plugin so a log flood from one
// plugin costs the service nothing but a counter.

import type { Logger } from 'pino';
import type { Executor } from '../executor.js';
import { TokenBucketLimiter } from '../policy/limiter.js';

export interface PluginLogOptions {
  linesPerSecond: number;
  burst: number;
}

export function routePluginLogs(executor: Executor, log: Logger, opts: PluginLogOptions, onDropped: (tenant: string, plugin: string, n: number) => void): void {
  const limiter = new TokenBucketLimiter({ perSecond: opts.linesPerSecond, burst: opts.burst }, 10_000);
  const dropped = new Map<string, number>();
  executor.on('log', (line) => {
    const key = `${line.tenant}/${line.plugin}`;
    if (!limiter.take(key)) {
      dropped.set(key, (dropped.get(key) ?? 0) + 1);
      onDropped(line.tenant, line.plugin, 1);
      return;
    }
    const fields = { tenant: line.tenant, plugin: line.plugin, fn: line.fn, callId: line.callId, source: 'plugin' };
    const n = dropped.get(key);
    if (n) {
      dropped.delete(key);
      log.warn({ ...fields, dropped: n }, `dropped ${n} log lines from this plugin (rate limit)`);
    }
    log[line.level](fields, line.message);
  });
  executor.on('call', (e) => {
    if (e.code === null) return;
    const fields = { tenant: e.tenant, plugin: e.plugin, fn: e.fn, callId: e.callId, code: e.code, reason: e.reason, ms: Math.round(e.durationMs * 10) / 10 };
    if (e.code === 'PADDOCK_PLUGIN_ERROR' || e.code === 'PADDOCK_NO_SUCH_EXPORT' || e.code === 'PADDOCK_INPUT_TOO_LARGE') log.debug(fields, 'call failed');
    else log.info(fields, 'call failed');
  });
  executor.on('worker-restart', (e) => log.warn({ tenant: e.tenant, plugin: e.plugin, reason: e.reason }, 'worker replaced'));
}

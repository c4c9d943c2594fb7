// `paddock serve`: start-up and a clean shutdown. On SIGTERM/SIGINT: stop accepting, let
// requests in flight finish (their calls drain through the pool), flush the store, exit 0.

import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { buildApp } from './app.js';
import { parseServerConfig, type ServerConfigInput } from './config.js';
import { Metrics } from './metrics.js';
import { Service } from './service.js';

export interface RunningServer {
  app: FastifyInstance;
  service: Service;
  url: string;
  adminToken: string;
  close(): Promise<void>;
}

export async function startServer(input: ServerConfigInput, opts: { log?: Logger; handleSignals?: boolean } = {}): Promise<RunningServer> {
  const config = parseServerConfig(input);
  const log = opts.log ?? pino({ level: config.logLevel, base: { service: 'paddock' } });
  const { service, adminToken, adminTokenFile, newKeys } = await Service.start(config, log);
  const metrics = new Metrics(service.executor, service.scheduler);
  service.onAdmissionRefused = metrics.countAdmission;
  service.onPluginLogDropped = metrics.countLogDropped;
  const app = await buildApp(service, log, metrics);
  const address = await app.listen({ port: config.port, host: config.host });
  log.info({ url: address, dataDir: config.dataDir }, 'paddock listening');
  if (adminTokenFile) log.info({ file: adminTokenFile }, 'admin token (no PADDOCK_ADMIN_TOKEN set) is in this file');
  for (const k of newKeys) log.info({ tenant: k.name, apiKey: k.apiKey }, 'tenant created from the config file; this API key is shown once');

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      log.info('shutting down: draining calls in flight');
      service.beginShutdown();
      const closed = app.close();
      // Connections that were busy when close() began go idle after their last answer.
      const sweep = setInterval(() => app.server.closeIdleConnections(), 50);
      await closed.finally(() => clearInterval(sweep));
      await service.close();
      log.info('stopped');
    })();
    return closing;
  };
  if (opts.handleSignals) {
    const onSignal = (signal: string) => {
      log.info({ signal }, 'signal received');
      close().then(
        () => process.exit(0),
        (err) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  }
  return { app, service, url: address, adminToken, close };
}

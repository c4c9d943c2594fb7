// The `paddock` command line.

import { Command, InvalidArgumentError, Option } from 'commander';
import { toPaddockError } from '../errors.js';
import { registerClientCommands } from './client.js';
import { runCommand } from './run.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

const collect = (value: string, previous: string[]) => [...previous, value];

export function buildProgram(): Command {
  const program = new Command('paddock')
    .description('Worker-isolated, multi-tenant WebAssembly (Extism) plugin executor')
    .version('0.1.0')
    .showHelpAfterError();

  program
    .command('run')
    .description('run one function of a plugin (file or folder) inside the isolated pool and write its output to stdout')
    .argument('<plugin>', 'a .wasm file, or a folder with one .wasm and an optional paddock.json/yaml manifest')
    .argument('<function>', 'exported function to call')
    .addOption(new Option('--input <text>', 'input passed to the function').conflicts('inputFile'))
    .option('--input-file <file>', 'read the input from a file')
    .option('--timeout-ms <n>', 'wall-clock deadline per call', positiveInt)
    .option('--memory-pages <n>', 'linear-memory cap in 64 KiB pages', positiveInt)
    .option('--config <key=value>', 'config value visible to the plugin (repeatable)', collect, [])
    .option('--wasi', 'provide WASI preview 1 (no environment, no clock beyond WASI\'s own, stdio to /dev/null)')
    .option('--allow-host <host>', 'allow HTTP to this host ("*.example.com" for subdomains; repeatable)', collect, [])
    .option('--allow-path <host_dir[:guest_dir]>', 'map a host directory into a WASI guest (repeatable)', collect, [])
    .option('--repeat <n>', 'call the function n times', positiveInt, 1)
    .addOption(new Option('--log-level <level>', 'print plugin logs at or above this level to stderr').choices(['trace', 'debug', 'info', 'warn', 'error']))
    .option('--stats', 'print calls/s and latency percentiles to stderr')
    .action(async (plugin: string, fn: string, opts) => {
      await runCommand(plugin, fn, opts, process.stdout, process.stderr);
    });

  program
    .command('serve')
    .description('run the multi-tenant HTTP service (data in --data-dir; admin token from PADDOCK_ADMIN_TOKEN or <data-dir>/admin-token)')
    .option('--port <n>', 'port to listen on', (v) => Number(v))
    .option('--host <host>', 'address to listen on')
    .option('--config <file>', 'configuration file (JSON or YAML)')
    .action(async (_opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals() as { port?: number; host?: string; dataDir?: string; config?: string };
      const dataDirGiven = cmd.getOptionValueSourceWithGlobals('dataDir') === 'cli';
      const { loadConfigFile } = await import('../server/config.js');
      const { startServer } = await import('../server/index.js');
      const file = opts.config ? await loadConfigFile(opts.config) : {};
      await startServer(
        {
          ...file,
          ...(opts.port !== undefined ? { port: opts.port } : {}),
          ...(opts.host !== undefined ? { host: opts.host } : {}),
          ...(dataDirGiven ? { dataDir: opts.dataDir } : {}),
        },
        { handleSignals: true },
      );
    });

  registerClientCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    const e = toPaddockError(err);
    process.stderr.write(`${e.code}: ${e.message}\n`);
    process.exitCode = 1;
  }
}

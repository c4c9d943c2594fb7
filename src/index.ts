// Public library surface. Listed by hand: internals stay private.
export { createExecutor, Executor, executorOptionsSchema } from './executor.js';
export type { CallEvent, CallOptions, Diagnostic, ExecutorEvents, ExecutorOptions, InstallOptions, IntentDelivery, IntentResult, PluginInfo, TenantConfig } from './executor.js';
export type { KvStore } from './store/kv.js';
export { MemoryKvStore } from './store/kv.js';
export { ERRORS, PaddockError, hasCode, isErrorCode } from './errors.js';
export type { ErrorCode } from './errors.js';
export { parseManifest, parseManifestText, manifestSchema } from './policy/manifest.js';
export type { Capabilities, Manifest, ManifestInput } from './policy/manifest.js';

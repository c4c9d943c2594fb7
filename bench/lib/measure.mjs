// Small measuring helpers: closed-loop throughput with per-call latency, percentiles.

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

export function summarize(latenciesUs, seconds) {
  const sorted = Float64Array.from(latenciesUs).sort();
  return {
    calls: sorted.length,
    seconds,
    rate: sorted.length / seconds,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
  };
}

/** Runs `fn` from `concurrency` loops for `durationMs`; latency per call in µs. */
export async function closedLoop(fn, { concurrency = 1, durationMs = 1000, warmupMs = 200 } = {}) {
  const warmEnd = performance.now() + warmupMs;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < warmEnd) await fn();
  }));
  const lat = [];
  const start = performance.now();
  const end = start + durationMs;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await fn();
      lat.push((performance.now() - t0) * 1000);
    }
  }));
  return summarize(lat, (performance.now() - start) / 1000);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

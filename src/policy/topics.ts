// Topic patterns for intents: segments separated by ".", "*" matches exactly one segment,
// ">" (last only) matches one or more, and a lone "*" matches everything.

export function topicMatches(pattern: string, topic: string): boolean {
  if (pattern === '*' || pattern === '>') return true;
  const p = pattern.split('.');
  const t = topic.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && t.length > i;
    if (i >= t.length) return false;
    if (p[i] !== '*' && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

export function anyTopicMatches(patterns: readonly string[], topic: string): boolean {
  return patterns.some((p) => topicMatches(p, topic));
}

/**
 * Whether every topic `inner` matches is also matched by `outer` (pattern ⊇ pattern).
 * Used to intersect declared and granted patterns without widening either.
 */
export function topicCovers(outer: string, inner: string): boolean {
  if (outer === '*' || outer === '>') return true;
  if (inner === '*' || inner === '>') return false;
  const o = outer.split('.');
  const i = inner.split('.');
  for (let k = 0; k < o.length; k++) {
    if (o[k] === '>') return k === o.length - 1 && i.length > k;
    if (k >= i.length) return false;
    if (i[k] === '>') return false; // inner reaches any depth here; outer does not
    if (o[k] === '*') continue; // one segment: covers a literal or "*"
    if (i[k] === '*' || o[k] !== i[k]) return false;
  }
  return o.length === i.length;
}

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

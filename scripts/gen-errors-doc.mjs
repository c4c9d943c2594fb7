#!/usr/bin/env node
// Regenerates docs/errors.md from src/errors.ts (via dist). test/errors.test.ts keeps them in sync.
import { writeFileSync } from 'node:fs';
import { ERRORS } from '../dist/errors.js';

let doc = '# Error codes\n\nEvery error Paddock reports carries one of these stable codes (library: `PaddockError.code`; HTTP: `{ "error": { "code", "message" } }` with the status below; CLI: `CODE: message` on stderr). Match on the code, never on the message. A code is never reused for another meaning.\n\n| code | HTTP status | meaning |\n| --- | --- | --- |\n';
for (const [code, e] of Object.entries(ERRORS)) doc += `| \`${code}\` | ${e.status} | ${e.description} |\n`;
writeFileSync(new URL('../docs/errors.md', import.meta.url), doc);

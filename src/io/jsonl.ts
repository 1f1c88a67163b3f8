import fs from 'node:fs';
import { fail } from '../errors.js';

/**
 * Parse a JSONL file line by line; `parse` turns each value into an item or fails with a reason.
 * Errors name `file:line`. Blank lines are skipped; an empty file is an error (`what` names items).
 */
export function readJsonLines<T>(file: string, what: string, parse: (value: unknown, where: string) => T): T[] {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch {
    fail(`${file}: cannot read ${what} file`);
  }
  const out: T[] = [];
  raw.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      fail(`${where}: invalid JSON`);
    }
    out.push(parse(v, where));
  });
  if (out.length === 0) fail(`${file}: no ${what}`);
  return out;
}

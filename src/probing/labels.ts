/**
 * Probe labels: a JSONL file of `{"prompt": i, "label": x}` lines (optionally `"pos": p` to label
 * one row), joined to cache rows by prompt (and position). Labels are strings or numbers.
 */
import fs from 'node:fs';
import { fail } from '../errors.js';

export type LabelValue = string | number;

export interface LabelEntry {
  prompt: number;
  pos?: number;
  label: LabelValue;
  /** 1-based line in the file, for error messages. */
  line: number;
}

export interface LabelSet {
  file: string;
  entries: LabelEntry[];
  /** Whether any entry names a position (then only labelled rows are used). */
  positional: boolean;
}

export function readLabels(file: string): LabelSet {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    fail(`cannot read labels ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  const entries: LabelEntry[] = [];
  const seen = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    if (!raw.trim()) return;
    let o: unknown;
    try {
      o = JSON.parse(raw);
    } catch {
      fail(`${file}:${line}: not valid JSON`);
    }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) fail(`${file}:${line}: expected an object {"prompt": i, "label": x}`);
    const r = o as Record<string, unknown>;
    if (!Number.isInteger(r.prompt) || (r.prompt as number) < 0) fail(`${file}:${line}: "prompt" must be a non-negative integer, got ${JSON.stringify(r.prompt)}`);
    if (r.pos !== undefined && !Number.isInteger(r.pos)) fail(`${file}:${line}: "pos" must be an integer, got ${JSON.stringify(r.pos)}`);
    const label = r.label;
    if (!(typeof label === 'string' || (typeof label === 'number' && Number.isFinite(label)))) {
      fail(`${file}:${line}: "label" must be a string or a finite number, got ${JSON.stringify(label)}`);
    }
    const key = r.pos === undefined ? `${r.prompt}` : `${r.prompt}:${r.pos}`;
    if (seen.has(key)) fail(`${file}:${line}: a second label for prompt ${r.prompt}${r.pos === undefined ? '' : ` pos ${r.pos}`}`);
    seen.add(key);
    entries.push({ prompt: r.prompt as number, ...(r.pos !== undefined ? { pos: r.pos as number } : {}), label, line });
  });
  if (entries.length === 0) fail(`${file}: no labels`);
  const positional = entries.some((e) => e.pos !== undefined);
  if (positional && entries.some((e) => e.pos === undefined)) fail(`${file}: mixes prompt labels and position labels; give "pos" on every line or on none`);
  const kinds = new Set(entries.map((e) => typeof e.label));
  if (kinds.size > 1) fail(`${file}: labels mix strings and numbers`);
  return { file, entries, positional };
}

/** Sorted distinct values: the class list (numbers numerically, strings lexicographically). */
export function classesOf(values: readonly LabelValue[]): LabelValue[] {
  const distinct = [...new Set(values)];
  return typeof distinct[0] === 'number' ? (distinct as number[]).sort((a, b) => a - b) : (distinct as string[]).sort();
}

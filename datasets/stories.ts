/**
 * The stories corpus (datasets/stories/stories.jsonl, sampled from stories260K by
 * scripts/generate-stories-corpus.ts) and its fixed split: the last 10% of lines are eval.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail } from '../src/errors.js';
import { readJsonLines } from '../src/io/jsonl.js';

export const STORIES_JSONL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'stories/stories.jsonl');

/** Fraction of stories (the last lines of the file) held out for evaluation. */
export const STORIES_EVAL_FRACTION = 0.1;

export interface Story {
  text: string;
  /** Token ids, BOS first, no EOS. */
  tokens: number[];
}

/** Number of train stories for a corpus of n stories (the rest, at the end, are eval). */
export function storiesTrainCount(n: number): number {
  return n - Math.round(n * STORIES_EVAL_FRACTION);
}

export function readStories(file: string = STORIES_JSONL): Story[] {
  return readJsonLines(file, 'stories', (v, where) => {
    const o = v as { text?: unknown; tokens?: unknown };
    if (typeof o?.text !== 'string') fail(`${where}: "text" must be a string`);
    if (!Array.isArray(o.tokens) || o.tokens.length === 0 || !o.tokens.every((t) => Number.isInteger(t) && t >= 0)) {
      fail(`${where}: "tokens" must be a non-empty array of token ids`);
    }
    return { text: o.text, tokens: o.tokens as number[] };
  });
}

/** The fixed train / eval split. */
export function readStoriesSplit(file: string = STORIES_JSONL): { train: Story[]; eval: Story[] } {
  const all = readStories(file);
  const n = storiesTrainCount(all.length);
  return { train: all.slice(0, n), eval: all.slice(n) };
}

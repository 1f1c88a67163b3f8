/** Seeded train/test split by prompt: all rows of one prompt land on the same side. */
import { fail } from '../errors.js';
import { mulberry32 } from '../util/random.js';

export interface RowSplit {
  train: Int32Array;
  test: Int32Array;
  trainPrompts: number;
  testPrompts: number;
}

export function splitByPrompt(prompt: Int32Array, testFrac: number, seed: number): RowSplit {
  if (!(testFrac >= 0 && testFrac < 1)) fail(`--test-frac must be in [0, 1), got ${testFrac}`);
  const ids = [...new Set(prompt)];
  const rng = mulberry32(seed);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  let nTest = Math.round(testFrac * ids.length);
  if (testFrac > 0) {
    if (ids.length < 2) fail(`a test split needs rows from at least 2 prompts, got ${ids.length}; use --test-frac 0`);
    nTest = Math.min(Math.max(nTest, 1), ids.length - 1);
  }
  const testSet = new Set(ids.slice(0, nTest));
  const train: number[] = [];
  const test: number[] = [];
  prompt.forEach((p, i) => (testSet.has(p) ? test : train).push(i));
  return { train: Int32Array.from(train), test: Int32Array.from(test), trainPrompts: ids.length - nTest, testPrompts: nTest };
}

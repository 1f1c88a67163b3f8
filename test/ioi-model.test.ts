import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { generateIoiPrompts } from '../datasets/ioi.js';
import { IOI_MODEL_SPLIT, corpusWords, trainingBatch } from '../datasets/ioi-corpus.js';
import { evaluateIoi } from '../datasets/ioi-eval.js';
import { wordTokenizerJson } from '../src/tokenizers/word-tokenizer.js';

const MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../datasets/ioi-gpt2');

// The shipped model (trained by scripts/train-ioi-model.ts) must really do IOI on prompts whose
// names and templates it never saw in an IOI sentence.
describe('the shipped IOI model (datasets/ioi-gpt2)', () => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(MODEL_DIR);
  });
  afterAll(() => model?.dispose());

  it('is a small HF GPT-2 directory with a tokenizer that matches the training vocabulary', () => {
    const bytes = fs.readdirSync(MODEL_DIR).reduce((a, f) => a + fs.statSync(path.join(MODEL_DIR, f)).size, 0);
    expect(bytes).toBeLessThan(5e6);
    expect(model.cfg.architecture).toBe('gpt2');
    const { vocab } = wordTokenizerJson(corpusWords());
    const ids = new Map(vocab.map((w, i) => [w, i]));
    // The HF tokenizer shipped with the model encodes a training window exactly as training did.
    const batch = trainingBatch(ids, 0, 0, 1, 32);
    const text = Array.from(batch).map((i) => vocab[i]).filter((w) => w !== '<|endoftext|>').join(' ');
    const firstDoc = text.split(/(?<=\.)\s/)[0];
    expect(model.encode(firstDoc)).toEqual(Array.from(batch.slice(0, model.encode(firstDoc).length)));
  });

  it('solves IOI on held-out names and templates: accuracy ≥ 95 %, mean logit difference ≥ 2', () => {
    const prompts = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, n: 200, seed: 1, tokenizer: model.tokenizer!, requireSameLength: false });
    const score = evaluateIoi(model, prompts);
    expect(score.accuracy).toBeGreaterThanOrEqual(0.95);
    expect(score.meanLogitDiff).toBeGreaterThanOrEqual(2);
  });
});

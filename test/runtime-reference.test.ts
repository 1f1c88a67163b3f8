import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { expectCacheMatches, loadReference, maxScaledDiff, modelPath } from './helpers/fixtures.js';

const MODELS = ['tiny-gpt2', 'tiny-llama', 'tiny-qwen2', 'stories260K'] as const;

describe.each(MODELS)('%s matches the reference implementation', (name) => {
  const ref = loadReference(name);
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  it('logits at every position (≤1e-4)', () => {
    const logits = model.run(ref.tokens);
    expect(logits.shape).toEqual([1, ...ref.logits_shape]);
    expect(maxScaledDiff(logits.dataSync(), ref.logits)).toBeLessThan(1e-4);
    logits.dispose();
  });

  it('every reference activation (≤1e-4)', () => {
    const names = Object.keys(ref.activations);
    const { logits, cache } = model.runWithCache(ref.tokens, { names });
    expectCacheMatches(cache, ref.activations);
    cache.dispose();
    logits.dispose();
  });

  it('hooks and caches do not change the forward values', () => {
    const plain = model.run(ref.tokens);
    const { logits, cache } = model.runWithCache(ref.tokens);
    const hooked = model.runWithHooks(ref.tokens, [['blocks.*.hook_resid_post', (x) => x.clone()]]);
    expect(Array.from(logits.dataSync())).toEqual(Array.from(plain.dataSync()));
    expect(Array.from(hooked.dataSync())).toEqual(Array.from(plain.dataSync()));
    tf.dispose([plain, logits, hooked]);
    cache.dispose();
  });
});

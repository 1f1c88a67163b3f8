import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { pronounPairs } from '../datasets/pronoun-task.js';
import { pairBatches, rowMetrics } from '../src/circuits/common.js';
import { modelPath } from './helpers/fixtures.js';

describe('stories260K: the pronoun task', () => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath('stories260K'));
  });
  afterAll(() => model?.dispose());

  it('pairs share one length, differ only in the name, and the model does the task', () => {
    const pairs = pronounPairs(model, 40);
    expect(pairs).toHaveLength(40);
    const T = pairs[0].clean.length;
    for (const p of pairs) {
      expect(p.clean.length).toBe(T);
      expect(p.corrupt.length).toBe(T);
      expect(p.clean.filter((t, i) => t !== p.corrupt[i])).toHaveLength(1);
      expect(p.answer).not.toBe(p.wrong);
    }
    expect(new Set(pairs.map((p) => p.clean.join())).size).toBeGreaterThan(20);
    const { clean, targets } = pairBatches(model, pairs);
    const logits = model.run(clean, { finalPositionOnly: true });
    const lds = rowMetrics('logit_diff', logits, targets);
    logits.dispose();
    expect(lds.filter((x) => x > 0).length / lds.length).toBeGreaterThanOrEqual(0.75);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { PatchingSession } from '../src/patching/session.js';
import { bootstrapAgreement, disjoint, perPairGrids, pooledScores } from '../src/patching/bootstrap.js';
import { flattenScores, pearson, relativeL2, slope } from '../src/patching/stats.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { loadReference, modelPath } from './helpers/fixtures.js';

describe('tiny-gpt2: agreement with bootstrap intervals over prompt pairs', () => {
  let model: HookedModel;
  let pairs: PromptPair[];
  beforeAll(async () => {
    model = await loadModel(modelPath('tiny-gpt2'));
    const p = loadReference('tiny-gpt2').patching as unknown as PromptPair;
    const V = model.cfg.dVocab;
    // The reference pair, its mirror, and variants with another first token.
    pairs = [
      { clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong },
      { clean: p.corrupt, corrupt: p.clean, answer: p.wrong, wrong: p.answer },
      { clean: [(p.clean[0] + 7) % V, ...p.clean.slice(1)], corrupt: [(p.clean[0] + 7) % V, ...p.corrupt.slice(1)], answer: p.answer, wrong: p.wrong },
      { clean: [(p.clean[0] + 11) % V, ...p.clean.slice(1)], corrupt: [(p.clean[0] + 11) % V, ...p.corrupt.slice(1)], answer: p.answer, wrong: p.wrong },
    ];
  });
  afterAll(() => model?.dispose());

  it('per-pair grids pool to the grid of one session over all pairs (activation, AtP, RelP)', async () => {
    const per = await perPairGrids(model, pairs, 'attn_out', ['activation', 'atp', 'relp']);
    const all = new PatchingSession(model, pairs);
    for (const g of per) {
      const want = flattenScores(all.grid('attn_out', g.method).scores);
      const got = pooledScores(g, [0, 1, 2, 3]);
      expect(Math.max(...got.map((v, i) => Math.abs(v - want[i]))), g.method).toBeLessThan(1e-4);
      // A resample with repeats is the session over the repeated pairs.
      const rep = flattenScores(new PatchingSession(model, [pairs[0], pairs[0], pairs[2]]).grid('attn_out', g.method).scores);
      const gotRep = pooledScores(g, [0, 0, 2]);
      expect(Math.max(...gotRep.map((v, i) => Math.abs(v - rep[i]))), `${g.method} resampled`).toBeLessThan(1e-4);
    }
    all.dispose();
  });

  it('intervals: point values on all pairs, deterministic in the seed, bracket the point, degenerate for a perfect estimate', async () => {
    const [act, atp] = await perPairGrids(model, pairs, 'resid_pre', ['activation', 'atp']);
    const a = bootstrapAgreement(atp, act, { samples: 200, seed: 3 });
    const e = pooledScores(atp, [0, 1, 2, 3]);
    const r = pooledScores(act, [0, 1, 2, 3]);
    expect(a.pearson.value).toBeCloseTo(pearson(e, r), 10);
    expect(a.relL2.value).toBeCloseTo(relativeL2(e, r), 10);
    expect(a.slope.value).toBeCloseTo(slope(e, r), 10);
    for (const k of ['pearson', 'relL2', 'slope'] as const) {
      expect(a[k].lo).toBeLessThanOrEqual(a[k].hi);
      expect(a[k].lo).toBeLessThanOrEqual(a[k].value + 1e-9);
    }
    expect(bootstrapAgreement(atp, act, { samples: 200, seed: 3 })).toEqual(a);
    const perfect = bootstrapAgreement({ ...act, method: 'atp' }, act, { samples: 100 });
    expect(perfect.pearson.lo).toBeCloseTo(1, 10);
    expect(perfect.relL2.hi).toBeCloseTo(0, 10);
    expect(perfect.slope.lo).toBeCloseTo(1, 10);
    expect(disjoint({ value: 0, lo: 0, hi: 1 }, { value: 2, lo: 1.5, hi: 3 })).toBe(true);
    expect(disjoint({ value: 0, lo: 0, hi: 2 }, { value: 2, lo: 1.5, hi: 3 })).toBe(false);
  });

  it('refuses to pool position grids over prompts of different lengths (head grids are fine)', async () => {
    const short = { ...pairs[0], clean: pairs[0].clean.slice(1), corrupt: pairs[0].corrupt.slice(1) };
    await expect(perPairGrids(model, [pairs[0], short], 'resid_pre', ['atp'])).rejects.toThrow(/one token length/);
    const heads = await perPairGrids(model, [pairs[0], short], 'head_out', ['atp']);
    expect(heads[0].effect).toHaveLength(2);
  });

  it('does not leak tensors', async () => {
    await perPairGrids(model, pairs.slice(0, 2), 'mlp_out', ['atp']);
    const before = tf.memory().numTensors;
    await perPairGrids(model, pairs.slice(0, 2), 'mlp_out', ['activation', 'relp']);
    expect(tf.memory().numTensors).toBe(before);
  });
});

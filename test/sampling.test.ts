import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { HooklensError } from '../src/errors.js';
import { deriveSeed, filteredDistribution, makeSampler, sampleGenerate, sampleToken } from '../src/generation/sampling.js';
import { loadModel } from '../src/models/load.js';
import { mulberry32 } from '../src/util/random.js';
import { storiesGguf } from './helpers/fixtures.js';

const LOGITS = Float32Array.of(1, 3, 2, 0, 3, -1); // ids 1 and 4 tie for the top

function softmax(x: ArrayLike<number>, t = 1): number[] {
  const m = Math.max(...Array.from(x));
  const e = Array.from(x, (v) => Math.exp((v - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function histogram(draw: () => number, n: number, V: number): number[] {
  const h = new Array(V).fill(0);
  for (let i = 0; i < n; i++) h[draw()]++;
  return h.map((c) => c / n);
}

describe('sampling', () => {
  it('greedy at temperature 0: argmax, lowest id on ties, no RNG draws', () => {
    let draws = 0;
    const rng = () => (draws++, 0.5);
    expect(sampleToken(LOGITS, { temperature: 0 }, rng)).toBe(1);
    expect(sampleToken(Float32Array.of(NaN, -Infinity, 2), { temperature: 0 }, rng)).toBe(2);
    expect(draws).toBe(0);
  });

  it('filters: temperature, top-k, top-p (HF order, ties by id)', () => {
    const full = filteredDistribution(LOGITS, { temperature: 1 });
    expect(Array.from(full.ids)).toEqual([1, 4, 2, 0, 3, 5]);
    const p = softmax(LOGITS);
    full.ids.forEach((id, j) => expect(full.probs[j]).toBeCloseTo(p[id], 12));

    const hot = filteredDistribution(LOGITS, { temperature: 2 });
    const p2 = softmax(LOGITS, 2);
    hot.ids.forEach((id, j) => expect(hot.probs[j]).toBeCloseTo(p2[id], 12));

    const k3 = filteredDistribution(LOGITS, { topK: 3 });
    expect(Array.from(k3.ids)).toEqual([1, 4, 2]);
    const z = Math.exp(3) * 2 + Math.exp(2);
    expect(Array.from(k3.probs)).toEqual([Math.exp(3) / z, Math.exp(3) / z, Math.exp(2) / z].map((v) => expect.closeTo(v, 12)));

    // top-p: smallest prefix reaching p; the two top tokens hold 2e^3/Σ ≈ 0.66.
    const cum2 = p[1] + p[4];
    expect(Array.from(filteredDistribution(LOGITS, { topP: cum2 - 1e-6 }).ids)).toEqual([1, 4]);
    expect(Array.from(filteredDistribution(LOGITS, { topP: cum2 + 1e-6 }).ids)).toEqual([1, 4, 2]);
    expect(Array.from(filteredDistribution(LOGITS, { topP: 0.01 }).ids)).toEqual([1]);
    // top-k then top-p
    const kp = filteredDistribution(LOGITS, { topK: 2, topP: 0.6 });
    expect(Array.from(kp.ids)).toEqual([1, 4]);
    expect(kp.probs[0] + kp.probs[1]).toBeCloseTo(1, 12);
    // -Infinity logits are never candidates
    expect(Array.from(filteredDistribution(Float32Array.of(0, -Infinity, 1)).ids)).toEqual([2, 0]);
  });

  it('samples from the filtered distribution', () => {
    const rng = mulberry32(123);
    const n = 40000;
    const h = histogram(() => sampleToken(LOGITS, { temperature: 1 }, rng), n, 6);
    softmax(LOGITS).forEach((p, i) => expect(Math.abs(h[i] - p)).toBeLessThan(0.012));
    const hk = histogram(() => sampleToken(LOGITS, { topK: 2 }, rng), 4000, 6);
    expect(hk[0] + hk[2] + hk[3] + hk[5]).toBe(0);
    expect(Math.abs(hk[1] - 0.5)).toBeLessThan(0.04);
  });

  it('is deterministic per seed', () => {
    const a = makeSampler({ seed: 9, temperature: 0.8, topP: 0.9 });
    const b = makeSampler({ seed: 9, temperature: 0.8, topP: 0.9 });
    const c = makeSampler({ seed: 10, temperature: 0.8, topP: 0.9 });
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const sa = Array.from({ length: 64 }, () => a(logits));
    expect(Array.from({ length: 64 }, () => b(logits))).toEqual(sa);
    expect(Array.from({ length: 64 }, () => c(logits))).not.toEqual(sa);
    expect(new Set(Array.from({ length: 100 }, (_, i) => deriveSeed(1, i))).size).toBe(100);
    expect(deriveSeed(1, 0)).not.toBe(deriveSeed(2, 0));
  });

  it('rejects bad options with one-line errors', () => {
    const rng = mulberry32(1);
    for (const o of [{ temperature: -1 }, { topK: 1.5 }, { topP: 0 }, { topP: 1.2 }, { temperature: NaN }]) {
      expect(() => sampleToken(LOGITS, o, rng)).toThrow(HooklensError);
    }
    expect(() => sampleToken(new Float32Array(0), {}, rng)).toThrow(/empty logits/);
  });
});

describe('sampleGenerate (stories260K)', () => {
  it('continues prompts, seeded per sequence, greedy equals HookedModel.generate, the KV cache changes no token', async () => {
    const model = await loadModel(storiesGguf());
    try {
      const prompts = [model.encode('Once upon a time'), model.encode('Lily'), [model.tokenizer!.bosTokenId!]];
      const opts = { maxTokens: 14, temperature: 0.9, topP: 0.95, seed: 5 };
      const a = sampleGenerate(model, prompts, { ...opts, batchSize: 3 });
      a.forEach((s, i) => {
        expect(s.slice(0, prompts[i].length)).toEqual(prompts[i]);
        expect(s.length).toBeLessThanOrEqual(14);
      });
      // Per-sequence seeds: the same story whatever the batching.
      const b = sampleGenerate(model, prompts, { ...opts, batchSize: 1 });
      expect(b).toEqual(a);
      const c = sampleGenerate(model, prompts, { ...opts, seed: 6, batchSize: 3 });
      expect(c).not.toEqual(a);
      // The KV cache changes the work, not the stories: whole-sequence reruns sample the same tokens.
      const rerun = sampleGenerate(model, prompts, { ...opts, batchSize: 3, kvCache: false });
      expect(rerun).toEqual(a);
      // Rows of different lengths finishing at different steps (a stop token most ids hit).
      const half = [...Array(model.cfg.dVocab).keys()].filter((id) => id % 2 === 0);
      const mixed = { ...opts, maxTokens: 20, stopTokens: half };
      expect(sampleGenerate(model, prompts, mixed)).toEqual(sampleGenerate(model, prompts, { ...mixed, kvCache: false }));
      // Temperature 0 is greedy decoding.
      const g = sampleGenerate(model, [prompts[0]], { maxTokens: 12, temperature: 0, stopAtEos: false });
      expect(g[0]).toEqual(model.generate(prompts[0], 12 - prompts[0].length));
      // Any stop token ends a sequence right after it is sampled (and is kept).
      const all = [...Array(model.cfg.dVocab).keys()];
      const one = sampleGenerate(model, prompts, { ...opts, stopTokens: all });
      one.forEach((s, i) => expect(s.length).toBe(prompts[i].length + 1));
      const before = tf.memory().numTensors;
      sampleGenerate(model, prompts, opts);
      expect(tf.memory().numTensors).toBe(before);
      expect(() => sampleGenerate(model, prompts, { maxTokens: 10_000 })).toThrow(/context/);
    } finally {
      model.dispose();
    }
  });
});

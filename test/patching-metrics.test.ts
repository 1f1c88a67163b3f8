import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.js';
import { metricPerPrompt, normalise } from '../src/patching/metrics.js';

describe('patching metrics on hand-computed cases', () => {
  it('logit diff, log-prob diff, probability and KL', async () => {
    await initBackend();
    const logits = tf.tensor2d([
      [2, 0, -1],
      [0, 1, 1],
    ]);
    const t = { answer: [0, 1], wrong: [1, 2] };
    const get = (k: Parameters<typeof metricPerPrompt>[0], extra = {}) => Array.from(metricPerPrompt(k, logits, { ...t, ...extra }).dataSync());
    expect(get('logit_diff')).toEqual([2, 0]);
    // log-prob differences equal logit differences (same normaliser)
    get('logprob_diff').forEach((v, i) => expect(v).toBeCloseTo([2, 0][i], 5));
    const z0 = Math.exp(2) + 1 + Math.exp(-1);
    const z1 = 1 + 2 * Math.E;
    const p = get('prob');
    expect(p[0]).toBeCloseTo(Math.exp(2) / z0, 6);
    expect(p[1]).toBeCloseTo(Math.E / z1, 6);
    // KL(clean ‖ patched) is 0 against itself and matches the formula against another row
    const clean = tf.logSoftmax(logits) as tf.Tensor2D;
    get('kl', { cleanLogProbs: clean }).forEach((v) => expect(Math.abs(v)).toBeLessThan(1e-6));
    const other = tf.logSoftmax(tf.tensor2d([[0, 0, 0], [0, 0, 0]])) as tf.Tensor2D;
    const kl = get('kl', { cleanLogProbs: other });
    const q0 = [Math.exp(2) / z0, 1 / z0, Math.exp(-1) / z0];
    const want0 = q0.reduce((a, _, j) => a + (1 / 3) * Math.log(1 / 3 / q0[j]), 0);
    expect(kl[0]).toBeCloseTo(want0, 5);
    expect(normalise(3, 5, 1)).toBe(0.5);
    tf.dispose([logits, clean, other]);
  });
});

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { gpt2Config } from '../src/models/families/gpt2.js';
import { CausalLmTrainer, initGpt2Weights } from '../src/training/causal-lm.js';
import { gpt2ConfigJson } from '../src/training/gpt2-checkpoint.js';
import { restoreCheckpoint, saveCheckpoint } from '../src/training/checkpoint.js';
import { initBackend } from '../src/backend/index.js';

describe('the learning-rate schedule', () => {
  it('warms up, decays by cosine to peak/10, and a second phase restarts it from its own first step', async () => {
    await initBackend();
    const cfg = gpt2Config(gpt2ConfigJson({ nLayers: 1, dModel: 8, nHeads: 2, dMlp: 16, nCtx: 4, dVocab: 11 }), 'lr-test');
    const one = new CausalLmTrainer(cfg, initGpt2Weights(cfg, 1), { peak: 1, warmup: 10, total: 110 });
    expect([one.learningRate(0), one.learningRate(9), one.learningRate(60), one.learningRate(110), one.learningRate(500)]).toEqual([0.1, 1, 0.55, 0.1, 0.1].map((x) => expect.closeTo(x, 12)));
    one.dispose();
    const two = new CausalLmTrainer(cfg, initGpt2Weights(cfg, 1), [
      { peak: 1, warmup: 10, total: 110 },
      { from: 110, peak: 0.5, warmup: 5, total: 25 },
    ]);
    expect([two.learningRate(60), two.learningRate(109), two.learningRate(110), two.learningRate(114), two.learningRate(135)]).toEqual(
      [0.55, 0.1, 0.1, 0.5, 0.05].map((x) => expect.closeTo(x, 3)),
    );
    two.dispose();
  });
});

describe('training checkpoints', () => {
  it('N steps, save, restore in a new trainer, N more: the weights of 2N straight steps (to float rounding)', async () => {
    await initBackend();
    const cfg = gpt2Config(gpt2ConfigJson({ nLayers: 2, dModel: 16, nHeads: 2, dMlp: 32, nCtx: 8, dVocab: 23 }), 'ckpt-test');
    const batch = (s: number) => Int32Array.from({ length: 2 * 8 }, (_, i) => (i * 7 + s * 3) % 23);
    const lr = { peak: 1e-2, warmup: 2, total: 8 };
    // One trainer at a time: tfjs variables are registered by name.
    const straight = new CausalLmTrainer(cfg, initGpt2Weights(cfg, 1), lr);
    for (let s = 0; s < 6; s++) straight.step(s, batch(s), 2, 8);
    const want = straight.weights();
    straight.dispose();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-ckpt-'));
    try {
      const first = new CausalLmTrainer(cfg, initGpt2Weights(cfg, 1), lr);
      expect(await restoreCheckpoint(first, dir)).toBe(0);
      for (let s = 0; s < 3; s++) first.step(s, batch(s), 2, 8);
      await saveCheckpoint(first, dir, 3);
      first.dispose();
      const resumed = new CausalLmTrainer(cfg, initGpt2Weights(cfg, 2), lr);
      const start = await restoreCheckpoint(resumed, dir);
      expect(start).toBe(3);
      for (let s = start; s < 6; s++) resumed.step(s, batch(s), 2, 8);
      const b = resumed.weights();
      for (const [name, t] of want) {
        const d = Math.max(...Array.from(t.data, (v, i) => Math.abs(v - b.get(name)!.data[i])));
        // Not bit-exact: tfjs's Adam recomputes β^t with pow() on restore where training multiplied
        // step by step (last-ulp differences; b_K, whose gradient is ~0, amplifies them through Adam's normalisation).
        expect(d, name).toBeLessThan(1e-5);
      }
      expect(fs.readdirSync(dir).sort()).toEqual(['optimizer.safetensors', 'weights.safetensors']);
      resumed.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(tf.memory().numTensors).toBeLessThan(1000);
  });
});

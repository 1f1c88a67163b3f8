import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { relevanceConservation } from '../src/patching/conservation.js';
import { loadReference, modelPath } from './helpers/fixtures.js';

function refPrompt(name: 'tiny-llama' | 'tiny-gpt2' | 'stories260K') {
  return loadReference(name).patching as unknown as { clean: number[]; answer: number; wrong: number };
}

// tiny-llama: 4 query heads over 2 kv heads (GQA), RoPE, no biases.
describe('tiny-llama: the AttnHalf rule (AttnLRP Half rule on Q·Kᵀ and pattern·V)', () => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath('tiny-llama'));
  });
  afterAll(() => model?.dispose());

  it('gives the closed-form gradients at rot_q, rot_k and v from the gradient at z', () => {
    const { clean, answer } = refPrompt('tiny-llama');
    const T = clean.length;
    const l = 1;
    const p = `blocks.${l}.attn.`;
    const names = [p + 'hook_rot_q', p + 'hook_rot_k', p + 'hook_v', p + 'hook_z'];
    const metric = (logits: tf.Tensor3D) => logits.slice([0, T - 1, answer], [1, 1, 1]).sum().asScalar();
    const { grads, cache } = model.gradients(clean, names, metric, { rules: ['AttnHalf'], cacheNames: [...names, p + 'hook_pattern'] });
    const { nHeads: H, nKvHeads: K, dHead: dh } = model.cfg;
    const G = H / K;
    const q = cache!.get(p + 'hook_rot_q').dataSync(); // [1, T, H, dh]
    const k = cache!.get(p + 'hook_rot_k').dataSync(); // [1, T, K, dh]
    const v = cache!.get(p + 'hook_v').dataSync(); // [1, T, K, dh]
    const P = cache!.get(p + 'hook_pattern').dataSync(); // [1, H, T, T]
    const dZ = grads.get(p + 'hook_z')!.dataSync(); // [1, T, H, dh]
    const wantQ = new Float64Array(T * H * dh);
    const wantK = new Float64Array(T * K * dh);
    const wantV = new Float64Array(T * K * dh);
    for (let h = 0; h < H; h++) {
      const kv = Math.floor(h / G);
      for (let i = 0; i < T; i++) {
        // dP = ½ dZ·Vᵀ; dS = P ⊙ (dP − Σ_j P dP) (plain softmax backward); d(Q·Kᵀ) = dS/√dh.
        const dP = new Float64Array(T);
        for (let j = 0; j < T; j++) for (let c = 0; c < dh; c++) dP[j] += 0.5 * dZ[(i * H + h) * dh + c] * v[(j * K + kv) * dh + c];
        let dot = 0;
        for (let j = 0; j < T; j++) dot += P[(h * T + i) * T + j] * dP[j];
        for (let j = 0; j < T; j++) {
          const pij = P[(h * T + i) * T + j];
          const dRaw = (pij * (dP[j] - dot)) / Math.sqrt(dh);
          for (let c = 0; c < dh; c++) {
            wantQ[(i * H + h) * dh + c] += 0.5 * dRaw * k[(j * K + kv) * dh + c];
            wantK[(j * K + kv) * dh + c] += 0.5 * dRaw * q[(i * H + h) * dh + c];
            // dV = ½ Pᵀ·dZ.
            wantV[(j * K + kv) * dh + c] += 0.5 * pij * dZ[(i * H + h) * dh + c];
          }
        }
      }
    }
    const close = (got: Float32Array | Int32Array | Uint8Array, want: Float64Array, what: string) => {
      const scale = Math.max(...Array.from(want, Math.abs));
      expect(scale, what).toBeGreaterThan(1e-6);
      want.forEach((w, i) => expect(Math.abs(got[i] - w) / scale, `${what}[${i}]`).toBeLessThan(1e-4));
    };
    close(grads.get(p + 'hook_rot_q')!.dataSync(), wantQ, 'rot_q');
    close(grads.get(p + 'hook_rot_k')!.dataSync(), wantK, 'rot_k');
    close(grads.get(p + 'hook_v')!.dataSync(), wantV, 'v');
    cache!.dispose();
    tf.dispose([...grads.values()]);
  });

  it('leaves forward values bit-identical', () => {
    const { clean } = refPrompt('tiny-llama');
    const plain = model.run(clean);
    const ruled = model.run(clean, { rules: ['LN', 'Identity', 'Half', 'AttnHalf'] });
    expect(Array.from(ruled.dataSync())).toEqual(Array.from(plain.dataSync()));
    tf.dispose([plain, ruled]);
  });

  it('cannot be combined with AH (one-line error naming both)', () => {
    expect(() => model.run(refPrompt('tiny-llama').clean, { rules: ['AH', 'AttnHalf'] })).toThrow(/AH and AttnHalf/);
  });
});

// Conservation: Σ activation · modified gradient at the embeddings over the metric's value.
describe.each(['tiny-llama', 'stories260K'] as const)('%s (bias-free): relevance conservation', (name) => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  it('is 1 to 1e-4 with LN + Identity + Half + AH, at every residual cut', () => {
    const { clean, answer, wrong } = refPrompt(name);
    const c = relevanceConservation(model, clean, answer, wrong, ['LN', 'Identity', 'Half', 'AH']);
    expect(c.perCut.length).toBe(model.cfg.nLayers + 1);
    for (const { ratio } of c.perCut) expect(Math.abs(ratio - 1)).toBeLessThan(1e-4);
  });

  it('is not 1 with the default rules (both factors of Q·Kᵀ and pattern·V take the full gradient) nor with AttnHalf (the softmax absorbs relevance)', () => {
    const { clean, answer, wrong } = refPrompt(name);
    expect(Math.abs(relevanceConservation(model, clean, answer, wrong, ['LN', 'Identity', 'Half']).input - 1)).toBeGreaterThan(1e-3);
    expect(Math.abs(relevanceConservation(model, clean, answer, wrong, ['LN', 'Identity', 'Half', 'AttnHalf']).input - 1)).toBeGreaterThan(1e-3);
  });

  it('does not leak tensors', () => {
    const { clean, answer, wrong } = refPrompt(name);
    relevanceConservation(model, clean, answer, wrong, ['LN', 'Identity', 'Half', 'AH']);
    const before = tf.memory().numTensors;
    relevanceConservation(model, clean, answer, wrong, ['LN', 'Identity', 'Half', 'AH']);
    expect(tf.memory().numTensors).toBe(before);
  });
});

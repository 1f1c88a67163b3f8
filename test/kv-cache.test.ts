/**
 * KV cache: an incremental forward equals the full forward position by position, generation with
 * the cache equals generation without it, batched (left-padded) generation equals one prompt at a
 * time, hooks fire on every generated position, and nothing leaks.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { KvCache } from '../src/models/kv-cache.js';
import { loadModel } from '../src/models/load.js';
import { padBatch } from '../src/hooks/token-batch.js';
import { readPixelValues } from '../src/io/images.js';
import { sliceImages } from '../src/models/image-batch.js';
import { maxScaledDiff, modelPath, vlmPath, vlmReference } from './helpers/fixtures.js';
import path from 'node:path';

beforeAll(async () => {
  await initBackend();
});

const TEXT_MODELS = ['tiny-gpt2', 'tiny-llama', 'tiny-qwen2', 'stories260K'] as const;

function promptFor(model: HookedModel, n: number, seed: number): number[] {
  const V = model.cfg.dVocab;
  return Array.from({ length: n }, (_, i) => 1 + ((seed * 31 + i * 17) % (V - 1)));
}

describe.each(TEXT_MODELS)('%s with a KV cache', (name) => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
  });
  afterAll(() => model?.dispose());

  it('prompt pass + one token at a time gives the full forward’s logits at every position (≤1e-4)', () => {
    const ids = promptFor(model, 12, 1);
    const full = model.run([ids]);
    const fullData = full.dataSync();
    const V = model.cfg.dVocab;
    full.dispose();
    const cache = new KvCache(model.cfg.nLayers, 1);
    try {
      const first = model.run({ ...padBatch([ids.slice(0, 5)], 'right', 0) }, { kvCache: cache });
      expect(first.shape).toEqual([1, 5, V]);
      expect(maxScaledDiff(first.dataSync(), fullData.subarray(0, 5 * V))).toBeLessThan(1e-4);
      first.dispose();
      for (let t = 5; t < ids.length; t++) {
        const step = model.run({ ...padBatch([ids.slice(0, t + 1)], 'right', 0) }, { kvCache: cache });
        expect(step.shape).toEqual([1, 1, V]);
        expect(maxScaledDiff(step.dataSync(), fullData.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeLessThan(1e-4);
        step.dispose();
      }
      expect(cache.length).toBe(ids.length);
    } finally {
      cache.dispose();
    }
  });

  it('greedy generation: the same tokens with and without the cache; batched left-padded rows equal single runs', () => {
    const prompts = [promptFor(model, 7, 2), promptFor(model, 3, 3), promptFor(model, 10, 4)];
    const single = prompts.map((p) => model.generate(p, 8));
    for (const [i, p] of prompts.entries()) expect(model.generate(p, 8, { kvCache: false }), `prompt ${i}`).toEqual(single[i]);
    expect(model.generateBatch(prompts, 8)).toEqual(single);
  });

  it('hooks fire on the prompt pass and then on each new position; generation leaks no tensors', () => {
    const ids = promptFor(model, 6, 5);
    const shapes: number[][] = [];
    const record: [string, (x: tf.Tensor) => void][] = [['blocks.0.hook_resid_post', (x) => void shapes.push(x.shape)]];
    model.generate(ids, 4, { fwdHooks: record });
    expect(shapes).toEqual([[1, 6, model.cfg.dModel], [1, 1, model.cfg.dModel], [1, 1, model.cfg.dModel], [1, 1, model.cfg.dModel]]);
    // An edit at every position gives the same tokens whether or not the prefix is cached.
    const edit: [string, (x: tf.Tensor) => tf.Tensor][] = [['blocks.0.hook_mlp_out', (x) => tf.mul(x, 0)]];
    expect(model.generate(ids, 5, { fwdHooks: edit })).toEqual(model.generate(ids, 5, { fwdHooks: edit, kvCache: false }));
    model.generate(ids, 3);
    const before = tf.memory().numTensors;
    model.generate(ids, 3);
    model.generateBatch([ids, ids.slice(0, 2)], 3);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('tiny-llava with a KV cache', () => {
  let model: HookedModel;
  const ref = vlmReference('tiny-llava');
  beforeAll(async () => {
    model = await loadModel(vlmPath('tiny-llava'));
  });
  afterAll(() => model?.dispose());

  it('generation with an image: the same tokens with and without the cache, alone and batched', () => {
    const px = readPixelValues(path.join(vlmPath('tiny-llava'), 'pixel_values.safetensors'), model.visionCfg!);
    const img = ref.image_token_index;
    const a = [1, img, 5, 9, 17];
    const b = [1, 4, img, 8];
    const images0 = sliceImages(px, 0, 1);
    const images1 = sliceImages(px, 1, 2);
    const one = model.generate(a, 6, { images: images0 });
    expect(model.generate(a, 6, { images: images0, kvCache: false })).toEqual(one);
    const two = model.generate(b, 6, { images: images1 });
    expect(model.generateBatch([a, b], 6, { images: px })).toEqual([one, two]);
    expect(one.length).toBe(a.length - 1 + ref.n_image_tokens + 6);
  });
});

describe('KV cache misuse is refused in one line', () => {
  let model: HookedModel;
  beforeAll(async () => {
    model = await loadModel(modelPath('tiny-llama'));
  });
  afterAll(() => model?.dispose());

  it('a cache for another batch size, or with no new positions', () => {
    const cache = new KvCache(model.cfg.nLayers, 2);
    expect(() => model.run([[1, 2, 3]], { kvCache: cache })).toThrow(/kv cache holds 2 prompts, the batch has 1/);
    const c1 = new KvCache(model.cfg.nLayers, 1);
    model.run([[1, 2, 3]], { kvCache: c1 }).dispose();
    expect(() => model.run([[1, 2, 3]], { kvCache: c1 })).toThrow(/holds 3 positions: the batch of 3 has no new ones/);
    expect(() => model.run([[1, 2, 3, 4]], { kvCache: c1, stopAtLayer: 0 })).toThrow(/not with a cache/);
    c1.dispose();
    cache.dispose();
  });
});

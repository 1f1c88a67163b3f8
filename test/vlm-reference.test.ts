/**
 * LLaVA checkpoints against independent references: the shared tiny-llava (llava-hf layout, CLIP,
 * Llama) and the project's own (transformers ≥ 4.52 layout, SigLIP, Qwen2, sharded, 'full'
 * strategy, positive feature layer), each made by scripts/reference/tiny_vlm_reference.py from
 * PyTorch. Logits and activations ≤1e-4; image-corruption patching grids ≤1e-3.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { readPixelValues } from '../src/io/images.js';
import { sliceImages, type ImageBatch } from '../src/models/image-batch.js';
import { loadModel } from '../src/models/load.js';
import { PatchingSession } from '../src/patching/session.js';
import type { Component, Method } from '../src/patching/types.js';
import { expectCacheMatches, maxScaledDiff, VLM_FIXTURES, vlmPath, vlmReference } from './helpers/fixtures.js';
import path from 'node:path';

const METHODS: Method[] = ['activation', 'atp', 'relp'];

describe.each(VLM_FIXTURES)('%s matches the reference implementation', (name) => {
  const ref = vlmReference(name);
  let model: HookedModel;
  let pixels: ImageBatch;
  let clean: ImageBatch;
  beforeAll(async () => {
    model = await loadModel(vlmPath(name));
    pixels = readPixelValues(path.join(vlmPath(name), 'pixel_values.safetensors'), model.visionCfg!);
    clean = sliceImages(pixels, 0, 1);
  });
  afterAll(() => model?.dispose());

  it('logits at every position (≤1e-4)', () => {
    const logits = model.run({ prompts: ref.tokens, images: clean });
    expect(logits.shape).toEqual([1, ...ref.logits_shape]);
    expect(maxScaledDiff(logits.dataSync(), ref.logits)).toBeLessThan(1e-4);
    logits.dispose();
  });

  it('every reference activation, tower and language model (≤1e-4)', () => {
    const names = Object.keys(ref.activations);
    const { logits, cache } = model.runWithCache({ prompts: ref.tokens, images: clean }, { names });
    expectCacheMatches(cache, ref.activations);
    cache.dispose();
    logits.dispose();
  });

  it('one placeholder per image expands to the same run as the expanded ids', () => {
    const t = ref.image_token_index;
    const short = ref.tokens.filter((id, i) => id !== t || ref.tokens[i - 1] !== t);
    expect(short.length).toBe(ref.tokens.length - ref.n_image_tokens + 1);
    const a = model.run({ prompts: short, images: clean });
    const b = model.run({ prompts: ref.tokens, images: clean });
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    tf.dispose([a, b]);
  });

  it('hooks, caches and RelP rules do not change forward values', () => {
    const input = { prompts: ref.tokens, images: clean };
    const plain = model.run(input);
    const { logits, cache } = model.runWithCache(input);
    const hooked = model.runWithHooks(input, [['vision.blocks.*.hook_resid_post', (x) => x.clone()], ['hook_image_embeds', (x) => x.clone()]]);
    const ruled = model.run(input, { rules: ['LN', 'Identity', 'Half', 'AH'] });
    for (const t of [logits, hooked, ruled]) expect(Array.from(t.dataSync())).toEqual(Array.from(plain.dataSync()));
    tf.dispose([plain, logits, hooked, ruled]);
    cache.dispose();
  });

  describe('image-corruption patching grids (≤1e-3)', () => {
    let session: PatchingSession;
    beforeAll(() => {
      const p = ref.patching;
      session = new PatchingSession(model, [
        { clean: ref.tokens, corrupt: ref.tokens, answer: p.answer, wrong: p.wrong, cleanImages: sliceImages(pixels, p.clean_image, p.clean_image + 1), corruptImages: sliceImages(pixels, p.corrupt_image, p.corrupt_image + 1) },
      ]);
    });
    afterAll(() => session?.dispose());

    it('ld_clean and ld_corrupt', () => {
      const b = session.baselines();
      expect(Math.abs(b.clean - ref.patching.ld_clean)).toBeLessThan(1e-4);
      expect(Math.abs(b.corrupt - ref.patching.ld_corrupt)).toBeLessThan(1e-4);
    });

    for (const component of Object.keys(ref.patching.grids) as Component[]) {
      it.each(METHODS)(`${component} · %s`, (method) => {
        const grid = session.grid(component, method);
        const want = ref.patching.grids[component];
        expect(grid.shape).toEqual(want.shape);
        const got = (grid.scores as number[][]).flat();
        const diffs = got.map((v, i) => Math.abs(v - want[method][i]));
        const worst = Math.max(...diffs);
        const at = diffs.indexOf(worst);
        expect(worst, `worst at ${at}: got ${got[at]} want ${want[method][at]}`).toBeLessThan(1e-3);
      });
    }

    it('does not leak tensors', () => {
      session.grid('vision.resid_pre', 'activation');
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) {
        session.grid('vision.resid_pre', 'activation');
        session.grid('vision.resid_pre', 'relp');
        session.grid('resid_pre', 'atp');
        session.grid('mlp_out', 'activation');
      }
      expect(tf.memory().numTensors).toBe(before);
    });
  });
});

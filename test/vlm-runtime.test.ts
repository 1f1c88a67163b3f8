/**
 * Behaviour of the staged runtime across the image splice: gradients from a language-model metric
 * to tower hooks (checked against finite differences), batches of several images with padded
 * prompts, resuming inside the tower, standalone CLIP/SigLIP towers against their references,
 * image preprocessing against an independent PIL computation, hook listing, memory.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { HooklensError } from '../src/errors.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { preprocessImageFile, readPixelValues } from '../src/io/images.js';
import { concatImages, sliceImages, type ImageBatch } from '../src/models/image-batch.js';
import { loadModel } from '../src/models/load.js';
import type { TokenBatch } from '../src/models/transformer.js';
import { maxScaledDiff, vlmPath, vlmReference } from './helpers/fixtures.js';

const ROOT = path.resolve(__dirname, '..');
const VLM = path.join(ROOT, 'test', 'fixtures', 'vlm');

function logitDiff(answer: number, wrong: number) {
  return (logits: tf.Tensor3D, tokens: TokenBatch) => {
    const T = tokens.seqLen;
    const last = logits.slice([0, T - 1, 0], [1, 1, -1]).reshape([-1]);
    return tf.sub(last.slice([answer], [1]), last.slice([wrong], [1])).sum().asScalar();
  };
}

describe('LLaVA runtime (tiny-llava)', () => {
  const ref = vlmReference('tiny-llava');
  let model: HookedModel;
  let pixels: ImageBatch;
  let img0: ImageBatch;
  let img1: ImageBatch;
  beforeAll(async () => {
    model = await loadModel(vlmPath('tiny-llava'));
    pixels = readPixelValues(path.join(vlmPath('tiny-llava'), 'pixel_values.safetensors'), model.visionCfg!);
    img0 = sliceImages(pixels, 0, 1);
    img1 = sliceImages(pixels, 1, 2);
  });
  afterAll(() => model?.dispose());

  it('lists tower, projector and language-model hooks in forward order with their shapes', () => {
    const names = model.hookNames();
    const at = (n: string) => names.indexOf(n);
    expect(at('vision.hook_embed')).toBe(0);
    expect(at('vision.ln_pre.hook_normalized')).toBeGreaterThan(0);
    expect(at('vision.blocks.2.hook_resid_post')).toBeLessThan(at('hook_image_embeds'));
    expect(at('hook_image_embeds')).toBeLessThan(at('hook_embed'));
    expect(at('blocks.2.hook_resid_post')).toBeGreaterThan(at('hook_embed'));
    const dims = { batch: 2, seqLen: 23, images: 3 };
    expect(model.hookShape('vision.blocks.0.attn.hook_pattern', dims)).toEqual([3, 4, 17, 17]);
    expect(model.hookShape('vision.blocks.1.mlp.hook_post', dims)).toEqual([3, 17, 192]);
    expect(model.hookShape('hook_image_embeds', dims)).toEqual([3, 16, 64]);
    expect(model.hookShape('blocks.0.attn.hook_k', dims)).toEqual([2, 23, 2, 16]);
    expect(model.resolveHooks('vision.blocks.*.hook_resid_post')).toEqual([0, 1, 2].map((l) => `vision.blocks.${l}.hook_resid_post`));
    expect(() => model.resolveHooks('vision.blocks.7.hook_resid_post')).toThrow(/vision stage has 3 layers/);
  });

  it('gradient of the logit difference at vision.blocks.0.hook_resid_pre matches central finite differences', () => {
    const { answer, wrong } = ref.patching;
    const input = { prompts: ref.tokens, images: img0 };
    const name = 'vision.blocks.0.hook_resid_pre';
    const { value, grads } = model.gradients(input, [name, 'hook_image_embeds'], logitDiff(answer, wrong));
    const g = grads.get(name)!;
    expect(g.shape).toEqual([1, 17, 48]);
    const gv = g.dataSync();
    const { logits, cache } = model.runWithCache(input, { names: [name] });
    const base = cache.get(name).dataSync();
    const eps = 1e-2;
    const metricWith = (delta: Float32Array) => {
      const lg = model.runWithHooks(input, [[name, (x) => tf.add(x, tf.tensor(delta, x.shape))]]);
      const v = tf.tidy(() => logitDiff(answer, wrong)(lg, model.toTokens(input)).dataSync()[0]);
      lg.dispose();
      return v;
    };
    // Patch positions (CLS and patches) and a few channels each.
    for (const [p, c] of [[0, 3], [1, 0], [5, 17], [16, 47], [9, 30]]) {
      const i = p * 48 + c;
      const plus = new Float32Array(base.length);
      const minus = new Float32Array(base.length);
      plus[i] = eps;
      minus[i] = -eps;
      const fd = (metricWith(plus) - metricWith(minus)) / (2 * eps);
      expect(Math.abs(fd - gv[i]), `pos ${p} ch ${c}: fd ${fd} grad ${gv[i]}`).toBeLessThan(2e-3 + 2e-2 * Math.abs(fd));
    }
    expect(Math.abs(value - (logits.dataSync()[(ref.tokens.length - 1) * 211 + answer] - logits.dataSync()[(ref.tokens.length - 1) * 211 + wrong]))).toBeLessThan(1e-4);
    // The image embeddings' gradient is non-zero only where the language model reads them.
    expect(grads.get('hook_image_embeds')!.shape).toEqual([1, 16, 64]);
    tf.dispose([logits, ...grads.values()]);
    cache.dispose();
  });

  it('a batch of two images and padded prompts of different lengths equals each prompt alone', () => {
    const t = ref.image_token_index;
    const a = [1, 5, t, 17, 42, 3, 8];
    const b = [1, t, 9, 11];
    const both = model.toTokens({ prompts: [a, b], images: concatImages([img0, img1]) });
    expect(both.seqLen).toBe(a.length + 15);
    const batched = model.run(both);
    for (const [i, p, img] of [[0, a, img0], [1, b, img1]] as const) {
      const alone = model.run({ prompts: p, images: img });
      const T = alone.shape[1];
      const row = batched.slice([i, 0, 0], [1, T, -1]);
      expect(maxScaledDiff(row.dataSync(), alone.dataSync())).toBeLessThan(1e-4);
      tf.dispose([alone, row]);
    }
    batched.dispose();
  });

  it('one prompt with two images takes them in order', () => {
    const t = ref.image_token_index;
    const p = [1, t, 9, t, 4];
    const ab = model.runWithCache({ prompts: p, images: concatImages([img0, img1]) }, { names: ['hook_embed', 'hook_image_embeds'] });
    const ba = model.runWithCache({ prompts: p, images: concatImages([img1, img0]) }, { names: ['hook_embed'] });
    const e = ab.cache.get('hook_embed');
    const img = ab.cache.get('hook_image_embeds');
    // Positions 1..16 hold image 0's embeddings, 18..33 image 1's.
    expect(Array.from(e.slice([0, 1, 0], [1, 16, -1]).dataSync())).toEqual(Array.from(img.slice([0, 0, 0], [1, -1, -1]).dataSync()));
    expect(Array.from(e.slice([0, 18, 0], [1, 16, -1]).dataSync())).toEqual(Array.from(img.slice([1, 0, 0], [1, -1, -1]).dataSync()));
    expect(Array.from(ba.cache.get('hook_embed').slice([0, 1, 0], [1, 16, -1]).dataSync())).toEqual(Array.from(img.slice([1, 0, 0], [1, -1, -1]).dataSync()));
    for (const r of [ab, ba]) (r.logits.dispose(), r.cache.dispose());
  });

  it('resuming inside the tower from a cached resid_pre reproduces the full run', () => {
    const input = { prompts: ref.tokens, images: img0 };
    const { logits, cache } = model.runWithCache(input, { names: ['vision.blocks.1.hook_resid_pre'] });
    const resumed = model.run(input, { resume: { layer: 1, residPre: cache.get('vision.blocks.1.hook_resid_pre') }, resumeStage: 'vision_tower' });
    expect(maxScaledDiff(resumed.dataSync(), logits.dataSync())).toBeLessThan(1e-6);
    tf.dispose([logits, resumed]);
    cache.dispose();
  });

  it('text-only prompts run through the language model alone', () => {
    const logits = model.run([1, 5, 9, 17]);
    expect(logits.shape).toEqual([1, 4, 211]);
    logits.dispose();
  });

  it('generate embeds the image once and decodes greedily like repeated full runs', () => {
    const t = ref.image_token_index;
    const ids = model.generate([1, 5, t, 17], 4, { images: img0 });
    expect(ids.length).toBe(3 + 16 + 4);
    const again = [...ids.slice(0, 19)];
    for (let i = 0; i < 4; i++) {
      const lg = model.run({ prompts: again, images: img0 }, { finalPositionOnly: true });
      again.push(lg.reshape([-1]).argMax().dataSync()[0]);
      lg.dispose();
    }
    expect(again).toEqual(ids);
  });

  it('bad input: placeholders ≠ images, wrong image size, image token run of the wrong length', () => {
    const t = ref.image_token_index;
    expect(() => model.run({ prompts: [1, t, 4, t], images: img0 })).toThrow(/2 image placeholder\(s\).*1 image\(s\)/);
    expect(() => model.run([1, t, 4])).toThrow(/1 image placeholder\(s\).*0 image\(s\)/);
    const small: ImageBatch = { data: new Float32Array(3 * 16 * 16), shape: [1, 3, 16, 16] };
    expect(() => model.run({ prompts: [1, t, 4], images: small })).toThrow(/\[1, 3, 16, 16\].*\[n, 3, 32, 32\]/);
    expect(() => model.run({ prompts: [1, t, t, t, 4], images: img0 })).toThrow(/run of 3 image tokens/);
    expect(() => model.run({ prompts: [1, t, 4], images: img0 }, { resume: { layer: 0, residPre: tf.zeros([1, 5, 64]) }, resumeStage: 'vision_tower' })).toThrow(HooklensError);
  });

  it('does not leak tensors over repeated runs, caches, gradients and generation', () => {
    const input = { prompts: ref.tokens, images: img0 };
    const warm = () => {
      model.run(input).dispose();
      const r = model.runWithCache(input);
      r.cache.dispose();
      r.logits.dispose();
      const g = model.gradients(input, ['vision.blocks.*.hook_resid_pre', 'hook_image_embeds', 'blocks.0.hook_resid_post'], logitDiff(3, 4), { cacheNames: 'vision.blocks.*.hook_mlp_out', rules: ['LN', 'Identity', 'Half'] });
      for (const t of g.grads.values()) t.dispose();
      g.cache?.dispose();
      model.generate([1, ref.image_token_index, 5], 2, { images: img0 });
    };
    warm();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 10; i++) warm();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe.each(['clip-vision-tower', 'siglip-vision-tower'])('standalone %s matches its reference', (name) => {
  const dir = path.join(VLM, name);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as {
    last_hidden_state: { shape: number[]; values: number[] };
    activations: Record<string, { shape: number[]; values: number[] }>;
  };
  let model: HookedModel;
  let pixels: ImageBatch;
  beforeAll(async () => {
    model = await loadModel(dir);
    pixels = readPixelValues(path.join(dir, 'pixel_values.safetensors'), model.visionCfg!);
  });
  afterAll(() => model?.dispose());

  it('last hidden state and every tower activation for a batch of two images (≤1e-4)', () => {
    const names = Object.keys(ref.activations);
    const { logits, cache } = model.runWithCache({ prompts: [], images: pixels }, { names });
    expect(logits.shape).toEqual(ref.last_hidden_state.shape);
    expect(maxScaledDiff(logits.dataSync(), ref.last_hidden_state.values)).toBeLessThan(1e-4);
    for (const n of names) {
      expect(cache.get(n).shape, n).toEqual(ref.activations[n].shape);
      expect(maxScaledDiff(cache.get(n).dataSync(), ref.activations[n].values), n).toBeLessThan(1e-4);
    }
    logits.dispose();
    cache.dispose();
  });

  it('has no language model, and says so', () => {
    expect(model.graph.kind).toBe('vision-tower');
    expect(() => model.cfg).toThrow(/has no language model/);
    expect(() => model.run([1, 2, 3])).toThrow(/runs on images/);
    expect(model.hookNames().every((n) => n.startsWith('vision.'))).toBe(true);
  });
});

describe('PNG/JPEG through the image processor vs an independent PIL computation', () => {
  // scripts/reference/preprocess_reference.py: PIL resize (bicubic), center crop, rescale, normalise.
  const PRE = path.join(VLM, 'preprocess');
  const vision = { imageSize: 32, nChannels: 3 } as never;
  for (const proc of ['clip', 'siglip']) {
    for (const img of ['png', 'jpg']) {
      it(`${proc} config, ${img}`, async () => {
        const want = JSON.parse(fs.readFileSync(path.join(PRE, proc, `pixel_values_smooth_${img}.json`), 'utf8')) as { image: string; shape: number[]; values: number[] };
        const got = await preprocessImageFile(path.join(PRE, want.image), path.join(PRE, proc), vision);
        expect(got.shape).toEqual(want.shape);
        const cfg = JSON.parse(fs.readFileSync(path.join(PRE, proc, 'preprocessor_config.json'), 'utf8'));
        // One grey level in normalised units: resamplers round to 8 bits at slightly different places.
        const level = 1 / 255 / Math.min(...cfg.image_std);
        let worst = 0;
        let sum = 0;
        let over = 0;
        want.values.forEach((v, i) => {
          const d = Math.abs(got.data[i] - v);
          worst = Math.max(worst, d);
          sum += d;
          if (d > 1e-2) over++;
        });
        const mean = sum / want.values.length;
        if (img === 'png') {
          expect(worst).toBeLessThanOrEqual(Math.max(1e-2, level) + 1e-6);
          expect(over / want.values.length).toBeLessThan(0.02);
          expect(mean).toBeLessThan(1e-3);
        } else {
          // JPEG decoders (chroma upsampling) differ by a grey level or two on top.
          expect(worst).toBeLessThanOrEqual(3 * level);
          expect(mean).toBeLessThan(3e-3);
        }
      });
    }
  }

  it('an image file without a preprocessor_config.json is refused in one line', async () => {
    await expect(preprocessImageFile(path.join(PRE, 'smooth.png'), vlmPath('tiny-llava'), vision)).rejects.toThrow(/no preprocessor_config\.json/);
  });
});

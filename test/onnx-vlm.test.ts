/**
 * The vision stages on onnxruntime: tower, projector and splice emitted from the same block code
 * as the language model. Every LLaVA fixture (four layouts, CLIP and SigLIP, Llama and Qwen2,
 * both select strategies) and both standalone towers reproduce the independent PyTorch reference
 * (logits and every reference activation ≤1e-4) and the tfjs forward (every hook, a batch of two
 * prompts with one image each, left-padded); greedy generation with an image gives the tfjs
 * tokens; image-corruption patching grids of the language model equal the reference.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { readPixelValues } from '../src/io/images.js';
import { concatImages, sliceImages, type ImageBatch } from '../src/models/image-batch.js';
import { loadModel } from '../src/models/load.js';
import { OnnxForward } from '../src/onnx/onnx-forward.js';
import { PatchingSession } from '../src/patching/session.js';
import { expectOnnxMatchesReference, maxScaledDiff, realPositions, VLM_FIXTURES, vlmPath, vlmReference } from './helpers/fixtures.js';
import { cliSuite, type CliResult } from './helpers/cli-run.js';
import { readArrowCache } from '../src/io/arrow-cache.js';

const { caseDir, cli } = cliSuite('hooklens-onnx-vlm-');
const TIMEOUT = 120_000;

beforeAll(async () => {
  await initBackend();
});

describe.each(VLM_FIXTURES)('%s on onnxruntime', (name) => {
  const ref = vlmReference(name);
  let model: HookedModel;
  let onnx: OnnxForward;
  let pixels: ImageBatch;
  let clean: ImageBatch;
  beforeAll(async () => {
    model = await loadModel(vlmPath(name));
    onnx = new OnnxForward(model);
    pixels = readPixelValues(path.join(vlmPath(name), 'pixel_values.safetensors'), model.visionCfg!);
    clean = sliceImages(pixels, 0, 1);
  });
  afterAll(async () => {
    await onnx?.dispose();
    model?.dispose();
  });

  it('logits and every reference activation, tower and language model, match the reference (≤1e-4)', async () => {
    const r = await onnx.run(model.toTokens({ prompts: ref.tokens, images: clean }), { hooks: Object.keys(ref.activations) });
    expectOnnxMatchesReference(r, ref);
  });

  it('every hook equals the tfjs forward on a left-padded batch of two prompts with an image each (≤1e-4)', async () => {
    const t = ref.image_token_index;
    const prompts = [ref.tokens, [ref.tokens[0], t, ...ref.tokens.slice(-3)]];
    const input = { prompts, images: concatImages([sliceImages(pixels, 1, 2), clean]) };
    const tokens = model.toTokens(input, 'left');
    const hooks = model.hookNames().filter((h) => !h.endsWith('hook_result'));
    const r = await onnx.run(tokens, { hooks });
    const { logits, cache } = model.runWithCache(tokens, { names: hooks });
    const real = (data: ArrayLike<number>, shape: number[]) => realPositions(tokens, data, shape);
    expect(maxScaledDiff(real(r.logits!.data, r.logits!.shape), real(logits.dataSync(), logits.shape))).toBeLessThan(1e-4);
    for (const h of hooks) {
      const want = cache.get(h);
      expect(r.hooks.get(h)!.shape, h).toEqual(want.shape);
      // Tower hooks are per image (no padding); attention tensors put positions on axes 2 and 3.
      const whole = h.startsWith('vision.') || h === 'hook_image_embeds' || /hook_(attn_scores|pattern)$/.test(h);
      const a = whole ? Array.from(r.hooks.get(h)!.data) : real(r.hooks.get(h)!.data, want.shape);
      const b = whole ? Array.from(want.dataSync()) : real(want.dataSync(), want.shape);
      expect(maxScaledDiff(a, b), h).toBeLessThan(1e-4);
    }
    logits.dispose();
    cache.dispose();
  });

  it('greedy generation with an image: the tfjs tokens (KV cache on both)', async () => {
    const a = await onnx.generateBatch([ref.tokens], 6, { images: clean });
    const b = model.generateBatch([ref.tokens], 6, { images: clean });
    expect(a).toEqual(b);
  });

  it('image-corruption patching of the language model (resid_pre, attn_out, mlp_out) equals the reference grids (≤1e-3 scaled, as on tfjs)', async () => {
    const p = ref.patching;
    const images = (i: number) => sliceImages(pixels, i, i + 1);
    const pair = { clean: ref.tokens, corrupt: ref.tokens, answer: p.answer, wrong: p.wrong, cleanImages: images(p.clean_image), corruptImages: images(p.corrupt_image) };
    const session = new PatchingSession(model, [pair], { onnx });
    const before = onnx.sessionCount;
    for (const component of ['resid_pre', 'attn_out', 'mlp_out'] as const) {
      const grid = await session.gridAsync(component, 'activation');
      const want = p.grids[component].activation;
      const scale = Math.max(...want.map(Math.abs), 1e-6);
      const got = (grid.scores as number[][]).flat();
      expect(Math.max(...got.map((v, i) => Math.abs(v - want[i]))) / scale, component).toBeLessThan(1e-3);
    }
    // The patched forwards ran on onnxruntime: a session per language-model block, the last block
    // once more cut to the final position (for patches before it), and the head.
    expect(onnx.sessionCount - before).toBe(model.cfg.nLayers + 2);
    session.dispose();
  });
});

describe.each(['clip-vision-tower', 'siglip-vision-tower'])('standalone %s on onnxruntime', (name) => {
  const dir = path.resolve('test/fixtures/vlm', name);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as {
    last_hidden_state: { shape: number[]; values: number[] };
    activations: Record<string, { shape: number[]; values: number[] }>;
  };
  it('last hidden state and every tower activation for two images match the reference (≤1e-4)', async () => {
    const model = await loadModel(dir);
    const onnx = new OnnxForward(model);
    try {
      const pixels = readPixelValues(path.join(dir, 'pixel_values.safetensors'), model.visionCfg!);
      const names = Object.keys(ref.activations);
      const r = await onnx.run(model.toTokens({ prompts: [], images: pixels }), { hooks: names });
      expect(r.logits!.shape).toEqual(ref.last_hidden_state.shape);
      expect(maxScaledDiff(r.logits!.data, ref.last_hidden_state.values)).toBeLessThan(1e-4);
      for (const n of names) expect(maxScaledDiff(r.hooks.get(n)!.data, ref.activations[n].values), n).toBeLessThan(1e-4);
    } finally {
      await onnx.dispose();
      model.dispose();
    }
  });
});

describe('vision-language models on the command line: onnx = tfjs', () => {
  const dir = () => vlmPath('tiny-llava');
  const image = () => `${dir()}/pixel_values.safetensors#0`;
  const info = (r: CliResult) => `exit ${r.code}\n${r.stdout.slice(0, 600)}\n${r.stderr.slice(0, 1200)}`;

  it('run --image: the same top predictions', { timeout: TIMEOUT }, async () => {
    const args = ['run', '--model', dir(), '--tokens', '1,200,5,7,9', '--image', image(), '--top-k', '6', '--json'];
    const [a, b] = await Promise.all([cli([...args, '--backend', 'onnx']), cli([...args, '--backend', 'tfjs'])]);
    expect(a.code, info(a)).toBe(0);
    expect(b.code, info(b)).toBe(0);
    const ta = JSON.parse(a.stdout).top as { token: number; logit: number }[];
    const tb = JSON.parse(b.stdout).top as { token: number; logit: number }[];
    expect(ta.map((t) => t.token)).toEqual(tb.map((t) => t.token));
    ta.forEach((t, i) => expect(Math.abs(t.logit - tb[i].logit)).toBeLessThan(1e-4));
  });

  it('generate --image: the same tokens', { timeout: TIMEOUT }, async () => {
    const args = ['generate', '--model', dir(), '--tokens', '1,200,5,7', '--image', image(), '--max-new-tokens', '8', '--json'];
    const [a, b] = await Promise.all([cli([...args, '--backend', 'onnx']), cli([...args, '--backend', 'tfjs'])]);
    expect(a.code, info(a)).toBe(0);
    expect(b.code, info(b)).toBe(0);
    expect(JSON.parse(a.stdout)).toEqual(JSON.parse(b.stdout));
  });

  for (const [label, hooks] of [
    ['language-model hooks (modality column)', 'blocks.*.hook_resid_post,hook_embed'],
    ['tower and projector hooks (one row per image position)', 'vision.blocks.*.hook_resid_post,vision.hook_embed'],
  ] as const) {
    it(`cache --image of ${label}: the same file contents (≤1e-4)`, { timeout: TIMEOUT }, async () => {
      const d = caseDir('cache');
      const args = (b: string) => ['cache', '--model', dir(), '--tokens', '1,200,5,7,9', '--image', image(), '--hooks', hooks, '--backend', b, '--out', path.join(d, `${b}.arrow`)];
      const [a, b] = await Promise.all([cli(args('onnx')), cli(args('tfjs'))]);
      expect(a.code, info(a)).toBe(0);
      expect(b.code, info(b)).toBe(0);
      const x = readArrowCache(path.join(d, 'onnx.arrow'));
      const y = readArrowCache(path.join(d, 'tfjs.arrow'));
      expect(Object.keys(x.columns).sort()).toEqual(Object.keys(y.columns).sort());
      for (const [n, col] of Object.entries(x.columns)) expect(maxScaledDiff(Array.from(col.data!), Array.from(y.columns[n].data!)), n).toBeLessThan(1e-4);
    });
  }
});

/**
 * The command line on vision-language models: --image on run, cache, generate, patch and sae eval
 * (safetensors pixel values and PNGs through the preprocessor), pairs files naming images, the
 * Arrow layouts of tower and language-model caches, and one-line refusals of bad input.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tableFromIPC } from 'apache-arrow';
import { initBackend } from '../src/backend/index.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { readArrowCache } from '../src/io/arrow-cache.js';
import { readPixelValues } from '../src/io/images.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { sliceImages } from '../src/models/image-batch.js';
import { loadModel } from '../src/models/load.js';
import { evaluateSae } from '../src/sae/eval.js';
import { loadSae, saveSae } from '../src/sae/io.js';
import { makeSaeConfig } from '../src/sae/config.js';
import { Sae } from '../src/sae/sae.js';
import { cliSuite, copyModelDir, listTree, stderrLines, type CliResult } from './helpers/cli-run.js';
import { maxScaledDiff, modelPath, vlmPath, vlmReference } from './helpers/fixtures.js';

const TIMEOUT = 180_000;
const ref = vlmReference('tiny-llava');
const LLAVA = vlmPath('tiny-llava');
const IMG = ref.image_token_index;
const { caseDir, cli } = cliSuite('hooklens-cli-vlm-');

let files: { clean: string; corrupt: string; both: string; small: string; dir: string };
let model: HookedModel;
beforeAll(async () => {
  await initBackend();
  model = await loadModel(LLAVA);
  const dir = caseDir('images');
  const px = readPixelValues(path.join(LLAVA, 'pixel_values.safetensors'), model.visionCfg!);
  const write = (name: string, data: Float32Array, shape: number[]) => {
    const f = path.join(dir, name);
    writeSafetensors(f, { pixel_values: { data, shape } });
    return f;
  };
  files = {
    clean: write('clean.safetensors', sliceImages(px, 0, 1).data, [1, 3, 32, 32]),
    corrupt: write('corrupt.safetensors', sliceImages(px, 1, 2).data, [3, 32, 32]),
    both: path.join(LLAVA, 'pixel_values.safetensors'),
    small: write('small.safetensors', new Float32Array(3 * 16 * 16), [1, 3, 16, 16]),
    dir,
  };
});
afterAll(() => model?.dispose());

function info(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 1500)}\n--- stderr ---\n${r.stderr.slice(0, 3000)}`;
}

function json<T>(r: CliResult): T {
  expect(r.code, info(r)).toBe(0);
  const lines = r.stdout.split('\n').filter((l) => l.trim());
  expect(lines, info(r)).toHaveLength(1);
  return JSON.parse(lines[0]) as T;
}

function oneLineFailure(r: CliResult, ...parts: (string | RegExp)[]): void {
  expect(r.code, info(r)).not.toBe(0);
  const lines = stderrLines(r.stderr);
  expect(lines, info(r)).toHaveLength(1);
  expect(lines[0]).not.toMatch(/internal error|TypeError|RangeError/);
  for (const p of parts) expect(lines[0], info(r)).toMatch(p);
}

/** The prompt of the reference with one placeholder in place of the expanded run. */
const shortPrompt = ref.tokens.filter((t, i) => t !== IMG || ref.tokens[i - 1] !== IMG);

describe.concurrent('hooklens on vision-language models', () => {
  it('run --image: final-position logits of the reference; tokens are the expanded ids', { timeout: TIMEOUT }, async () => {
    const out = json<{ tokens: number[]; top: { token: number; logit: number }[] }>(await cli(['run', '--model', LLAVA, '--tokens', shortPrompt.join(','), '--image', files.clean, '--top-k', '5', '--json']));
    expect(out.tokens).toEqual(ref.tokens);
    const [T, V] = ref.logits_shape;
    const last = ref.logits.slice((T - 1) * V, T * V);
    for (const t of out.top) expect(Math.abs(t.logit - last[t.token])).toBeLessThan(1e-4);
    expect(out.top[0].token).toBe(last.indexOf(Math.max(...last)));
  });

  it('--image FILE.safetensors#i picks one image of a batched pixel_values file', { timeout: TIMEOUT }, async () => {
    const args = (img: string) => ['run', '--model', LLAVA, '--tokens', shortPrompt.join(','), '--image', img, '--top-k', '5', '--json'];
    const [picked0, picked1, whole1] = await Promise.all([cli(args(`${files.both}#0`)), cli(args(`${files.both}#1`)), cli(args(files.corrupt))]);
    expect(json(picked0)).toEqual(json(await cli(args(files.clean))));
    expect(json(picked1)).toEqual(json(whole1));
    expect(json(picked1)).not.toEqual(json(picked0));
  });

  it('cache: language-model hooks get a modality column; tower and projector hooks one row per image position', { timeout: TIMEOUT }, async () => {
    const dir = caseDir('cache');
    const lm = path.join(dir, 'lm.arrow');
    const tower = path.join(dir, 'tower.arrow');
    const projector = path.join(dir, 'projector.arrow');
    const base = ['cache', '--model', LLAVA, '--tokens', ref.tokens.join(','), '--image', files.clean];
    const [r1, r2, r3] = await Promise.all([
      cli([...base, '--hooks', 'blocks.1.hook_resid_post,hook_embed', '--out', lm]),
      cli([...base, '--hooks', 'vision.blocks.*.hook_resid_post', '--out', tower]),
      cli([...base, '--hooks', 'hook_image_embeds', '--out', projector]),
    ]);
    expect(r1.code, info(r1)).toBe(0);
    expect(r2.code, info(r2)).toBe(0);
    expect(r3.code, info(r3)).toBe(0);
    const p = readArrowCache(projector);
    expect(Array.from(p.pos)).toEqual(Array.from({ length: ref.n_image_tokens }, (_, i) => i));
    expect(Array.from(p.image!)).toEqual(new Array(ref.n_image_tokens).fill(0));
    expect(maxScaledDiff(p.columns.hook_image_embeds.data!, ref.activations.hook_image_embeds.values)).toBeLessThan(1e-4);
    const a = readArrowCache(lm);
    expect(Array.from(a.modality!)).toEqual(ref.tokens.map((t) => (t === IMG ? 1 : 0)));
    expect(tableFromIPC(fs.readFileSync(lm)).getChild('modality')!.get(3)).toBe('image');
    expect(maxScaledDiff(a.columns['blocks.1.hook_resid_post'].data!, ref.activations['blocks.1.hook_resid_post'].values)).toBeLessThan(1e-4);
    const b = readArrowCache(tower);
    expect(b.pos.length).toBe(17);
    expect(Array.from(b.pos)).toEqual(Array.from({ length: 17 }, (_, i) => i));
    expect(Array.from(b.image!)).toEqual(new Array(17).fill(0));
    expect(Array.from(b.token)).toEqual(new Array(17).fill(-1));
    for (let l = 0; l < 3; l++) {
      const n = `vision.blocks.${l}.hook_resid_post`;
      expect(maxScaledDiff(b.columns[n].data!, ref.activations[n].values), n).toBeLessThan(1e-4);
    }
  });

  for (const hooks of ['vision.hook_embed,hook_embed', 'hook_image_embeds,blocks.0.hook_resid_post', 'vision.hook_embed,hook_image_embeds']) {
    it(`cache: hooks of two stages in one call (${hooks}) are refused in one line, nothing written`, { timeout: TIMEOUT }, async () => {
      const dir = caseDir('mixed');
      const r = await cli(['cache', '--model', LLAVA, '--tokens', shortPrompt.join(','), '--image', files.clean, '--hooks', hooks, '--out', path.join(dir, 'x.arrow')]);
      oneLineFailure(r, /different position axes/, /two files/, ...hooks.split(','));
      expect(listTree(dir)).toEqual([]);
    });
  }

  it('patch --clean-image/--corrupt-image on vision.resid_pre and mlp_out reproduces the reference grids', { timeout: TIMEOUT }, async () => {
    const dir = caseDir('patch');
    const common = ['--clean-tokens', ref.tokens.join(','), '--corrupt-tokens', ref.tokens.join(','), '--answer-token', String(ref.patching.answer), '--wrong-token', String(ref.patching.wrong), '--clean-image', files.clean, '--corrupt-image', files.corrupt];
    const runs = await Promise.all(
      (
        [
          ['vision.resid_pre', 'activation'],
          ['vision.resid_pre', 'relp'],
          ['mlp_out', 'atp'],
        ] as const
      ).map(([c, m]) => cli(['patch', '--model', LLAVA, ...common, '--component', c, '--method', m, '--out', path.join(dir, `${c}-${m}.json`), '--json'])),
    );
    for (const [i, [c, m]] of ([['vision.resid_pre', 'activation'], ['vision.resid_pre', 'relp'], ['mlp_out', 'atp']] as const).entries()) {
      const out = json<{ shape: number[]; scores: number[][]; ld_clean: number }>(runs[i]);
      expect(out.shape).toEqual(ref.patching.grids[c].shape);
      const want = ref.patching.grids[c][m];
      const worst = Math.max(...out.scores.flat().map((v, k) => Math.abs(v - want[k])));
      expect(worst, `${c} ${m}`).toBeLessThan(1e-3);
      expect(Math.abs(out.ld_clean - ref.patching.ld_clean)).toBeLessThan(1e-4);
    }
  });

  it('patch --pairs: pairs name their images (relative to the file)', { timeout: TIMEOUT }, async () => {
    const dir = caseDir('pairs');
    fs.copyFileSync(files.clean, path.join(dir, 'a.safetensors'));
    fs.copyFileSync(files.corrupt, path.join(dir, 'b.safetensors'));
    const pairs = path.join(dir, 'pairs.jsonl');
    const p = { clean: shortPrompt, corrupt: shortPrompt, answer: ref.patching.answer, wrong: ref.patching.wrong };
    fs.writeFileSync(pairs, [JSON.stringify({ ...p, clean_image: 'a.safetensors', corrupt_image: 'b.safetensors' }), JSON.stringify({ ...p, clean_image: 'a.safetensors', corrupt_image: 'b.safetensors' })].join('\n') + '\n');
    const out = json<{ scores: number[][]; ld_corrupt: number }>(await cli(['patch', '--model', LLAVA, '--pairs', pairs, '--component', 'resid_pre', '--method', 'activation', '--out', path.join(dir, 'g.json'), '--json']));
    const want = ref.patching.grids.resid_pre.activation;
    expect(Math.max(...out.scores.flat().map((v, k) => Math.abs(v - want[k])))).toBeLessThan(1e-3);
    expect(Math.abs(out.ld_corrupt - ref.patching.ld_corrupt)).toBeLessThan(1e-4);
  });

  it('generate --image: greedy continuation equals the library', { timeout: TIMEOUT }, async () => {
    const out = json<{ prompt_tokens: number[]; tokens: number[] }>(await cli(['generate', '--model', LLAVA, '--tokens', shortPrompt.join(','), '--image', files.clean, '--max-new-tokens', '5', '--json']));
    expect(out.prompt_tokens).toEqual(ref.tokens);
    const lib = model.generate(shortPrompt, 5, { images: readPixelValues(files.clean, model.visionCfg!) });
    expect(out.tokens).toEqual(lib);
  });

  it('hooks lists tower hooks with image shapes', { timeout: TIMEOUT }, async () => {
    const out = json<{ hooks: { name: string; shape: number[] }[] }>(await cli(['hooks', '--model', LLAVA, '--filter', 'vision.blocks.0.attn.*', '--json']));
    expect(out.hooks.find((h) => h.name === 'vision.blocks.0.attn.hook_pattern')!.shape).toEqual([1, 4, 17, 17]);
    expect(out.hooks.find((h) => h.name === 'vision.blocks.0.attn.hook_q')!.shape).toEqual([1, 17, 4, 12]);
  });

  it('sae eval --image: an SAE at a language-model hook across the image splice equals the library', { timeout: TIMEOUT }, async () => {
    const dir = path.join(caseDir('sae'), 'sae');
    const sae = Sae.init(makeSaeConfig({ architecture: 'topk', k: 8, dIn: 64, dSae: 48, hookName: 'blocks.1.hook_resid_post' }), 3);
    saveSae(sae, dir);
    sae.dispose();
    const out = json<Record<string, number>>(await cli(['sae', 'eval', '--model', LLAVA, '--sae', dir, '--tokens', shortPrompt.join(','), '--image', files.clean, '--json']));
    const { sae: loaded } = loadSae(dir);
    const lib = evaluateSae(model, loaded, [ref.tokens], { images: [readPixelValues(files.clean, model.visionCfg!)] });
    for (const k of Object.keys(out)) expect(Math.abs(out[k] - (lib as unknown as Record<string, number>)[k]), k).toBeLessThan(1e-5);
    loaded.dispose();
  });

  it('a PNG goes through the checkpoint preprocessor_config.json', { timeout: TIMEOUT }, async () => {
    const dir = caseDir('png');
    const m = path.join(dir, 'model');
    copyModelDir(vlmPath('llava-new-clip-llama-full'), m);
    const pre = path.join(__dirname, 'fixtures', 'vlm', 'preprocess');
    fs.copyFileSync(path.join(pre, 'clip', 'preprocessor_config.json'), path.join(m, 'preprocessor_config.json'));
    // The independent PIL pixel values, as a safetensors input, give (nearly) the same logits.
    const want = JSON.parse(fs.readFileSync(path.join(pre, 'clip', 'pixel_values_smooth_png.json'), 'utf8'));
    const st = path.join(dir, 'pil.safetensors');
    writeSafetensors(st, { pixel_values: { data: Float32Array.from(want.values), shape: want.shape } });
    const r = vlmReference('llava-new-clip-llama-full');
    const tokens = r.tokens.filter((t, i) => t !== r.image_token_index || r.tokens[i - 1] !== r.image_token_index).join(',');
    const [png, pil] = await Promise.all([cli(['run', '--model', m, '--tokens', tokens, '--image', path.join(pre, 'smooth.png'), '--top-k', '20', '--json']), cli(['run', '--model', m, '--tokens', tokens, '--image', st, '--top-k', '20', '--json'])]);
    const a = json<{ top: { token: number; logit: number }[] }>(png);
    const b = json<{ top: { token: number; logit: number }[] }>(pil);
    // Pixel values differ by at most a grey level, logits by ~1e-2 (this random model has near-ties at the top).
    let shared = 0;
    for (const t of a.top) {
      const o = b.top.find((x) => x.token === t.token);
      if (!o) continue;
      shared++;
      expect(Math.abs(o.logit - t.logit)).toBeLessThan(0.05);
    }
    expect(shared).toBeGreaterThanOrEqual(15);
  });
});

describe.concurrent('vision-language bad input: one line, non-zero exit, nothing written', () => {
  const cases: { name: string; args: () => string[]; expect: (string | RegExp)[]; setup?: (dir: string) => string[] }[] = [
    { name: 'image of the wrong size (.safetensors)', args: () => ['run', '--model', LLAVA, '--tokens', `1,${IMG},4`, '--image', files.small, '--json'], expect: [/small\.safetensors/, /\[1, 3, 16, 16\]/, /\[n, 3, 32, 32\]/] },
    { name: 'PNG for a model without preprocessor_config.json', args: () => ['run', '--model', LLAVA, '--tokens', `1,${IMG},4`, '--image', path.join(__dirname, 'fixtures', 'vlm', 'preprocess', 'smooth.png'), '--json'], expect: [/smooth\.png/, /preprocessor_config\.json/] },
    { name: 'more placeholders than images', args: () => ['run', '--model', LLAVA, '--tokens', `1,${IMG},4,${IMG}`, '--image', files.clean, '--json'], expect: [/2 image placeholder/, /1 image/] },
    { name: 'an image but no placeholder', args: () => ['run', '--model', LLAVA, '--tokens', '1,4,5', '--image', files.clean, '--json'], expect: [/0 image placeholder/, /1 image/] },
    { name: 'two images in one file for one placeholder (cache)', args: () => ['cache', '--model', LLAVA, '--tokens', `1,${IMG},4`, '--image', files.both, '--hooks', 'hook_embed', '--out', '__OUT__'], expect: [/1 image placeholder/, /2 image/] },
    { name: 'image index past the end of a batched file', args: () => ['run', '--model', LLAVA, '--tokens', `1,${IMG},4`, '--image', `${files.both}#2`, '--json'], expect: [/pixel_values\.safetensors#2/, /index 2 out of range/, /holds 2 images/] },
    { name: 'an image given to a text-only model', args: () => ['run', '--model', modelPath('tiny-llama'), '--tokens', '1,2,3', '--image', files.clean, '--json'], expect: [/text-only model/] },
    { name: 'missing image file (patch)', args: () => ['patch', '--model', LLAVA, '--clean-tokens', `1,${IMG},4`, '--corrupt-tokens', `1,${IMG},4`, '--answer-token', '3', '--wrong-token', '4', '--image', path.join(files.dir, 'nope.png'), '--component', 'resid_pre', '--method', 'atp', '--out', '__OUT__'], expect: [/nope\.png/, /no such image/] },
    { name: '--clean-image without --corrupt-image', args: () => ['patch', '--model', LLAVA, '--clean-tokens', `1,${IMG},4`, '--corrupt-tokens', `1,${IMG},4`, '--answer-token', '3', '--wrong-token', '4', '--clean-image', files.clean, '--component', 'resid_pre', '--method', 'atp', '--out', '__OUT__'], expect: [/--clean-image needs --corrupt-image/] },
    { name: 'vision component on a text-only model', args: () => ['patch', '--model', modelPath('tiny-llama'), '--clean-tokens', '1,2,3', '--corrupt-tokens', '1,2,4', '--answer-token', '3', '--wrong-token', '4', '--component', 'vision.resid_pre', '--method', 'atp', '--out', '__OUT__'], expect: [/vision\.resid_pre/, /needs a vision tower/] },
  ];
  for (const c of cases) {
    it(c.name, { timeout: TIMEOUT }, async () => {
      const dir = caseDir('bad');
      const out = path.join(dir, 'out');
      fs.mkdirSync(out);
      const args = c.args().map((a) => (a === '__OUT__' ? path.join(out, 'result') : a));
      oneLineFailure(await cli(args, { cwd: out }), ...c.expect);
      expect(listTree(out)).toEqual([]);
    });
  }

  for (const [type, label] of [['qwen2_vl', 'Qwen2-VL'], ['idefics3', 'Idefics3'], ['smolvlm', 'SmolVLM'], ['paligemma', 'PaliGemma']]) {
    it(`unsupported VLM type ${type} is named`, { timeout: TIMEOUT }, async () => {
      const dir = caseDir('unsupported');
      const m = path.join(dir, type);
      copyModelDir(LLAVA, m);
      const cfg = JSON.parse(fs.readFileSync(path.join(m, 'config.json'), 'utf8'));
      fs.writeFileSync(path.join(m, 'config.json'), JSON.stringify({ ...cfg, model_type: type }));
      oneLineFailure(await cli(['run', '--model', m, '--tokens', '1,2', '--json']), new RegExp(label), new RegExp(`model_type '${type}'`), /not supported/);
    });
  }
});

/**
 * Probing end to end: rows streamed from Arrow caches (position selection, label joins, modality),
 * the `probe` command's files and errors, and probe directions used causally on the shipped IOI
 * model (steering raises the probed name's logit; ablating the probe's directions removes the
 * behaviour, ablating as many random directions does not).
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import { ioiProbingPrompts, runIoiProbing } from '../src/circuits/ioi-probing.js';
import { namesKnownTo } from '../src/circuits/ioi-report.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { ArrowCacheWriter } from '../src/io/arrow-cache.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { loadModel } from '../src/models/load.js';
import { fitProbe } from '../src/probing/fit.js';
import { readLabels } from '../src/probing/labels.js';
import type { SavedProbe } from '../src/probing/probe-file.js';
import { probeRowsFromArrays, probeRowsFromCache } from '../src/probing/rows.js';
import { directionAblationHook, steeringHook } from '../src/probing/steer.js';
import { mulberry32 } from '../src/util/random.js';
import { IOI_MODEL_SPLIT } from '../datasets/ioi-corpus.js';
import { REPO_ROOT, cliSuite, listTree, stderrLines, type CliResult } from './helpers/cli-run.js';

const TIMEOUT = 120_000;
const IOI_MODEL = path.join(REPO_ROOT, 'datasets', 'ioi-gpt2');
const { caseDir, cli } = cliSuite('hooklens-probe-');

const D = 16;
const PROMPTS = 60;
const POSITIONS = 5;

/**
 * A synthetic cache: per prompt 5 positions; hooks blocks.{0,1,2}.hook_resid_post. The label of
 * prompt i (class i % 3) is planted along one direction at the *last* position only, with strength
 * growing with the layer; other positions are noise. Row (prompt, pos) token = 100 + pos.
 */
async function writeSyntheticCache(file: string, opts: { nan?: boolean; modality?: boolean } = {}): Promise<void> {
  const rng = mulberry32(3);
  const dirs = [0, 1, 2].map((k) => Float32Array.from({ length: D }, (_, j) => (j === k ? 1 : 0)));
  const hooks = [0, 1, 2].map((l) => `blocks.${l}.hook_resid_post`);
  const w = ArrowCacheWriter.open(file, { model: 'synthetic', columns: hooks.map((name) => ({ name, perPositionShape: [D] })), index: opts.modality ? { modality: true } : {} });
  for (let p = 0; p < PROMPTS; p++) {
    const cols: Record<string, Float32Array> = {};
    hooks.forEach((h, l) => {
      const x = Float32Array.from({ length: POSITIONS * D }, () => rng() - 0.5);
      for (let j = 0; j < D; j++) x[(POSITIONS - 1) * D + j] += (l + 1) * 2 * dirs[p % 3][j];
      if (opts.nan && l === 1 && p === 7) x[3] = Number.NaN;
      cols[h] = x;
    });
    w.writePrompt(p, Array.from({ length: POSITIONS }, (_, i) => 100 + i), cols, opts.modality ? { modality: [0, 1, 1, 0, 0] } : {});
  }
  await w.close();
}

function writeLabels(file: string, lines: object[]): string {
  fs.writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  return file;
}

const promptLabels = (n = PROMPTS) => Array.from({ length: n }, (_, i) => ({ prompt: i, label: ['a', 'b', 'c'][i % 3] }));

function info(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 1500)}\n--- stderr ---\n${r.stderr.slice(0, 2000)}`;
}

let dir = '';
let cacheFile = '';
beforeAll(async () => {
  await initBackend();
  dir = caseDir('data');
  cacheFile = path.join(dir, 'acts.arrow');
  await writeSyntheticCache(cacheFile);
});

describe('probe rows from an Arrow cache', () => {
  it('--position last / all / N / -1 select the right rows; labels join by prompt', () => {
    const labels = readLabels(writeLabels(path.join(dir, 'l1.jsonl'), promptLabels()));
    const last = probeRowsFromCache(cacheFile, 'blocks.0.hook_resid_post', { position: 'last', labels });
    expect(last.n).toBe(PROMPTS);
    expect(Array.from(new Set(last.pos))).toEqual([POSITIONS - 1]);
    expect(Array.from(new Set(last.token))).toEqual([100 + POSITIONS - 1]);
    expect(probeRowsFromCache(cacheFile, 'blocks.0.hook_resid_post', { position: -1, labels }).x).toEqual(last.x);
    const all = probeRowsFromCache(cacheFile, 'blocks.0.hook_resid_post', { position: 'all', labels });
    expect(all.n).toBe(PROMPTS * POSITIONS);
    const two = probeRowsFromCache(cacheFile, 'blocks.0.hook_resid_post', { position: 2, labels });
    expect(Array.from(new Set(two.pos))).toEqual([2]);
    // The planted signal is at the last position only: probing there works, at position 2 it does not.
    expect(fitProbe(last, { method: 'logistic' }).test!.accuracy!).toBeGreaterThan(0.9);
    expect(fitProbe(two, { method: 'logistic' }).test!.accuracy!).toBeLessThan(0.7);
  });

  it('labels with "pos" select exactly those rows; prompts without labels are left out', () => {
    const labels = readLabels(writeLabels(path.join(dir, 'l2.jsonl'), [{ prompt: 1, pos: 0, label: 1 }, { prompt: 4, pos: 4, label: 0 }, { prompt: 9, pos: 2, label: 1 }]));
    const rows = probeRowsFromCache(cacheFile, 'blocks.2.hook_resid_post', { position: 'all', labels });
    expect(Array.from(rows.prompt)).toEqual([1, 4, 9]);
    expect(Array.from(rows.pos)).toEqual([0, 4, 2]);
    expect(rows.labels).toEqual([1, 0, 1]);
  });

  it('--position image / text use the modality column of vision-language caches', async () => {
    const f = path.join(dir, 'vlm.arrow');
    await writeSyntheticCache(f, { modality: true });
    const labels = readLabels(writeLabels(path.join(dir, 'l3.jsonl'), promptLabels()));
    const img = probeRowsFromCache(f, 'blocks.0.hook_resid_post', { position: 'image', labels });
    expect(img.n).toBe(PROMPTS * 2);
    expect(Array.from(new Set(img.pos))).toEqual([1, 2]);
    const txt = probeRowsFromCache(f, 'blocks.0.hook_resid_post', { position: 'text', labels });
    expect(Array.from(new Set(txt.pos))).toEqual([0, 3, 4]);
    expect(() => probeRowsFromCache(cacheFile, 'blocks.0.hook_resid_post', { position: 'image', labels })).toThrow(/modality/);
  });
});

describe('hooklens probe', () => {
  it('one hook: probe.json with the documented keys, weights equal to probe.safetensors, held-out accuracy', { timeout: TIMEOUT }, async () => {
    const d = caseDir('one');
    const labels = writeLabels(path.join(d, 'labels.jsonl'), promptLabels());
    const out = path.join(d, 'probe.json');
    const r = await cli(['probe', '--cache', cacheFile, '--hook', 'blocks.2.hook_resid_post', '--labels', labels, '--control', '--out', out]);
    expect(r.code, info(r)).toBe(0);
    const j = JSON.parse(fs.readFileSync(out, 'utf8'));
    for (const k of ['hook', 'position', 'method', 'l2', 'classes', 'weights', 'bias', 'train', 'test', 'control', 'standardize', 'solver']) expect(j, k).toHaveProperty(k);
    expect(j.position).toBe('last');
    expect(j.classes).toEqual(['a', 'b', 'c']);
    expect(j.weights).toHaveLength(3);
    expect(j.weights[0]).toHaveLength(D);
    expect(j.solver.converged).toBe(true);
    expect(j.solver.grad_norm).toBeLessThanOrEqual(1e-6);
    expect(j.test.accuracy).toBeGreaterThan(0.9);
    expect(j.train.n + j.test.n).toBe(PROMPTS);
    const st = readSafetensors(path.join(d, 'probe.safetensors')).tensors;
    expect(st.get('weight')!.shape).toEqual([3, D]);
    const w = st.get('weight')!.data;
    j.weights.flat().forEach((v: number, i: number) => expect(Math.abs(v - w[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(v))));
    expect(listTree(d).sort()).toEqual(['labels.jsonl', 'probe.json', 'probe.safetensors']);
  });

  it('a hook pattern: one probe per hook, an SVG figure and a table', { timeout: TIMEOUT }, async () => {
    const d = caseDir('sweep');
    const labels = writeLabels(path.join(d, 'labels.jsonl'), promptLabels());
    const out = path.join(d, 'sweep.json');
    const r = await cli(['probe', '--cache', cacheFile, '--hook', 'blocks.*.hook_resid_post', '--labels', labels, '--method', 'logistic', '--control', '--out', out, '--json']);
    expect(r.code, info(r)).toBe(0);
    const j = JSON.parse(fs.readFileSync(out, 'utf8'));
    expect(j.probes.map((p: { hook: string }) => p.hook)).toEqual([0, 1, 2].map((l) => `blocks.${l}.hook_resid_post`));
    const svg = fs.readFileSync(path.join(d, 'sweep.svg'), 'utf8');
    expect(svg).toMatch(/^<svg/);
    expect(svg).toContain('shuffled labels (test)');
    expect(svg).toContain('majority class (test)');
    for (const p of j.probes) expect(p.test.accuracy).toBeGreaterThan(0.9);
    expect(fs.readFileSync(path.join(d, 'sweep.md'), 'utf8')).toContain('| blocks.2.hook_resid_post');
    const stdout = JSON.parse(r.stdout.trim());
    expect(stdout.probes).toHaveLength(3);
    const st = readSafetensors(path.join(d, 'sweep.safetensors')).tensors;
    expect([...st.keys()].sort()).toEqual([0, 1, 2].flatMap((l) => [`blocks.${l}.hook_resid_post.bias`, `blocks.${l}.hook_resid_post.weight`]));
    // Every prompt's last token is the same type: the control task is constant, selectivity undefined.
    expect(j.probes[0].control.word_types).toBe(1);
    expect(j.probes[0].control.selectivity).toBeNull();
  });

  it('ridge and mean-diff from the command line', { timeout: TIMEOUT }, async () => {
    const d = caseDir('methods');
    const ridgeLabels = writeLabels(path.join(d, 'r.jsonl'), Array.from({ length: PROMPTS }, (_, i) => ({ prompt: i, label: i % 3 })));
    const bin = writeLabels(path.join(d, 'b.jsonl'), Array.from({ length: PROMPTS }, (_, i) => ({ prompt: i, label: i % 3 === 0 ? 'yes' : 'no' })));
    const [r1, r2] = await Promise.all([
      cli(['probe', '--cache', cacheFile, '--hook', 'blocks.2.hook_resid_post', '--labels', ridgeLabels, '--method', 'ridge', '--out', path.join(d, 'ridge.json'), '--json']),
      cli(['probe', '--cache', cacheFile, '--hook', 'blocks.2.hook_resid_post', '--labels', bin, '--method', 'mean-diff', '--standardize', '--out', path.join(d, 'md.json'), '--json']),
    ]);
    expect(r1.code, info(r1)).toBe(0);
    expect(r2.code, info(r2)).toBe(0);
    const ridge = JSON.parse(r1.stdout);
    expect(ridge.classes).toBeNull();
    expect(ridge.test.r2).toBeGreaterThan(0.5);
    const md = JSON.parse(r2.stdout);
    expect(md.standardize).toBe(true);
    expect(md.classes).toEqual(['no', 'yes']);
    expect(md.test.accuracy).toBeGreaterThan(0.9);
  });

  const bad: { name: string; setup: (d: string) => string[]; expect: RegExp[] }[] = [
    { name: 'labels for a prompt the cache lacks', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), [...promptLabels(), { prompt: 99, label: 'a' }])], expect: [/prompt 99/, /acts\.arrow/] },
    { name: 'one class only', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), promptLabels().map((l) => ({ ...l, label: 'a' })))], expect: [/only one class/] },
    { name: 'a hook not in the cache', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), promptLabels()), '--hook', 'blocks.7.hook_resid_post'], expect: [/blocks\.7\.hook_resid_post/, /columns: blocks\.0/] },
    { name: 'a pattern matching nothing', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), promptLabels()), '--hook', 'blocks.*.attn.hook_z'], expect: [/no hook column matches/] },
    { name: 'a label line that is not JSON', setup: (d) => { const f = path.join(d, 'l.jsonl'); fs.writeFileSync(f, '{"prompt": 0, "label": "a"}\n{oops\n'); return ['--labels', f]; }, expect: [/l\.jsonl:2/, /not valid JSON/] },
    { name: '--position image on a text cache', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), promptLabels()), '--position', 'image'], expect: [/--position image/, /modality/] },
    { name: 'ridge on string labels', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), promptLabels()), '--method', 'ridge'], expect: [/ridge needs numeric labels/] },
    { name: 'a bad --l2', setup: (d) => ['--labels', writeLabels(path.join(d, 'l.jsonl'), promptLabels()), '--l2', 'lots'], expect: [/--l2 must be a number/] },
  ];
  for (const c of bad) {
    it(`bad input: ${c.name} — one line, exit ≠ 0, nothing written`, { timeout: TIMEOUT }, async () => {
      const d = caseDir('bad');
      const args = c.setup(d);
      const hookIdx = args.indexOf('--hook');
      const hook = hookIdx >= 0 ? [] : ['--hook', 'blocks.1.hook_resid_post'];
      const before = listTree(d);
      const r = await cli(['probe', '--cache', cacheFile, ...hook, ...args, '--out', path.join(d, 'p.json')]);
      expect(r.code, info(r)).not.toBe(0);
      const lines = stderrLines(r.stderr);
      expect(lines, info(r)).toHaveLength(1);
      expect(lines[0]).not.toMatch(/internal error/);
      for (const e of c.expect) expect(lines[0]).toMatch(e);
      expect(listTree(d)).toEqual(before);
    });
  }

  it('bad input: NaN in the activations is named with its prompt and position', { timeout: TIMEOUT }, async () => {
    const d = caseDir('nan');
    const f = path.join(d, 'nan.arrow');
    await writeSyntheticCache(f, { nan: true });
    const labels = writeLabels(path.join(d, 'l.jsonl'), promptLabels());
    const r = await cli(['probe', '--cache', f, '--hook', 'blocks.1.hook_resid_post', '--labels', labels, '--position', 'all', '--out', path.join(d, 'p.json')]);
    expect(r.code).not.toBe(0);
    const lines = stderrLines(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/blocks\.1\.hook_resid_post.*non-finite.*prompt 7 pos 0/);
    expect(listTree(d).sort()).toEqual(['l.jsonl', 'nan.arrow']);
  });
});

describe('probes used causally on the shipped IOI model', () => {
  let model: HookedModel;
  let probe: SavedProbe;
  let ids: number[][];
  let prompts: ReturnType<typeof ioiProbingPrompts>;
  const hook = 'blocks.1.hook_resid_post';
  beforeAll(async () => {
    model = await loadModel(IOI_MODEL);
    const names = namesKnownTo(model.tokenizer!, IOI_MODEL_SPLIT.test.names);
    prompts = ioiProbingPrompts(model, { ...IOI_MODEL_SPLIT.test, names }, { n: 240, seed: 5 });
    ids = prompts.map((p) => model.encode(p.clean));
    const T = ids[0].length;
    const d = model.cfg.dModel;
    const { logits, cache } = model.runWithCache(ids, { names: [hook] });
    const a = cache.get(hook).dataSync();
    const x = new Float32Array(ids.length * d);
    ids.forEach((_, b) => x.set(a.subarray((b * T + T - 1) * d, (b * T + T) * d), b * d));
    cache.dispose();
    logits.dispose();
    const fitted = fitProbe(probeRowsFromArrays(hook, x, d, ids.map((_, i) => i), prompts.map((p) => p.io)), { method: 'logistic' });
    expect(fitted.test!.accuracy!).toBeGreaterThan(0.9);
    probe = { hook, method: 'logistic', classes: fitted.classes, weights: fitted.weights };
  });
  afterAll(() => model?.dispose());

  const tokenOf = (name: string) => model.encode(` ${name}`).at(-1)!;
  /** The fitted probe as a probe.json file (what `hooklens probe` writes). */
  function writeProbe(file: string): string {
    const { weight, bias, outputs, d } = probe.weights;
    const weights = Array.from({ length: outputs }, (_, k) => Array.from(weight.subarray(k * d, (k + 1) * d)));
    fs.writeFileSync(file, JSON.stringify({ hook, method: 'logistic', classes: probe.classes, weights, bias: Array.from(bias) }));
    return file;
  }
  function finalLogits(hooks: ReturnType<typeof steeringHook>[], n = 40): number[][] {
    const T = ids[0].length;
    const lg = model.run(ids.slice(0, n), { fwdHooks: hooks });
    const out = tf.tidy(() => lg.slice([0, T - 1, 0], [-1, 1, -1]).reshape([n, -1]).arraySync() as number[][]);
    lg.dispose();
    return out;
  }

  it('steering towards a name raises that name’s logit, more with larger α; no tensors leak', () => {
    const base = finalLogits([]);
    const target = String(probe.classes![2]);
    const gain = (alpha: number) => {
      const st = finalLogits([steeringHook(probe, alpha, { cls: target, positions: -1 })]);
      return st.reduce((s, row, i) => s + row[tokenOf(target)] - base[i][tokenOf(target)], 0) / st.length;
    };
    const g2 = gain(2);
    const g8 = gain(8);
    expect(g2).toBeGreaterThan(0.5);
    expect(g8).toBeGreaterThan(2 * g2);
    const before = tf.memory().numTensors;
    gain(4);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('projecting out the probe’s directions removes the IO preference; as many random directions do not', () => {
    const ld = (rows: number[][]) => rows.reduce((s, r, i) => s + r[tokenOf(prompts[i].io)] - r[tokenOf(prompts[i].s)], 0) / rows.length;
    const base = ld(finalLogits([]));
    const ablated = ld(finalLogits([directionAblationHook(probe, { positions: -1 })]));
    const rng = mulberry32(9);
    const random: SavedProbe = { ...probe, weights: { ...probe.weights, weight: Float64Array.from(probe.weights.weight, () => rng() - 0.5) } };
    const randomAblated = ld(finalLogits([directionAblationHook(random, { positions: -1 })]));
    expect(base).toBeGreaterThan(3);
    expect(ablated).toBeLessThan(0.25 * base);
    expect(randomAblated).toBeGreaterThan(0.6 * base);
  });

  it('run --steer / --ablate-direction from the command line change the predictions', { timeout: TIMEOUT }, async () => {
    const d = caseDir('steer');
    const file = writeProbe(path.join(d, 'probe.json'));
    const target = String(probe.classes![2]);
    const tokens = ids[0].join(',');
    const [plain, steered, ablated] = await Promise.all([
      cli(['run', '--model', IOI_MODEL, '--tokens', tokens, '--top-k', '100000', '--json']),
      cli(['run', '--model', IOI_MODEL, '--tokens', tokens, '--top-k', '100000', '--json', '--steer', file, '--alpha', '8', '--steer-class', target, '--steer-position=-1']),
      cli(['run', '--model', IOI_MODEL, '--tokens', tokens, '--top-k', '5', '--json', '--ablate-direction', file]),
    ]);
    for (const r of [plain, steered, ablated]) expect(r.code, info(r)).toBe(0);
    const logitOf = (r: CliResult, id: number) => (JSON.parse(r.stdout).top as { token: number; logit: number }[]).find((t) => t.token === id)?.logit;
    const t = tokenOf(target);
    expect(logitOf(steered, t)!).toBeGreaterThan((logitOf(plain, t) ?? -Infinity) + 1);
    expect(JSON.parse(ablated.stdout).top[0].token).not.toBe(tokenOf(prompts[0].io));
    const gen = (extra: string[]) => cli(['generate', '--model', IOI_MODEL, '--tokens', tokens, '--max-new-tokens', '3', '--json', ...extra]);
    const [g0, g1] = await Promise.all([gen([]), gen(['--ablate-direction', file])]);
    expect(JSON.parse(g0.stdout).tokens.at(ids[0].length)).toBe(tokenOf(prompts[0].io));
    expect(JSON.parse(g1.stdout).tokens.at(ids[0].length)).not.toBe(tokenOf(prompts[0].io));
    const bad = await cli(['run', '--model', IOI_MODEL, '--tokens', tokens, '--steer', file, '--json']);
    expect(bad.code).not.toBe(0);
    expect(stderrLines(bad.stderr)).toEqual([expect.stringMatching(/--steer needs --alpha/)]);
  });

  it('patch --ablate-direction runs the whole session with the probe directions projected out', { timeout: TIMEOUT }, async () => {
    const d = caseDir('patch');
    const file = writeProbe(path.join(d, 'probe.json'));
    const pairs = path.join(d, 'pairs.jsonl');
    fs.writeFileSync(pairs, prompts.slice(0, 8).map((p) => JSON.stringify({ clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong })).join('\n') + '\n');
    const args = ['patch', '--model', IOI_MODEL, '--pairs', pairs, '--component', 'resid_pre', '--method', 'atp', '--json'];
    const [plain, ablated] = await Promise.all([cli([...args, '--out', path.join(d, 'a.json')]), cli([...args, '--ablate-direction', file, '--out', path.join(d, 'b.json')])]);
    expect(plain.code, info(plain)).toBe(0);
    expect(ablated.code, info(ablated)).toBe(0);
    const a = JSON.parse(plain.stdout);
    const b = JSON.parse(ablated.stdout);
    expect(a.ld_clean).toBeGreaterThan(3);
    expect(b.ld_clean).toBeLessThan(0.25 * a.ld_clean);
  });

  it('the IOI probing study: the IO token reads its own name from the embeddings on; END only after block 0', () => {
    const names = namesKnownTo(model.tokenizer!, IOI_MODEL_SPLIT.test.names);
    const r = runIoiProbing(model, ioiProbingPrompts(model, { ...IOI_MODEL_SPLIT.test, names }, { n: 160, seed: 2 }));
    const cell = (layer: number, role: string) => r.cells.find((c) => c.layer === layer && c.role === role)!;
    expect(r.cells).toHaveLength((model.cfg.nLayers + 1) * 4);
    expect(cell(0, 'IO').test).toBeGreaterThan(0.95);
    expect(Math.abs(cell(0, 'IO').selectivity!)).toBeLessThan(0.1);
    // The embedding at END is the same token in every prompt: nothing to read (chance is 1/8).
    expect(cell(0, 'END').test).toBeLessThan(0.3);
    expect(cell(0, 'END').selectivity).toBeNull();
    expect(cell(model.cfg.nLayers, 'END').test).toBeGreaterThan(0.85);
  });
});

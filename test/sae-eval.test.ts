/**
 * SAE evaluation: metrics against plain-JS recomputation on stories260K (an identity SAE, and a
 * random SAE whose forward pass, splice, CE and KL are redone by hand from cached activations and
 * logits), and the `hooklens sae eval` command line (9-key JSON, one-line errors).
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { saeCommand } from '../src/cli/sae.js';
import { HooklensError } from '../src/errors.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { loadModel } from '../src/models/load.js';
import { evaluateSae, loadSae, makeSaeConfig, Sae, SAE_EVAL_KEYS, saveSae, type SaeEvalResult } from '../src/sae/index.js';
import { cliSuite, stderrLines, type CliResult } from './helpers/cli-run.js';
import { storiesGguf } from './helpers/fixtures.js';

const HOOK = 'blocks.2.hook_resid_post';
const D = 64;

let model: HookedModel;
let prompts: number[][];
beforeAll(async () => {
  model = await loadModel(storiesGguf());
  prompts = [
    'Once upon a time, there was a little girl named Lily.',
    'The cat sat on the mat and looked at the sun.',
    'Tom had a big red ball.',
    'One day',
  ].map((s) => model.encode(s));
  // Same length as another prompt (batched together), and a one-token prompt (no CE position).
  prompts.push(prompts[2].map((t, i) => (i === 0 ? t : (t * 7 + i) % model.cfg.dVocab)), [prompts[0][1]]);
});
afterAll(() => model?.dispose());

/** An SAE with x̂ = x exactly: latents ReLU(x) and ReLU(−x), decoded with +I and −I. */
function identitySae(): Sae {
  const cfg = makeSaeConfig({ architecture: 'standard', dIn: D, dSae: 2 * D, hookName: HOOK });
  const wEnc = new Float32Array(D * 2 * D);
  const wDec = new Float32Array(2 * D * D);
  for (let i = 0; i < D; i++) {
    wEnc[i * 2 * D + i] = 1;
    wEnc[i * 2 * D + D + i] = -1;
    wDec[i * D + i] = 1;
    wDec[(D + i) * D + i] = -1;
  }
  return new Sae(cfg, {
    W_enc: { shape: [D, 2 * D], data: wEnc },
    b_enc: { shape: [2 * D], data: new Float32Array(2 * D) },
    W_dec: { shape: [2 * D, D], data: wDec },
    b_dec: { shape: [D], data: new Float32Array(D) },
  });
}

function randomSae(): Sae {
  const sae = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: D, dSae: 96, hookName: HOOK }), 21);
  sae.b_enc.assign(tf.fill([96], -0.3));
  sae.b_dec.assign(tf.linspace(-0.1, 0.1, D));
  return sae;
}

function logSoftmax(row: ArrayLike<number>): number[] {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) m = Math.max(m, row[i]);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
  const lse = m + Math.log(s);
  return Array.from(row, (v) => v - lse);
}

/** Every metric recomputed in plain JS (float64) from cached activations and logits, prompt by prompt. */
function referenceMetrics(sae: Sae): Record<(typeof SAE_EVAL_KEYS)[number], number> & { nTokens: number; nCe: number; density: number[] } {
  const t = sae.tensors();
  const dSae = sae.cfg.dSae;
  const V = model.cfg.dVocab;
  let n = 0, l0 = 0, sqErr = 0, cos = 0, nCe = 0, ceO = 0, ceS = 0, ceZ = 0, kl = 0;
  const sumX = new Float64Array(D);
  const sumX2 = new Float64Array(D);
  const fires = new Float64Array(dSae);
  for (const p of prompts) {
    const T = p.length;
    const { logits, cache } = model.runWithCache([p], { names: [HOOK] });
    const x = cache.get(HOOK).dataSync();
    const recons = new Float32Array(T * D);
    for (let r = 0; r < T; r++) {
      const acts = new Float64Array(dSae);
      for (let j = 0; j < dSae; j++) {
        let pre = t.b_enc.data[j];
        for (let i = 0; i < D; i++) pre += (x[r * D + i] - t.b_dec.data[i]) * t.W_enc.data[i * dSae + j];
        acts[j] = Math.max(0, pre);
        if (acts[j] !== 0) (l0++, fires[j]++);
      }
      let err = 0, dot = 0, nx = 0, nh = 0;
      for (let i = 0; i < D; i++) {
        let h = t.b_dec.data[i];
        for (let j = 0; j < dSae; j++) h += acts[j] * t.W_dec.data[j * D + i];
        recons[r * D + i] = h;
        const a = x[r * D + i];
        err += (a - h) ** 2;
        dot += a * h;
        nx += a * a;
        nh += h * h;
        sumX[i] += a;
        sumX2[i] += a * a;
      }
      sqErr += err;
      cos += dot / Math.sqrt(nx * nh);
    }
    n += T;
    const lSae = model.runWithHooks([p], [[HOOK, () => tf.tensor(recons, [1, T, D])]]);
    const lZero = model.runWithHooks([p], [[HOOK, (a) => tf.zerosLike(a)]]);
    const [lo, ls, lz] = [logits, lSae, lZero].map((l) => l.dataSync());
    for (let pos = 0; pos + 1 < T; pos++) {
      const [po, ps, pz] = [lo, ls, lz].map((l) => logSoftmax(l.subarray(pos * V, pos * V + V)));
      const next = p[pos + 1];
      ceO -= po[next];
      ceS -= ps[next];
      ceZ -= pz[next];
      for (let v = 0; v < V; v++) kl += Math.exp(po[v]) * (po[v] - ps[v]);
      nCe++;
    }
    tf.dispose([logits, lSae, lZero]);
    cache.dispose();
  }
  let totalVar = 0;
  for (let i = 0; i < D; i++) totalVar += sumX2[i] - (sumX[i] * sumX[i]) / n;
  const [o, s, z] = [ceO / nCe, ceS / nCe, ceZ / nCe];
  return {
    l0: l0 / n,
    explained_variance: 1 - sqErr / totalVar,
    mse: sqErr / (n * D),
    cosine: cos / n,
    ce_orig: o,
    ce_sae: s,
    ce_zero: z,
    ce_loss_score: (z - s) / (z - o),
    kl_div: kl / nCe,
    nTokens: n,
    nCe,
    density: Array.from(fires, (f) => f / n),
  };
}

describe('evaluateSae on stories260K', () => {
  it('an SAE with x̂ = x scores perfectly: ev 1, mse 0, cosine 1, ce_sae = ce_orig, score 1, kl 0', () => {
    const sae = identitySae();
    const r = evaluateSae(model, sae, prompts);
    const ref = referenceMetrics(sae);
    expect(r.explained_variance).toBe(1);
    expect(r.fvu).toBe(0);
    expect(r.mse).toBe(0);
    expect(r.cosine).toBeCloseTo(1, 12);
    expect(r.ce_sae).toBe(r.ce_orig);
    expect(r.ce_loss_score).toBe(1);
    expect(r.kl_div).toBe(0);
    expect(r.ce_zero).toBeGreaterThan(r.ce_orig + 0.5);
    // Every non-zero coordinate of x fires exactly one of its two latents.
    expect(r.l0).toBeCloseTo(ref.l0, 12);
    expect(r.ce_orig).toBeCloseTo(ref.ce_orig, 4);
    expect(r.ce_zero).toBeCloseTo(ref.ce_zero, 4);
    sae.dispose();
  });

  it('a random SAE: every metric matches a plain-JS recomputation; all real positions, padding never counted', () => {
    const sae = randomSae();
    const r = evaluateSae(model, sae, prompts);
    const ref = referenceMetrics(sae);
    expect(r.n_tokens).toBe(prompts.reduce((a, p) => a + p.length, 0));
    expect(r.n_ce_positions).toBe(prompts.reduce((a, p) => a + p.length - 1, 0));
    expect(ref.nTokens).toBe(r.n_tokens);
    expect(ref.nCe).toBe(r.n_ce_positions);
    // Sanity: the SAE is bad enough to move every metric away from its ideal.
    expect(r.explained_variance).toBeLessThan(0.9);
    expect(r.kl_div).toBeGreaterThan(0.01);
    const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1, Math.abs(b));
    // l0 counts signs of float32 vs float64 pre-activations: allow a near-zero one to flip.
    expect(Math.abs(r.l0 - ref.l0)).toBeLessThanOrEqual(2 / r.n_tokens);
    for (const k of SAE_EVAL_KEYS.filter((k) => k !== 'l0')) expect(rel(r[k], ref[k]), k).toBeLessThan(2e-4);
    // Extras are consistent with the per-latent densities.
    expect(r.feature_density).toHaveLength(96);
    for (let j = 0; j < 96; j++) expect(Math.abs(r.feature_density[j] - ref.density[j])).toBeLessThanOrEqual(2 / r.n_tokens);
    expect(r.dead_fraction).toBe(r.feature_density.filter((d) => d === 0).length / 96);
    expect(r.dense_fraction).toBe(r.feature_density.filter((d) => d > 0.1).length / 96);
    expect(r.fvu).toBeCloseTo(1 - r.explained_variance, 12);
    expect(r.log10_density_histogram.counts.reduce((a, b) => a + b, 0)).toBe(96);
    expect(r.log10_density_histogram.edges).toHaveLength(r.log10_density_histogram.counts.length + 1);
    // One prompt per forward (no padding at all) gives the same numbers as padded mixed-length batches.
    const small = evaluateSae(model, sae, prompts, { batchTokens: 1 });
    for (const k of SAE_EVAL_KEYS) expect(rel(small[k], r[k]), k).toBeLessThan(1e-6);
    sae.dispose();
  });

  it('does not leak tensors', () => {
    const sae = randomSae();
    evaluateSae(model, sae, prompts.slice(0, 2));
    const n = tf.memory().numTensors;
    evaluateSae(model, sae, prompts.slice(0, 2));
    expect(tf.memory().numTensors).toBe(n);
    sae.dispose();
  });

  it('rejects inputs without a next-token position, and empty prompts', () => {
    const sae = randomSae();
    expect(() => evaluateSae(model, sae, [[1], [5]])).toThrow(/single token/);
    expect(() => evaluateSae(model, sae, [[1, 2], []])).toThrow(/prompt 2 has no tokens/);
    sae.dispose();
  });
});

// ---------------------------------------------------------------------------------------------
// CLI

const { caseDir, cli } = cliSuite('hooklens-sae-eval-');

function info(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 2000)}\n--- stderr ---\n${r.stderr.slice(0, 2000)}`;
}

function expectOneLineFailure(r: CliResult, ...parts: (string | RegExp)[]): void {
  expect(r.code, info(r)).not.toBe(0);
  expect(r.code, info(r)).not.toBeNull();
  const lines = stderrLines(r.stderr);
  expect(lines, info(r)).toHaveLength(1);
  expect(lines[0]).not.toMatch(/internal error|^\s+at /);
  for (const p of parts) expect(lines[0]).toMatch(p);
  expect(r.stdout.trim()).toBe('');
}

function saveSaeTo(name: string, o: { dIn?: number; hookName?: string } = {}): string {
  const dir = path.join(caseDir(name), 'sae');
  const sae = Sae.init(makeSaeConfig({ architecture: 'topk', k: 12, dIn: o.dIn ?? D, dSae: 80, hookName: o.hookName ?? HOOK }), 5);
  saveSae(sae, dir);
  sae.dispose();
  return dir;
}

describe.concurrent('hooklens sae eval', () => {
  it('--json prints exactly the 9 metric keys, equal to evaluateSae', async () => {
    const dir = saveSaeTo('ok');
    const promptsFile = path.join(path.dirname(dir), 'prompts.jsonl');
    fs.writeFileSync(promptsFile, [JSON.stringify({ tokens: prompts[0] }), JSON.stringify({ tokens: prompts[2] }), JSON.stringify('Tom had a big red ball.')].join('\n') + '\n');
    const r = await cli(['sae', 'eval', '--model', storiesGguf(), '--sae', dir, '--prompts', promptsFile, '--json']);
    expect(r.code, info(r)).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]) as Record<string, number>;
    expect(Object.keys(out)).toEqual([...SAE_EVAL_KEYS]);
    for (const k of SAE_EVAL_KEYS) expect(Number.isFinite(out[k]), k).toBe(true);
    const { sae } = loadSae(dir);
    const lib: SaeEvalResult = evaluateSae(model, sae, [prompts[0], prompts[2], model.encode('Tom had a big red ball.')]);
    for (const k of SAE_EVAL_KEYS) expect(out[k], k).toBeCloseTo(lib[k], 6);
    sae.dispose();
  });

  it('d_in that does not match the hook size fails in one line', async () => {
    const dir = saveSaeTo('dim', { dIn: 32 });
    expectOneLineFailure(await cli(['sae', 'eval', '--model', storiesGguf(), '--sae', dir, '--text', 'Once upon a time', '--json']), /d_in 32/, /\[64\]/);
  });
});

// In-process (no spawn): the dispatcher and the table output.
describe('sae command module', () => {
  it('prints a readable table without --json', async () => {
    const dir = saveSaeTo('table');
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    try {
      await saeCommand.run(['eval', '--model', storiesGguf(), '--sae', dir, '--tokens', prompts[1].join(',')]);
    } finally {
      spy.mockRestore();
    }
    const text = lines.join('\n');
    expect(text).toMatch(/explained_variance\s+-?\d/);
    expect(text).toMatch(/ce_loss_score\s+-?\d/);
    expect(text).toMatch(/dead_fraction\s+\d/);
  });

  // main.ts prints a HooklensError as one stderr line and exits 1 (the d_in spawn above shows it end to end).
  it('a missing --sae directory, or an SAE hook the model lacks, is a one-line error', async () => {
    const missing = path.join(caseDir('missing'), 'nope');
    await expect(saeCommand.run(['eval', '--model', storiesGguf(), '--sae', missing, '--text', 'Once'])).rejects.toThrow(/^\S*nope: SAE directory does not exist$/);
    const dir = saveSaeTo('hook', { hookName: 'blocks.7.hook_resid_post' });
    const err = await saeCommand.run(['eval', '--model', storiesGguf(), '--sae', dir, '--text', 'Once']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HooklensError);
    expect((err as Error).message).toMatch(/^SAE hook_name: unknown hook 'blocks\.7\.hook_resid_post': the model has 5 layers/);
    expect((err as Error).message).not.toContain('\n');
  });

  it('rejects a missing --sae, a missing subcommand and unknown ones with one-line errors', async () => {
    await expect(saeCommand.run(['eval', '--model', storiesGguf(), '--text', 'Once'])).rejects.toThrow(/^sae eval: missing --sae$/);
    await expect(saeCommand.run([])).rejects.toThrow(/missing subcommand \(one of eval, train, features, dashboard\)/);
    await expect(saeCommand.run(['frobnicate'])).rejects.toThrow(/unknown subcommand 'frobnicate'/);
    expect(saeCommand.usage).toMatch(/eval[\s\S]*train[\s\S]*features[\s\S]*dashboard/);
  });
});

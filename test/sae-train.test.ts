/**
 * SAE training (src/sae/train.ts, `hooklens sae train`) on synthetic data with a known answer:
 * every row is a sparse positive combination of 3 of 64 random unit directions in 32 dimensions,
 * written to a temp Arrow cache so training goes through the streaming reader. A good SAE must
 * find those directions again. Also: closed-form gradients against tf autodiff, determinism,
 * exact resume, no tensor growth, atomic checkpoints, and the command line (including Ctrl-C).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import { ArrowCacheWriter } from '../src/io/arrow-cache.js';
import { loadSae, makeSaeConfig, Sae } from '../src/sae/index.js';
import {
  CHECKPOINT_OPTIMIZER_FILE,
  CHECKPOINT_STATE_FILE,
  geometricMedian,
  learningRateAt,
  SaeTrainer,
  trainingActivation,
  trainSae,
  type SaeTrainOptions,
} from '../src/sae/train.js';
import { mulberry32 } from '../src/util/random.js';
import { saeCommand } from '../src/cli/sae.js';
import { saeTrainCommand } from '../src/cli/sae-train.js';
import { BIN, cliEnv, REPO_ROOT, runCli, stderrLines, type CliResult } from './helpers/cli-run.js';

const D = 32;
const F = 64;
const ACTIVE = 3;
const HOOK = 'blocks.0.hook_resid_post';
const T = 64;

/** F random unit directions in D dimensions, rows of a [F, D] array. */
function makeDictionary(seed: number): Float32Array {
  const r = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const dict = new Float32Array(F * D);
  for (let f = 0; f < F; f++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += (dict[f * D + j] = gauss()) ** 2;
    for (let j = 0; j < D; j++) dict[f * D + j] /= Math.sqrt(s);
  }
  return dict;
}

/** n rows, each Σ c·dict[f] over ACTIVE distinct features f, c ~ U[0.5, 1.5]. */
function sampleRows(dict: Float32Array, n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(n * D);
  for (let t = 0; t < n; t++) {
    const chosen = new Set<number>();
    while (chosen.size < ACTIVE) chosen.add(Math.floor(r() * F));
    for (const f of chosen) {
      const c = 0.5 + r();
      for (let j = 0; j < D; j++) out[t * D + j] += c * dict[f * D + j];
    }
  }
  return out;
}

async function writeCache(file: string, dict: Float32Array, prompts: number, seed: number): Promise<void> {
  const w = ArrowCacheWriter.open(file, { model: 'synthetic-sparse', columns: [{ name: HOOK, perPositionShape: [D] }] }, { maxBatchRows: 1024 });
  for (let p = 0; p < prompts; p++) {
    w.writePrompt(p, Array.from({ length: T }, (_, i) => i), { [HOOK]: sampleRows(dict, T, seed * 100003 + p) });
  }
  await w.close();
}

/** For each true direction, the best cosine with any decoder row (rows are unit norm). */
function maxCosines(sae: Sae, dict: Float32Array): number[] {
  const wd = sae.W_dec.dataSync();
  const m = sae.cfg.dSae;
  const out: number[] = [];
  for (let f = 0; f < F; f++) {
    let best = -1;
    for (let i = 0; i < m; i++) {
      let dot = 0, nn = 0;
      for (let j = 0; j < D; j++) {
        dot += wd[i * D + j] * dict[f * D + j];
        nn += wd[i * D + j] ** 2;
      }
      best = Math.max(best, dot / Math.sqrt(nn));
    }
    out.push(best);
  }
  return out;
}

/** Explained variance and L0 of sae on held-out rows (inference path: encode/decode). */
function heldOut(sae: Sae, rows: Float32Array): { ev: number; l0: number } {
  return tf.tidy(() => {
    const x = tf.tensor2d(rows, [rows.length / D, D]);
    const { acts, recons } = sae.forward(x);
    const err = tf.sum(tf.square(tf.sub(x, recons))).dataSync()[0];
    const tot = tf.sum(tf.square(tf.sub(x, tf.mean(x, 0)))).dataSync()[0];
    const l0 = tf.mean(tf.sum(tf.cast(tf.greater(acts, 0), 'float32'), 1)).dataSync()[0];
    return { ev: 1 - err / tot, l0 };
  });
}

const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;

let tmp = '';
let cache = '';
let dict: Float32Array;
let testRows: Float32Array;
beforeAll(async () => {
  await initBackend();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-sae-train-'));
  dict = makeDictionary(7);
  cache = path.join(tmp, 'synthetic.arrow');
  await writeCache(cache, dict, 200, 1); // 12 800 rows
  testRows = sampleRows(dict, 2048, 999);
  cliRuns = startCliRuns();
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Fast settings for the synthetic data (one epoch = 12.5 steps of 1024 rows). */
function base(extra: Partial<SaeTrainOptions> & Pick<SaeTrainOptions, 'architecture'>): SaeTrainOptions {
  return {
    cache,
    hook: HOOK,
    dSae: 128,
    batchSize: 1024,
    lr: 1e-2,
    lrWarmupSteps: 20,
    normalizeActivations: 'expected_average_only_in',
    deadTokens: 20_000,
    seed: 1,
    ...extra,
  } as SaeTrainOptions;
}

function weights(sae: Sae): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(sae.tensors()).map(([k, v]) => [k, v.data]));
}

/** Make latents `ids` unable to fire (b_enc = −10⁴) until something revives them. */
function killLatents(tr: SaeTrainer, ids: number[]): SaeTrainer {
  const b = new Float32Array(tr.sae.b_enc.dataSync());
  for (const i of ids) b[i] = -1e4;
  tf.tidy(() => tr.sae.b_enc.assign(tf.tensor1d(b)));
  return tr;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('recovering a known sparse dictionary', () => {
  // Chance level: the best of 128 random unit vectors against a fixed one in 32 dimensions has
  // cosine ≈ 0.5. Perfect recovery is 1. TopK with the right k gets ≈ 0.998 here; L1 trades
  // some reconstruction for sparsity (shrinkage) and lands ≈ 0.985.
  it('TopK: every true direction has a decoder row with cosine ≥ 0.98; held-out EV ≥ 0.9 at L0 = k', async () => {
    const r = await trainSae(base({ architecture: 'topk', k: 3, steps: 300, batchSize: 512, deadTokens: 10_000, lrDecaySteps: 80, logEvery: 50 }));
    try {
      const cos = maxCosines(r.sae, dict);
      expect(mean(cos)).toBeGreaterThanOrEqual(0.98);
      expect(Math.min(...cos)).toBeGreaterThanOrEqual(0.95);
      const h = heldOut(r.sae, testRows);
      expect(h.ev).toBeGreaterThanOrEqual(0.9);
      expect(h.l0).toBeLessThanOrEqual(3);
      expect(r.last!.explainedVariance).toBeGreaterThan(0.9);
      expect(r.sae.cfg.scalingFactor).toBeGreaterThan(0);
      // 128 latents for 64 directions: about half end up dead, and AuxK saw them.
      expect(r.deadFraction).toBeGreaterThan(0.2);
      expect(r.tokensSeen).toBe(300 * 512);
    } finally {
      r.sae.dispose();
    }
  });

  it('standard (L1): mean max cosine ≥ 0.95, sparse, with resampling on', async () => {
    const r = await trainSae(base({ architecture: 'standard', l1Coefficient: 2, steps: 500, batchSize: 512, deadTokens: 10_000, resampleEvery: 100, logEvery: 100 }));
    try {
      const cos = maxCosines(r.sae, dict);
      expect(mean(cos)).toBeGreaterThanOrEqual(0.95);
      const h = heldOut(r.sae, testRows);
      expect(h.ev).toBeGreaterThanOrEqual(0.7);
      expect(h.l0).toBeLessThan(15);
    } finally {
      r.sae.dispose();
    }
  });

  it('batchtopk: recovers the directions; saved with a threshold that gives L0 ≈ k at inference', async () => {
    const out = path.join(tmp, 'btk-sae');
    const r = await trainSae(base({ architecture: 'batchtopk', k: 3, steps: 250, batchSize: 512, deadTokens: 10_000, lrDecaySteps: 60, out, logEvery: 50 }));
    r.sae.dispose();
    const { sae, sparsity } = loadSae(out);
    try {
      expect(sae.cfg.architecture).toBe('batchtopk');
      expect(sae.has('threshold')).toBe(true);
      expect(mean(maxCosines(sae, dict))).toBeGreaterThanOrEqual(0.97);
      const h = heldOut(sae, testRows);
      expect(h.ev).toBeGreaterThanOrEqual(0.85);
      expect(h.l0).toBeGreaterThan(2);
      expect(h.l0).toBeLessThan(4.5);
      expect(sparsity).toHaveLength(128);
    } finally {
      sae.dispose();
    }
  });
});

describe('training mechanics', () => {
  it('the closed-form gradients equal tf autodiff (L1 penalty, top-k, AuxK, decoder projection)', () => {
    const rows = testRows.slice(0, 64 * D);
    for (const arch of ['standard', 'topk', 'batchtopk'] as const) {
      const tr = SaeTrainer.create(base({ architecture: arch, k: arch === 'standard' ? undefined : 3, l1Coefficient: arch === 'standard' ? 0.7 : undefined, steps: 10 }));
      try {
        // Move off the symmetric init so every term is non-trivial.
        for (let i = 0; i < 3; i++) tr.trainStep(testRows.slice(i * 128 * D, (i + 1) * 128 * D));
        const dead = new Uint8Array(128);
        for (let i = 0; i < 128; i += 3) dead[i] = 1;
        const mine = tr.gradients(rows, { dead });
        const ref = autodiffGradients(tr.sae, rows, arch, arch === 'standard' ? 0.7 : 0, dead, 1 / 32, D / 2);
        expect(Math.abs(mine.loss - ref.loss) / ref.loss).toBeLessThan(1e-4);
        for (const p of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) {
          const a = mine.grads[p], b = ref.grads[p];
          let scale = 0;
          for (const v of b) scale = Math.max(scale, Math.abs(v));
          expect(maxAbsDiff(a, b) / scale, `${arch} ${p}`).toBeLessThan(1e-3);
        }
      } finally {
        tr.dispose();
      }
    }
  });

  it('the training activation matches Sae.encode (topk rows, batchtopk batch)', () => {
    for (const arch of ['topk', 'batchtopk'] as const) {
      const cfg = makeSaeConfig({ architecture: arch, dIn: D, dSae: 96, k: 4, hookName: HOOK });
      const sae = Sae.init(cfg, 5);
      tf.tidy(() => {
        const x = tf.tensor2d(testRows.slice(0, 200 * D), [200, D]);
        const a = trainingActivation(arch, sae.encodePre(x), 4).dataSync();
        const b = sae.encode(x, { batchTopK: arch === 'batchtopk' }).dataSync();
        expect(maxAbsDiff(a as Float32Array, b as Float32Array)).toBe(0);
      });
      sae.dispose();
    }
  });

  it('geometric median and learning-rate schedule', () => {
    // Median of points on a line with one far outlier stays with the bulk; the mean does not.
    const pts = new Float32Array([0, 0, 1, 0, 2, 0, 100, 0]);
    const gm = geometricMedian(pts, 2);
    expect(gm[0]).toBeGreaterThan(1);
    expect(gm[0]).toBeLessThan(2.1);
    const s = { lr: 1, lrWarmupSteps: 4, lrDecaySteps: 10, lrEnd: 0.1 };
    expect(learningRateAt(s, 0, 100)).toBeCloseTo(0.25);
    expect(learningRateAt(s, 3, 100)).toBeCloseTo(1);
    expect(learningRateAt(s, 50, 100)).toBe(1);
    expect(learningRateAt(s, 99, 100)).toBeCloseTo(0.1);
  });

  it('is deterministic: same seed → identical weights; another seed → different', async () => {
    const run = async (seed: number) => {
      const r = await trainSae(base({ architecture: 'topk', k: 3, steps: 25, seed }));
      const w = weights(r.sae);
      r.sae.dispose();
      return w;
    };
    const a = await run(11), b = await run(11), c = await run(12);
    for (const k of Object.keys(a)) expect(maxAbsDiff(a[k], b[k]), k).toBe(0);
    expect(maxAbsDiff(a.W_dec, c.W_dec)).toBeGreaterThan(1e-3);
  });

  it('resume: N steps, interrupt, resume to 2N gives the weights of 2N straight steps (standard with resampling; topk with AuxK)', async () => {
    for (const arch of ['standard', 'topk'] as const) {
      const opts = base({
        architecture: arch,
        k: arch === 'topk' ? 3 : undefined,
        l1Coefficient: arch === 'standard' ? 2 : undefined,
        resampleEvery: arch === 'standard' ? 4 : undefined,
        deadTokens: 1500,
        steps: 24,
        lrDecaySteps: 8,
        batchSize: 512,
        dSae: 160,
      });
      // A few latents that never fire, so dead-latent handling (resampling / AuxK) is exercised.
      const fresh = () => killLatents(SaeTrainer.create(opts), [0, 5, 9, 40, 77]);
      const straight = fresh();
      await straight.run();
      const want = weights(straight.sae);
      straight.dispose();

      const ckpt = path.join(tmp, `resume-${arch}`);
      const ac = new AbortController();
      const first = fresh();
      const r1 = await first.run({ checkpointDir: ckpt, checkpointEvery: 5, logEvery: 1, signal: ac.signal, onProgress: (p) => p.step === 13 && ac.abort() });
      first.dispose();
      expect(r1.interrupted).toBe(true);
      const stored = JSON.parse(fs.readFileSync(path.join(ckpt, CHECKPOINT_STATE_FILE), 'utf8'));
      expect(stored.step).toBe(13);
      if (arch === 'standard') expect(stored.resamples).toBeGreaterThan(0);
      else expect(stored.tokensSinceFired.filter((t: number) => t >= 1500).length).toBeGreaterThan(0);

      const out = path.join(tmp, `resumed-${arch}-sae`);
      const second = await trainSae({ cache, hook: HOOK, checkpointDir: ckpt, resume: true, out });
      expect(second.step).toBe(24);
      const got = weights(second.sae);
      second.sae.dispose();
      for (const k of Object.keys(want)) expect(maxAbsDiff(got[k], want[k]), `${arch} ${k}`).toBeLessThanOrEqual(1e-6);
      expect(fs.existsSync(path.join(out, 'cfg.json'))).toBe(true);
    }
  });

  it('a resume with different settings is refused', async () => {
    const ckpt = path.join(tmp, 'mismatch');
    const r = await trainSae(base({ architecture: 'topk', k: 3, steps: 3, checkpointDir: ckpt }));
    r.sae.dispose();
    await expect(trainSae({ cache, hook: HOOK, checkpointDir: ckpt, resume: true, k: 4 })).rejects.toThrow(/trained with k = 3, got 4/);
    await expect(trainSae({ cache, hook: HOOK, checkpointDir: path.join(tmp, 'nothing-here'), resume: true })).rejects.toThrow(/no checkpoint/);
  });

  it('does not grow the tensor count per step (with AuxK active and with resampling)', () => {
    for (const arch of ['topk', 'standard'] as const) {
      const tr = killLatents(SaeTrainer.create(base({ architecture: arch, k: arch === 'topk' ? 3 : undefined, steps: 100, deadTokens: 256, resampleEvery: arch === 'standard' ? 2 : undefined, batchSize: 256 })), [1, 2, 3]);
      try {
        const { stream, batches } = tr.openStream();
        try {
          for (let i = 0; i < 3; i++) tr.trainStep(batches.next().value!.acts);
          const before = tf.memory().numTensors;
          for (let i = 0; i < 8; i++) tr.trainStep(batches.next().value!.acts);
          expect(tf.memory().numTensors).toBe(before);
          if (arch === 'topk') expect(tr.deadFraction()).toBeGreaterThan(0);
          else expect(tr.state.resamples).toBeGreaterThan(0);
        } finally {
          stream.close();
        }
      } finally {
        tr.dispose();
      }
    }
  });

  it('checkpoints are complete, loadable SAE directories, swapped in atomically', async () => {
    const ckpt = path.join(tmp, 'ckpt-files');
    const r = await trainSae(base({ architecture: 'topk', k: 3, steps: 6, checkpointDir: ckpt, checkpointEvery: 2 }));
    r.sae.dispose();
    expect(fs.readdirSync(ckpt).sort()).toEqual(['cfg.json', CHECKPOINT_OPTIMIZER_FILE, 'sae_weights.safetensors', 'sparsity.safetensors', CHECKPOINT_STATE_FILE].sort());
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('.'))).toEqual([]);
    const { sae } = loadSae(ckpt);
    expect(sae.cfg.k).toBe(3);
    sae.dispose();
  });

  it('rejects bad settings with one-line errors', () => {
    expect(() => SaeTrainer.create(base({ architecture: 'topk', steps: 5 }))).toThrow(/needs k/);
    expect(() => SaeTrainer.create(base({ architecture: 'topk', k: 3, l1Coefficient: 1, steps: 5 }))).toThrow(/l1Coefficient applies to standard/);
    expect(() => SaeTrainer.create(base({ architecture: 'topk', k: 3 }))).toThrow(/steps or tokens/);
    expect(() => SaeTrainer.create(base({ architecture: 'topk', k: 3, steps: 5, hook: 'blocks.9.hook_resid_post' }))).toThrow(/no column "blocks.9.hook_resid_post"/);
    expect(() => SaeTrainer.create(base({ architecture: 'topk', k: 3, steps: 5, cache: path.join(tmp, 'missing.arrow') }))).toThrow(/missing.arrow/);
  });
});

/** Reference loss and gradients by tf autodiff, masks held constant (computed from current weights). */
function autodiffGradients(
  sae: Sae,
  rows: Float32Array,
  arch: 'standard' | 'topk' | 'batchtopk',
  l1: number,
  dead: Uint8Array,
  auxCoef: number,
  kAuxBase: number,
): { loss: number; grads: Record<string, Float32Array> } {
  return tf.tidy(() => {
    const n = rows.length / D;
    const x = tf.tensor2d(rows, [n, D]);
    const xn = sae.normalizeIn(x);
    const pre0 = sae.preActivation(xn);
    const k = sae.cfg.k ?? 0;
    // Constant masks from the current weights.
    const mask = arch === 'standard' ? tf.onesLike(pre0) : tf.cast(tf.greater(trainingActivation(arch, pre0, k), 0), 'float32');
    const acts0 = tf.mul(tf.relu(pre0), mask);
    const resid = tf.sub(xn, tf.add(tf.matMul(acts0, sae.W_dec), sae.b_dec));
    let nDead = 0;
    for (const v of dead) nDead += v;
    const useAux = arch !== 'standard' && nDead > 0;
    const kAux = Math.min(kAuxBase, nDead);
    const scale = Math.min(1, nDead / kAuxBase);
    // Top-k_aux dead pre-activations per row, by plain JS.
    const preHost = pre0.arraySync() as number[][];
    const auxMaskArr = preHost.map((row) => {
      const idx = row.map((v, i) => [v, i] as const).filter(([, i]) => dead[i]).sort((a, b) => b[0] - a[0]).slice(0, kAux);
      const m = new Array(row.length).fill(0);
      for (const [v, i] of idx) if (v > 0) m[i] = 1;
      return m;
    });
    const auxMask = tf.tensor2d(auxMaskArr);
    const vars = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec];
    const f = (W_enc: tf.Tensor, b_enc: tf.Tensor, W_dec: tf.Tensor, b_dec: tf.Tensor) => {
      const pre = tf.add(tf.matMul(tf.sub(xn, b_dec), W_enc), b_enc);
      const acts = tf.mul(tf.relu(pre), mask);
      const recon = tf.add(tf.matMul(acts, W_dec), b_dec);
      let loss = tf.div(tf.sum(tf.square(tf.sub(recon, xn))), n);
      if (l1 > 0) loss = tf.add(loss, tf.mul(tf.div(tf.sum(tf.mul(acts, tf.norm(W_dec, 'euclidean', 1))), n), l1));
      if (useAux) {
        const auxActs = tf.mul(tf.relu(pre), auxMask);
        const eHat = tf.matMul(auxActs, W_dec);
        loss = tf.add(loss, tf.mul(tf.div(tf.sum(tf.square(tf.sub(eHat, resid))), n), auxCoef * scale));
      }
      return loss as tf.Scalar;
    };
    const g = tf.grads(f as unknown as (...a: tf.Tensor[]) => tf.Tensor);
    const grads = g(vars);
    const loss = f(vars[0], vars[1], vars[2], vars[3]).dataSync()[0];
    // The trainer drops the gradient component along each unit decoder row.
    const w = sae.W_dec;
    const gW = tf.sub(grads[2], tf.mul(tf.sum(tf.mul(grads[2], w), 1, true), w));
    return {
      loss,
      grads: {
        W_enc: grads[0].dataSync() as Float32Array,
        b_enc: grads[1].dataSync() as Float32Array,
        W_dec: gW.dataSync() as Float32Array,
        b_dec: grads[3].dataSync() as Float32Array,
      },
    };
  });
}

/**
 * The command-line runs are spawned as soon as the cache exists (beforeAll) and only checked
 * here, so the child processes overlap the in-process training tests above.
 */
interface CliRuns {
  dir: string;
  ok: Promise<CliResult>;
  sigint: Promise<{ code: number | null; stderr: string; resumed: CliResult | null; stored: { step: number } | null }>;
  bad: Promise<CliResult[]>;
}
let cliRuns: CliRuns;

function startCliRuns(): CliRuns {
  const dir = path.join(tmp, 'cli');
  fs.mkdirSync(path.join(dir, 'hub'), { recursive: true });
  const env = cliEnv(path.join(dir, 'hub'));
  const cli = (args: string[]) => runCli(['sae', 'train', ...args], { env, timeoutMs: 170_000 });
  const ok = cli(['--cache', cache, '--hook', HOOK, '--out', path.join(dir, 'ok'), '--architecture', 'topk', '--d-sae', '96', '--k', '3',
    '--steps', '40', '--batch', '512', '--lr', '0.01', '--normalize', 'expected_average_only_in', '--log', path.join(dir, 'ok.jsonl'), '--log-every', '10', '--json']);
  const common = ['--hook', HOOK, '--out', path.join(dir, 'bad'), '--architecture', 'topk', '--d-sae', '64', '--k', '3', '--steps', '5'];
  const bad = Promise.all([
    cli(['--cache', path.join(dir, 'nope.arrow'), ...common]),
    cli(['--cache', cache, ...common.map((a) => (a === HOOK ? 'blocks.7.hook_mlp_out' : a))]),
    cli(['--cache', cache, ...common.map((a) => (a === '64' ? 'lots' : a))]),
  ]);
  const sigint = (async () => {
    const out = path.join(dir, 'sigint');
    const log = path.join(dir, 'sigint.jsonl');
    const args = ['sae', 'train', '--cache', cache, '--hook', HOOK, '--out', out, '--architecture', 'topk', '--d-sae', '64', '--k', '3',
      '--steps', '100000', '--batch', '256', '--log', log, '--log-every', '1'];
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    // A few steps in, interrupt.
    const t0 = Date.now();
    while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').length > 3) && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGINT');
    const code = await done;
    const stateFile = path.join(out, 'checkpoint', CHECKPOINT_STATE_FILE);
    if (!fs.existsSync(stateFile)) return { code, stderr, resumed: null, stored: null };
    const stored = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    const resumed = await cli(['--cache', cache, '--hook', HOOK, '--out', out, '--resume', '--steps', String(stored.step + 5), '--json']);
    return { code, stderr, resumed, stored };
  })();
  // Failures surface in the tests that await these.
  for (const p of [ok, bad, sigint]) (p as Promise<unknown>).catch(() => {});
  return { dir, ok, bad, sigint };
}

describe('hooklens sae train (command line)', () => {
  function info(r: CliResult): string {
    return `exit ${r.code} signal ${r.signal}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
  }

  function expectOneLineFailure(r: CliResult, pattern: RegExp): void {
    expect(r.code, info(r)).not.toBe(0);
    expect(r.stdout, info(r)).toBe('');
    const lines = stderrLines(r.stderr);
    expect(lines, info(r)).toHaveLength(1);
    expect(lines[0], info(r)).toMatch(pattern);
  }

  it('--help documents the command (what `hooklens sae train --help` prints)', () => {
    expect(saeCommand.usage).toMatch(/train +train an SAE/);
    expect(saeTrainCommand.usage).toContain('hooklens sae train --cache');
    for (const flag of ['--architecture', '--d-sae', '--k', '--l1', '--resume', '--checkpoint-every', '--normalize', '--log']) expect(saeTrainCommand.usage).toContain(flag);
  });

  it('trains, prints a JSON summary, writes a loadable SAE and a JSONL log', async () => {
    const r = await cliRuns.ok;
    const out = path.join(cliRuns.dir, 'ok');
    expect(r.code, info(r)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]);
    expect(j.steps).toBe(40);
    expect(j.tokens).toBe(40 * 512);
    expect(j.l0).toBeCloseTo(3, 5);
    expect(j.explained_variance).toBeGreaterThan(0.3);
    expect(fs.readdirSync(out).sort()).toEqual(['cfg.json', 'checkpoint', 'sae_weights.safetensors', 'sparsity.safetensors']);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'cfg.json'), 'utf8'));
    expect(cfg).toMatchObject({ architecture: 'topk', d_in: D, d_sae: 96, k: 3, hook_name: HOOK, normalize_activations: 'expected_average_only_in', model_name: 'synthetic-sparse' });
    expect(cfg.norm_scaling_factor).toBeGreaterThan(0);
    const logLines = fs.readFileSync(path.join(cliRuns.dir, 'ok.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(logLines.map((l) => l.step)).toEqual([10, 20, 30, 40]);
    expect(Object.keys(logLines[0])).toEqual(expect.arrayContaining(['l0', 'mse', 'explainedVariance', 'deadFraction', 'tokensPerSecond']));
    const { sae } = loadSae(out);
    expect(sae.cfg.scalingFactor).toBe(cfg.norm_scaling_factor);
    sae.dispose();
  });

  it('Ctrl-C (SIGINT) writes a checkpoint and stops; --resume finishes the run', async () => {
    const { code, stderr, resumed, stored } = await cliRuns.sigint;
    expect(code, stderr).not.toBe(0);
    const lines = stderrLines(stderr);
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/interrupted at step \d+ of 100000; checkpoint saved in .*checkpoint \(continue with --resume\)/);
    expect(stored!.step).toBeGreaterThanOrEqual(3);
    expect(resumed!.code, info(resumed!)).toBe(0);
    expect(JSON.parse(resumed!.stdout).steps).toBe(stored!.step + 5);
    expect(fs.existsSync(path.join(cliRuns.dir, 'sigint', 'cfg.json'))).toBe(true);
  });

  it('bad input: one-line errors, nothing written', async () => {
    const results = await cliRuns.bad;
    expectOneLineFailure(results[0], /nope\.arrow does not exist/);
    expectOneLineFailure(results[1], /no column "blocks\.7\.hook_mlp_out" \(available hooks: blocks\.0\.hook_resid_post\)/);
    expectOneLineFailure(results[2], /--d-sae: expected a positive integer, got 'lots'/);
    expect(fs.existsSync(path.join(cliRuns.dir, 'bad'))).toBe(false);
  });
});

/**
 * Probes: solutions against independent float64 solvers of the same objectives, planted
 * directions, chance on shuffled labels, selectivity, grouped splits, standardisation, memory.
 */
import * as tf from '@tensorflow/tfjs';
import { CholeskyDecomposition, Matrix, solve } from 'ml-matrix';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import { fitProbe } from '../src/probing/fit.js';
import { probeRowsFromArrays } from '../src/probing/rows.js';
import { fitLogistic, fitMeanDiff, fitRidge } from '../src/probing/solvers.js';
import { splitByPrompt } from '../src/probing/split.js';
import { mulberry32 } from '../src/util/random.js';

beforeAll(async () => {
  await initBackend();
});

function gaussian(rng: () => number): () => number {
  return () => {
    const u = Math.max(rng(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
  };
}

/** n rows of d features, N(offset, scale_j²) each. */
function features(n: number, d: number, seed: number, offset = 0, scales?: number[]): Float32Array {
  const g = gaussian(mulberry32(seed));
  const x = new Float32Array(n * d);
  for (let i = 0; i < n * d; i++) x[i] = offset + g() * (scales ? scales[i % d] : 1);
  return x;
}

function unit(d: number, seed: number): Float64Array {
  const g = gaussian(mulberry32(seed));
  const v = Float64Array.from({ length: d }, g);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/**
 * Independent reference: Newton's method in float64 on
 * mean CE + (l2/2)·‖W‖² over θ = per class [w_k (d), b_k], K classes (K = 1: sigmoid).
 */
function newtonLogistic(x: Float32Array, n: number, d: number, y: Int32Array, classes: number, l2: number): { W: Float64Array; b: Float64Array } {
  const K = classes === 2 ? 1 : classes;
  const D = d + 1;
  const theta = new Float64Array(K * D);
  for (let it = 0; it < 50; it++) {
    const g = new Float64Array(K * D);
    const H = new Matrix(K * D, K * D);
    for (let i = 0; i < n; i++) {
      const xi = [...x.subarray(i * d, (i + 1) * d), 1];
      const z = Array.from({ length: K }, (_, k) => xi.reduce((s, v, j) => s + v * theta[k * D + j], 0));
      let p: number[];
      if (K === 1) p = [1 / (1 + Math.exp(-z[0]))];
      else {
        const m = Math.max(...z);
        const e = z.map((v) => Math.exp(v - m));
        const s = e.reduce((a, c) => a + c, 0);
        p = e.map((v) => v / s);
      }
      for (let k = 0; k < K; k++) {
        const r = p[k] - (K === 1 ? y[i] : y[i] === k ? 1 : 0);
        for (let j = 0; j < D; j++) g[k * D + j] += (r * xi[j]) / n;
        for (let l = 0; l < K; l++) {
          const c = K === 1 ? p[0] * (1 - p[0]) : (k === l ? p[k] : 0) - p[k] * p[l];
          for (let a = 0; a < D; a++) for (let b = 0; b < D; b++) H.set(k * D + a, l * D + b, H.get(k * D + a, l * D + b) + (c * xi[a] * xi[b]) / n);
        }
      }
    }
    for (let k = 0; k < K; k++) {
      for (let j = 0; j < d; j++) {
        g[k * D + j] += l2 * theta[k * D + j];
        H.set(k * D + j, k * D + j, H.get(k * D + j, k * D + j) + l2);
      }
      // The softmax's shared bias shift is flat: a whisker of damping picks the zero-sum solution.
      H.set(k * D + d, k * D + d, H.get(k * D + d, k * D + d) + 1e-12);
    }
    const step = solve(H, Matrix.columnVector(Array.from(g))).getColumn(0);
    for (let q = 0; q < theta.length; q++) theta[q] -= step[q];
    if (Math.hypot(...step) < 1e-13) break;
  }
  const W = new Float64Array(K * d);
  const b = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    for (let j = 0; j < d; j++) W[k * d + j] = theta[k * D + j];
    b[k] = theta[k * D + d];
  }
  return { W, b };
}

/** Zero-mean biases (the softmax's invariant); a single sigmoid bias unchanged. */
const centred = (b: ArrayLike<number>) => {
  if (b.length === 1) return Array.from(b);
  const m = Array.from(b).reduce((s, v) => s + v, 0) / b.length;
  return Array.from(b, (v) => v - m);
};

function plantedClasses(x: Float32Array, n: number, d: number, dirs: Float64Array[], noise: number, seed: number): Int32Array {
  const g = gaussian(mulberry32(seed));
  return Int32Array.from({ length: n }, (_, i) => {
    const xi = x.subarray(i * d, (i + 1) * d);
    const scores = dirs.map((w) => w.reduce((s, v, j) => s + v * xi[j], 0) + noise * g());
    if (dirs.length === 1) return scores[0] > 0 ? 1 : 0;
    return scores.indexOf(Math.max(...scores));
  });
}

describe('probe solvers match independent float64 solvers of the same objective', () => {
  it('binary logistic (off-centre features): L-BFGS to ‖∇‖ ≤ 1e-6 equals Newton to 1e-4 relative', () => {
    const n = 600;
    const d = 10;
    const x = features(n, d, 1, 3);
    const w = unit(d, 2);
    const xc = x.map((v) => v - 3);
    const y = plantedClasses(xc, n, d, [w], 0.5, 3);
    const l2 = 0.01;
    const fit = fitLogistic({ x, n, d }, y, 2, { l2, standardize: false });
    const ref = newtonLogistic(x, n, d, y, 2, l2);
    expect(fit.report.converged).toBe(true);
    expect(fit.report.gradNorm!).toBeLessThanOrEqual(1e-6);
    expect(relDiff(fit.probe.weight, ref.W)).toBeLessThan(1e-4);
    expect(Math.abs(fit.probe.bias[0] - ref.b[0]) / Math.max(1, Math.abs(ref.b[0]))).toBeLessThan(1e-4);
  });

  it('multinomial logistic, 4 classes: W and zero-mean biases equal Newton to 1e-4 relative', () => {
    const n = 800;
    const d = 8;
    const x = features(n, d, 4, -1);
    const dirs = [0, 1, 2, 3].map((k) => unit(d, 10 + k));
    const y = plantedClasses(x.map((v) => v + 1), n, d, dirs, 0.3, 5);
    const l2 = 0.02;
    const fit = fitLogistic({ x, n, d }, y, 4, { l2, standardize: false });
    const ref = newtonLogistic(x, n, d, y, 4, l2);
    expect(fit.report.converged).toBe(true);
    expect(fit.probe.outputs).toBe(4);
    expect(relDiff(fit.probe.weight, ref.W)).toBeLessThan(1e-4);
    expect(relDiff(centred(fit.probe.bias), centred(ref.b))).toBeLessThan(1e-4);
  });

  it('ridge: equals the float64 normal equations with an unpenalised bias column to 1e-4 relative', () => {
    const n = 500;
    const d = 12;
    const x = features(n, d, 6, 2, Array.from({ length: d }, (_, j) => 0.5 + j / 4));
    const w = unit(d, 7);
    const g = gaussian(mulberry32(8));
    const t = Float64Array.from({ length: n }, (_, i) => 1.5 + w.reduce((s, v, j) => s + v * x[i * d + j], 0) + 0.1 * g());
    const l2 = 0.05;
    const fit = fitRidge({ x, n, d }, t, { l2, standardize: false });
    // Minimise (1/2n)‖t − Xw − b‖² + (l2/2)‖w‖²: [XᵀX/n + l2·I'] θ = Xᵀt/n with I' zero on the bias.
    const D = d + 1;
    const A = new Matrix(D, D);
    const rhs = new Array(D).fill(0);
    for (let i = 0; i < n; i++) {
      const xi = [...x.subarray(i * d, (i + 1) * d), 1];
      for (let a = 0; a < D; a++) {
        rhs[a] += (xi[a] * t[i]) / n;
        for (let b = 0; b < D; b++) A.set(a, b, A.get(a, b) + (xi[a] * xi[b]) / n);
      }
    }
    for (let j = 0; j < d; j++) A.set(j, j, A.get(j, j) + l2);
    const theta = new CholeskyDecomposition(A).solve(Matrix.columnVector(rhs)).getColumn(0);
    expect(relDiff(fit.probe.weight, theta.slice(0, d))).toBeLessThan(1e-4);
    expect(Math.abs(fit.probe.bias[0] - theta[d]) / Math.abs(theta[d])).toBeLessThan(1e-4);
  });

  it('mean-diff is the difference of class means with the threshold halfway', () => {
    const n = 300;
    const d = 5;
    const x = features(n, d, 9, 1);
    const y = Int32Array.from({ length: n }, (_, i) => i % 2);
    const fit = fitMeanDiff({ x, n, d }, y, { standardize: false });
    const mu = [new Float64Array(d), new Float64Array(d)];
    for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mu[y[i]][j] += x[i * d + j] / (n / 2);
    const w = mu[1].map((v, j) => v - mu[0][j]);
    expect(relDiff(fit.probe.weight, w)).toBeLessThan(1e-6);
    const mid = mu[0].map((v, j) => (v + mu[1][j]) / 2);
    expect(Math.abs(mid.reduce((s, v, j) => s + v * fit.probe.weight[j], 0) + fit.probe.bias[0])).toBeLessThan(1e-6);
  });
});

describe('probes recover planted structure and nothing else', () => {
  const n = 3000;
  const d = 32;
  const x = features(n, d, 21);
  const w = unit(d, 22);
  const prompt = Int32Array.from({ length: n }, (_, i) => Math.floor(i / 3));
  const token = Int32Array.from({ length: n }, (_, i) => i);

  it('a planted direction: logistic, mean-diff and ridge all point along it (cosine ≥ 0.99)', () => {
    const y = plantedClasses(x, n, d, [w], 0.2, 23);
    const rows = probeRowsFromArrays('h', x, d, prompt, Array.from(y), undefined, token);
    for (const method of ['logistic', 'mean-diff'] as const) {
      const p = fitProbe(rows, { method, l2: 1e-3 });
      expect(cosine(p.weights.weight, w), method).toBeGreaterThanOrEqual(0.99);
      expect(p.test!.accuracy!, method).toBeGreaterThan(0.9);
    }
    const g = gaussian(mulberry32(24));
    const targets = Array.from({ length: n }, (_, i) => 3 * w.reduce((s, v, j) => s + v * x[i * d + j], 0) + 0.3 * g());
    const r = fitProbe(probeRowsFromArrays('h', x, d, prompt, targets, undefined, token), { method: 'ridge', l2: 1e-3 });
    expect(cosine(r.weights.weight, w)).toBeGreaterThanOrEqual(0.99);
    expect(r.test!.r2!).toBeGreaterThan(0.95);
  });

  it('labels unrelated to the activations give chance test accuracy; so does the shuffled control', () => {
    const rng = mulberry32(25);
    const labels = Array.from({ length: n }, () => (rng() < 0.5 ? 'a' : 'b'));
    const p = fitProbe(probeRowsFromArrays('h', x, d, prompt, labels, undefined, token), { method: 'logistic', l2: 1e-2 });
    expect(Math.abs(p.test!.accuracy! - 0.5)).toBeLessThan(0.06);
    const planted = plantedClasses(x, n, d, [w], 0.2, 23);
    const q = fitProbe(probeRowsFromArrays('h', x, d, prompt, Array.from(planted), undefined, token), { method: 'logistic', l2: 1e-3, control: true });
    expect(q.test!.accuracy!).toBeGreaterThan(0.9);
    expect(Math.abs(q.control!.shuffled.test!.accuracy! - 0.5)).toBeLessThan(0.08);
  });

  it('selectivity: high when the label is a property of the activation, ≈ 0 when it is a property of the word type alone', () => {
    // 40 word types, each with its own embedding; a label per type. A probe memorises types, and
    // so does the control task (random labels per type): selectivity ≈ 0.
    const types = 40;
    const emb = features(types, d, 31);
    const rowsN = 2400;
    const tok = Int32Array.from({ length: rowsN }, (_, i) => (i * 7) % types);
    const xs = new Float32Array(rowsN * d);
    const g = gaussian(mulberry32(32));
    for (let i = 0; i < rowsN; i++) for (let j = 0; j < d; j++) xs[i * d + j] = emb[tok[i] * d + j] + 0.05 * g();
    const typeLabel = Array.from({ length: types }, (_, t) => (t % 2 ? 'odd' : 'even'));
    const pr = Int32Array.from({ length: rowsN }, (_, i) => Math.floor(i / 4));
    const byType = fitProbe(probeRowsFromArrays('h', xs, d, pr, Array.from(tok, (t) => typeLabel[t]), undefined, tok), { method: 'logistic', l2: 1e-3, control: true });
    expect(byType.test!.accuracy!).toBeGreaterThan(0.95);
    expect(Math.abs(byType.control!.selectivity!)).toBeLessThan(0.15);
    expect(byType.control!.word_types).toBe(types);
    // The planted-direction task on unique tokens: the control task cannot be memorised.
    const planted = plantedClasses(x, n, d, [w], 0.2, 23);
    const real = fitProbe(probeRowsFromArrays('h', x, d, prompt, Array.from(planted), undefined, token), { method: 'logistic', l2: 1e-3, control: true });
    expect(real.control!.selectivity).toBeGreaterThan(0.3);
  });

  it('the split is seeded and by prompt: no prompt on both sides; the test fraction is honoured', () => {
    const s = splitByPrompt(prompt, 0.2, 7);
    const trainPrompts = new Set(Array.from(s.train, (r) => prompt[r]));
    for (const r of s.test) expect(trainPrompts.has(prompt[r])).toBe(false);
    expect(s.testPrompts).toBe(200);
    expect(s.train.length + s.test.length).toBe(n);
    expect(Array.from(splitByPrompt(prompt, 0.2, 7).test)).toEqual(Array.from(s.test));
    expect(Array.from(splitByPrompt(prompt, 0.2, 8).test)).not.toEqual(Array.from(s.test));
  });

  it('standardisation fits the same objective on z-scored features; weights come back in raw space', () => {
    const scales = Array.from({ length: 6 }, (_, j) => 10 ** (j - 2));
    const m = 800;
    const xs = features(m, 6, 41, 5, scales);
    const z = new Float32Array(m * 6);
    const mean = new Float64Array(6);
    const sd = new Float64Array(6);
    for (let i = 0; i < m; i++) for (let j = 0; j < 6; j++) mean[j] += xs[i * 6 + j] / m;
    for (let i = 0; i < m; i++) for (let j = 0; j < 6; j++) sd[j] += (xs[i * 6 + j] - mean[j]) ** 2 / m;
    for (let i = 0; i < m; i++) for (let j = 0; j < 6; j++) z[i * 6 + j] = (xs[i * 6 + j] - mean[j]) / Math.sqrt(sd[j]);
    const y = plantedClasses(z, m, 6, [unit(6, 42)], 0.5, 43);
    const a = fitLogistic({ x: xs, n: m, d: 6 }, y, 2, { l2: 0.01, standardize: true });
    const b = fitLogistic({ x: z, n: m, d: 6 }, y, 2, { l2: 0.01, standardize: false });
    // a's raw weights × sd are b's z-space weights.
    const back = Array.from(a.probe.weight, (v, j) => v * Math.sqrt(sd[j]));
    expect(relDiff(back, b.probe.weight)).toBeLessThan(1e-4);
  });

  it('fitting leaves no tensors behind', () => {
    const y = plantedClasses(x, n, d, [w], 0.2, 23);
    const rows = probeRowsFromArrays('h', x, d, prompt, Array.from(y), undefined, token);
    fitProbe(rows, { method: 'logistic', control: true });
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      fitProbe(rows, { method: 'logistic', control: true });
      fitProbe(rows, { method: 'mean-diff' });
      fitProbe(probeRowsFromArrays('h', x, d, prompt, Array.from(y), undefined, token), { method: 'ridge' });
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});


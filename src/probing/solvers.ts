/**
 * The three probe solvers, each minimising its objective exactly:
 *   logistic  mean cross-entropy + (l2/2)·‖W‖² (bias unpenalised) — one sigmoid logit for two
 *             classes, a K-way softmax otherwise; L-BFGS to ‖∇‖ ≤ gradTol.
 *   ridge     mean squared error / 2 + (l2/2)·‖w‖² (bias unpenalised) — closed form (Cholesky).
 *   mean-diff difference of the two class means, threshold halfway between them.
 * Weights come back in the raw activation space, whatever transform was used to fit.
 */
import * as tf from '@tensorflow/tfjs';
import { CholeskyDecomposition, Matrix } from 'ml-matrix';
import { fail } from '../errors.js';
import { CHUNK_ROWS, deviceChunks, disposeChunks, featureTransform, toRawSpace, transposedChunks, type FeatureTransform, type RowMatrix } from './design-matrix.js';
import { minimizeLbfgs, type LbfgsOptions } from './lbfgs.js';

export interface LinearProbeWeights {
  /** [outputs, d] row-major: 1 row for binary logistic / ridge / mean-diff, K for multinomial. */
  weight: Float64Array;
  bias: Float64Array;
  outputs: number;
  d: number;
}

export interface SolverReport {
  /** Final objective value (training rows). */
  objective: number;
  gradNorm?: number;
  iterations?: number;
  converged: boolean;
}

export interface FitOptions {
  l2: number;
  standardize: boolean;
  /** L-BFGS settings (logistic). */
  lbfgs?: LbfgsOptions;
}

/** Logistic regression (binary when classes = 2) on class indices y ∈ [0, classes). */
export function fitLogistic(m: RowMatrix, y: Int32Array, classes: number, opts: FitOptions): { probe: LinearProbeWeights; report: SolverReport; transform: FeatureTransform } {
  if (classes < 2) fail('logistic probe: needs at least two classes');
  const { n, d } = m;
  const K = classes === 2 ? 1 : classes;
  const t = featureTransform(m, opts.standardize);
  const chunks = deviceChunks(m, t);
  const chunksT = transposedChunks(chunks);
  // Targets per chunk: y as a column for the sigmoid, one-hot rows for the softmax.
  const targets = chunks.map((c, i) =>
    tf.tidy(() => {
      const ys = tf.tensor1d(y.subarray(i * CHUNK_ROWS, i * CHUNK_ROWS + c.shape[0]), 'int32');
      return K === 1 ? ys.toFloat().reshape([-1, 1]) : tf.oneHot(ys, K).toFloat();
    }),
  );
  const P = K * d;
  const l2 = opts.l2;
  const objective = (theta: Float64Array, grad: Float64Array): number => {
    // W laid out [d, K] so the big operand of the matmul is never transposed.
    const wdk = new Float32Array(d * K);
    for (let k = 0; k < K; k++) for (let j = 0; j < d; j++) wdk[j * K + k] = theta[k * d + j];
    const bias = Float32Array.from(theta.subarray(P));
    grad.fill(0);
    let loss = 0;
    const w = tf.tensor2d(wdk, [d, K]);
    const b = tf.tensor1d(bias);
    try {
      for (let i = 0; i < chunks.length; i++) {
        const [l, gw, gb] = tf.tidy(() => {
          const z = tf.add(tf.matMul(chunks[i], w), b);
          const yt = targets[i];
          // Written relative to the true class so that nearly-certain rows keep their precision
          // in float32: loss = log1p(Σ_{k≠y} e^{z_k − z_y}); residual p − y from the same sum.
          let rowLoss: tf.Tensor;
          let r: tf.Tensor2D;
          if (K === 1) {
            const sign = tf.sub(1, tf.mul(2, yt)); // +1 for class 0, −1 for class 1
            const sz = tf.mul(sign, z);
            rowLoss = tf.softplus(sz);
            r = tf.mul(sign, tf.sigmoid(sz)) as tf.Tensor2D;
          } else {
            const zy = tf.sum(tf.mul(z, yt), 1, true);
            const others = tf.mul(tf.exp(tf.sub(z, zy)), tf.sub(1, yt));
            const rest = tf.sum(others, 1, true);
            rowLoss = tf.log1p(rest);
            const denom = tf.add(1, rest);
            r = tf.sub(tf.div(others, denom), tf.mul(yt, tf.div(rest, denom))) as tf.Tensor2D;
          }
          return [tf.sum(rowLoss), tf.matMul(chunksT[i], r), tf.sum(r, 0)];
        });
        loss += (l.dataSync() as Float32Array)[0];
        // gw is [d, K]; the parameters are [K, d].
        const gwd = gw.dataSync() as Float32Array;
        const gbd = gb.dataSync() as Float32Array;
        for (let k = 0; k < K; k++) for (let j = 0; j < d; j++) grad[k * d + j] += gwd[j * K + k];
        for (let k = 0; k < K; k++) grad[P + k] += gbd[k];
        tf.dispose([l, gw, gb]);
      }
    } finally {
      w.dispose();
      b.dispose();
    }
    let pen = 0;
    for (let q = 0; q < P; q++) {
      grad[q] = grad[q] / n + l2 * theta[q];
      pen += theta[q] * theta[q];
    }
    for (let k = 0; k < K; k++) grad[P + k] /= n;
    return loss / n + (l2 / 2) * pen;
  };
  try {
    const theta0 = new Float64Array(P + K);
    if (K === 1) {
      // Start at the base rate, so the first steps are about the features.
      const pos = y.reduce((s, v) => s + v, 0) / n;
      theta0[P] = Math.log(Math.max(pos, 1e-6) / Math.max(1 - pos, 1e-6));
    }
    const res = minimizeLbfgs(objective, theta0, opts.lbfgs);
    const raw = toRawSpace(res.x.subarray(0, P), res.x.subarray(P), K, t);
    return {
      probe: { weight: raw.weight, bias: raw.bias, outputs: K, d },
      report: { objective: res.f, gradNorm: res.gradNorm, iterations: res.iterations, converged: res.converged },
      transform: t,
    };
  } finally {
    disposeChunks(chunks);
    disposeChunks(chunksT);
    disposeChunks(targets);
  }
}

/** Ridge regression on continuous targets (closed form in float64). */
export function fitRidge(m: RowMatrix, target: Float64Array, opts: FitOptions): { probe: LinearProbeWeights; report: SolverReport; transform: FeatureTransform } {
  const { n, d } = m;
  const t = featureTransform(m, opts.standardize);
  let ymean = 0;
  for (let r = 0; r < n; r++) ymean += target[r];
  ymean /= n;
  const chunks = deviceChunks(m, t);
  const gram = new Float64Array(d * d);
  const xty = new Float64Array(d);
  try {
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i];
      const rows = c.shape[0];
      const yc = new Float32Array(rows);
      for (let r = 0; r < rows; r++) yc[r] = target[i * CHUNK_ROWS + r] - ymean;
      // Xᵀ made per chunk: a plain matMul (the transposed-operand one is ~10× slower on wasm).
      const [g, v] = tf.tidy(() => {
        const ct = tf.transpose(c) as tf.Tensor2D;
        return [tf.matMul(ct, c), tf.matMul(ct, tf.tensor2d(yc, [rows, 1]))];
      });
      const gd = g.dataSync() as Float32Array;
      const vd = v.dataSync() as Float32Array;
      for (let q = 0; q < d * d; q++) gram[q] += gd[q];
      for (let j = 0; j < d; j++) xty[j] += vd[j];
      tf.dispose([g, v]);
    }
  } finally {
    disposeChunks(chunks);
  }
  // (XᵀX/n + l2·I) w = Xᵀy/n on centred data; b = ȳ (centred space).
  const A = new Matrix(d, d);
  for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) A.set(a, b, gram[a * d + b] / n + (a === b ? opts.l2 : 0));
  const chol = new CholeskyDecomposition(A);
  if (!chol.isPositiveDefinite()) fail('ridge probe: the normal equations are singular (constant or duplicated features with --l2 0); use --l2 > 0');
  const rhs = Matrix.columnVector(Array.from(xty, (v) => v / n));
  const w = Float64Array.from(chol.solve(rhs).getColumn(0));
  let sse = 0;
  // Objective from the normal equations: ½(ȳc² − 2wᵀXᵀy/n + wᵀGw/n) + (l2/2)‖w‖², with ȳc² from the data.
  let yy = 0;
  for (let r = 0; r < n; r++) yy += (target[r] - ymean) ** 2;
  let wxy = 0;
  let wgw = 0;
  let ww = 0;
  for (let a = 0; a < d; a++) {
    wxy += w[a] * xty[a];
    ww += w[a] * w[a];
    let s = 0;
    for (let b = 0; b < d; b++) s += gram[a * d + b] * w[b];
    wgw += w[a] * s;
  }
  sse = yy - 2 * wxy + wgw;
  const raw = toRawSpace(w, Float64Array.of(ymean), 1, t);
  return { probe: { weight: raw.weight, bias: raw.bias, outputs: 1, d }, report: { objective: sse / (2 * n) + (opts.l2 / 2) * ww, converged: true }, transform: t };
}

/** Mass-mean probe: w = μ₁ − μ₀, bias puts the threshold halfway between the class means. */
export function fitMeanDiff(m: RowMatrix, y: Int32Array, opts: Pick<FitOptions, 'standardize'>): { probe: LinearProbeWeights; report: SolverReport; transform: FeatureTransform } {
  const { x, n, d } = m;
  const t = featureTransform(m, opts.standardize);
  const mu = [new Float64Array(d), new Float64Array(d)];
  const count = [0, 0];
  for (let r = 0; r < n; r++) {
    const c = y[r];
    if (c !== 0 && c !== 1) fail('mean-diff probe: needs exactly two classes');
    count[c]++;
    const off = r * d;
    const acc = mu[c];
    for (let j = 0; j < d; j++) acc[j] += t.scale ? (x[off + j] - t.mean[j]) / t.scale[j] : x[off + j] - t.mean[j];
  }
  if (count[0] === 0 || count[1] === 0) fail('mean-diff probe: both classes need training rows');
  const w = new Float64Array(d);
  let b = 0;
  for (let j = 0; j < d; j++) {
    const m0 = mu[0][j] / count[0];
    const m1 = mu[1][j] / count[1];
    w[j] = m1 - m0;
    b -= (w[j] * (m0 + m1)) / 2;
  }
  const raw = toRawSpace(w, Float64Array.of(b), 1, t);
  return { probe: { weight: raw.weight, bias: raw.bias, outputs: 1, d }, report: { objective: Number.NaN, converged: true }, transform: t };
}

/** Probe outputs (logits, or predictions for ridge) for every row: [n, outputs], via device chunks. */
export function probeOutputs(m: RowMatrix, p: LinearProbeWeights): Float32Array {
  const { x, n, d } = m;
  if (d !== p.d) fail(`probe has d ${p.d}, activations have ${d}`);
  const K = p.outputs;
  const wdk = new Float32Array(d * K);
  for (let k = 0; k < K; k++) for (let j = 0; j < d; j++) wdk[j * K + k] = p.weight[k * d + j];
  const out = new Float32Array(n * K);
  const w = tf.tensor2d(wdk, [d, K]);
  const b = tf.tensor1d(Float32Array.from(p.bias));
  try {
    for (let start = 0; start < n; start += CHUNK_ROWS) {
      const rows = Math.min(CHUNK_ROWS, n - start);
      const z = tf.tidy(() => tf.add(tf.matMul(tf.tensor2d(x.subarray(start * d, (start + rows) * d), [rows, d]), w), b));
      out.set(z.dataSync() as Float32Array, start * K);
      z.dispose();
    }
  } finally {
    w.dispose();
    b.dispose();
  }
  return out;
}

/**
 * Probe training rows on the tfjs device, centred (and optionally standardised), in row chunks.
 *
 * Centring is an exact reparametrisation (the bias is unpenalised and absorbs the mean), and it
 * is what makes float32 enough: the objective's curvature no longer mixes the mean direction with
 * the bias. Per-chunk products run as float32 matmuls; sums across chunks are float64 on the host.
 */
import * as tf from '@tensorflow/tfjs';

/** Rows per device chunk: large enough for fast matmuls, small enough to keep float32 sums short. */
export const CHUNK_ROWS = 4096;

export interface RowMatrix {
  /** rows × d, row-major. */
  x: Float32Array;
  n: number;
  d: number;
}

export interface FeatureTransform {
  mean: Float64Array;
  /** Per-feature standard deviation used to divide (null: not standardised). */
  scale: Float64Array | null;
}

export function featureTransform(m: RowMatrix, standardize: boolean): FeatureTransform {
  const { x, n, d } = m;
  const mean = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    const off = r * d;
    for (let j = 0; j < d; j++) mean[j] += x[off + j];
  }
  for (let j = 0; j < d; j++) mean[j] /= n;
  if (!standardize) return { mean, scale: null };
  const v = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    const off = r * d;
    for (let j = 0; j < d; j++) {
      const c = x[off + j] - mean[j];
      v[j] += c * c;
    }
  }
  // Constant features keep scale 1 (their centred values are all zero anyway).
  const scale = v.map((s) => (s > 0 ? Math.sqrt(s / n) : 1));
  return { mean, scale };
}

/** The transformed rows as device chunks [≤CHUNK_ROWS, d]; dispose with disposeChunks. */
export function deviceChunks(m: RowMatrix, t: FeatureTransform): tf.Tensor2D[] {
  const { x, n, d } = m;
  const chunks: tf.Tensor2D[] = [];
  for (let start = 0; start < n; start += CHUNK_ROWS) {
    const rows = Math.min(CHUNK_ROWS, n - start);
    const buf = new Float32Array(rows * d);
    for (let r = 0; r < rows; r++) {
      const src = (start + r) * d;
      const dst = r * d;
      for (let j = 0; j < d; j++) buf[dst + j] = t.scale ? (x[src + j] - t.mean[j]) / t.scale[j] : x[src + j] - t.mean[j];
    }
    chunks.push(tf.tensor2d(buf, [rows, d]));
  }
  return chunks;
}

/**
 * Each chunk's transpose [d, rows], made once: Xᵀ·r as a plain matMul. tfjs-wasm's
 * transposed-first-operand matMul runs ~10× slower (2 vs 24 GFLOP/s measured on [4096, 768]).
 */
export function transposedChunks(chunks: readonly tf.Tensor2D[]): tf.Tensor2D[] {
  return chunks.map((c) => tf.tidy(() => tf.transpose(c) as tf.Tensor2D));
}

export function disposeChunks(chunks: tf.Tensor[]): void {
  for (const c of chunks) c.dispose();
}

/**
 * Weights fitted in the transformed space → the raw activation space:
 * w·((x − μ)/σ) + b = (w/σ)·x + (b − Σ w μ/σ).
 */
export function toRawSpace(weight: Float64Array, bias: Float64Array, rowsOut: number, t: FeatureTransform): { weight: Float64Array; bias: Float64Array } {
  const d = t.mean.length;
  const w = new Float64Array(weight.length);
  const b = Float64Array.from(bias);
  for (let k = 0; k < rowsOut; k++) {
    for (let j = 0; j < d; j++) {
      const raw = t.scale ? weight[k * d + j] / t.scale[j] : weight[k * d + j];
      w[k * d + j] = raw;
      b[k] -= raw * t.mean[j];
    }
  }
  return { weight: w, bias: b };
}

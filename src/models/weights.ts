/**
 * Canonical weight names (TransformerLens style) and the host-side helpers family adapters use
 * to bring checkpoint tensors into our layout. Matrices are stored [in, out] so every projection
 * is a plain matMul(x, W): the wasm backend is ~10x slower with a transposed right operand.
 *
 *   embed.W_E [vocab, d]          pos_embed.W_pos [n_ctx, d]
 *   blocks.{l}.ln1.w|b [d]        blocks.{l}.ln2.w|b [d]
 *   blocks.{l}.attn.W_Q [d, nH*dh]  W_K|W_V [d, nKV*dh]  W_O [nH*dh, d]  b_Q b_K b_V b_O
 *   blocks.{l}.mlp.W_in [d, mlp]  W_gate [d, mlp]  W_out [mlp, d]  b_in b_out
 *   ln_final.w|b [d]              unembed.W_U [d, vocab]  unembed.b_U [vocab]
 */
import { fail } from '../errors.js';
import type { RawTensor } from '../io/raw-tensor.js';

export type WeightMap = Map<string, RawTensor>;

/** Transpose a 2-D host tensor (PyTorch Linear [out, in] → our [in, out]). */
export function transpose2d(t: RawTensor): RawTensor {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  const src = t.data;
  // Blocked to stay cache-friendly on 50k×768 embeddings.
  const B = 64;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(r0 + B, rows);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(c0 + B, cols);
      for (let r = r0; r < r1; r++) {
        const rowOff = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[rowOff + c];
      }
    }
  }
  return { shape: [cols, rows], data: out };
}

/** Columns [start, start+width) of a 2-D host tensor (splitting GPT-2's fused c_attn). */
export function sliceColumns(t: RawTensor, start: number, width: number): RawTensor {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) out.set(t.data.subarray(r * cols + start, r * cols + start + width), r * width);
  return { shape: [rows, width], data: out };
}

export function slice1d(t: RawTensor, start: number, width: number): RawTensor {
  return { shape: [width], data: t.data.slice(start, start + width) };
}

/** Fetch a checkpoint tensor, checking its shape; errors name the tensor and both shapes. */
export function take(src: WeightMap, name: string, shape: number[], source: string): RawTensor {
  const t = src.get(name);
  if (!t) fail(`${source}: missing tensor '${name}'`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    fail(`${source}: tensor '${name}' has shape [${t.shape}], expected [${shape}]`);
  }
  return t;
}

export function takeOptional(src: WeightMap, name: string, shape: number[], source: string): RawTensor | undefined {
  return src.has(name) ? take(src, name, shape, source) : undefined;
}

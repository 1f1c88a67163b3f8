/**
 * BatchMatMul's gradient with the transposes done as copies. tfjs's own gradient multiplies with
 * transpose flags (dA = dy·Bᵀ, dB = Aᵀ·dy), and on the wasm backend a transposed operand runs
 * 10–17× slower than a plain one (measured at training shapes: [1024,2048]ᵀ·[1024,64] 434 ms with
 * the flag, 26 ms as transpose + matMul). Same products, so the same values up to summation order.
 */
import * as tf from '@tensorflow/tfjs';

/** x with its last two axes swapped (a real copy). */
function swapLast(x: tf.Tensor): tf.Tensor {
  const perm = [...Array(x.rank).keys()];
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return tf.transpose(x, perm);
}

/** a·b with optional transposes, never passing a transpose flag to the kernel. */
function product(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean): tf.Tensor {
  return tf.matMul(transposeA ? swapLast(a) : a, transposeB ? swapLast(b) : b);
}

/**
 * Register BatchMatMul's gradient (the four cases of tfjs-core's batchMatMulGradConfig), with the
 * transposes as copies — or, with `copyTransposes` false, as transpose flags exactly as tfjs
 * registers it (for comparison in bench/training.ts).
 */
export function registerBatchMatMulGradient(copyTransposes: boolean): void {
  const mm = copyTransposes ? product : (a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean) => tf.matMul(a, b, ta, tb);
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const g = dy as tf.Tensor;
      if (!transposeA && !transposeB) return { a: () => mm(g, b, false, true), b: () => mm(a, g, true, false) };
      if (!transposeA && transposeB) return { a: () => mm(g, b, false, false), b: () => mm(g, a, true, false) };
      if (transposeA && !transposeB) return { a: () => mm(b, g, false, true), b: () => mm(a, g, false, false) };
      return { a: () => mm(b, g, true, true), b: () => mm(g, a, true, true) };
    },
  });
}

export function registerCopyTransposeMatMulGradient(): void {
  registerBatchMatMulGradient(true);
}

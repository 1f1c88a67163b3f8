/**
 * LRP rules as modified gradients (RelP). Each is a tf.customGrad whose forward computes exactly
 * the same ops as the plain path, so forward values are bit-identical with rules on or off; only
 * the backward pass changes.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';

/**
 * LN: norms' scale is a constant. Identity: activations pass act(x)/x. Half: a gated MLP's
 * product gives each factor half its gradient. Attention, one of: AH (the pattern is a constant:
 * relevance reaches only V) or AttnHalf (AttnLRP: the Half rule on both bilinear products,
 * Q·Kᵀ and pattern·V, with the plain softmax gradient in between).
 */
export type RelpRule = 'LN' | 'Identity' | 'Half' | 'AH' | 'AttnHalf';
export const RELP_RULES: readonly RelpRule[] = ['LN', 'Identity', 'Half', 'AH', 'AttnHalf'];
/** Rules RelP uses unless told otherwise (the attention rules are optional, off by default). */
export const DEFAULT_RELP_RULES: readonly RelpRule[] = ['LN', 'Identity', 'Half'];

/** Fails on a rule set that cannot be applied together (two rules for the same product). */
export function checkRelpRules(rules: Iterable<RelpRule>): void {
  const set = new Set(rules);
  for (const r of set) if (!RELP_RULES.includes(r)) fail(`unknown RelP rule '${r}' (choose from ${RELP_RULES.join(', ')})`);
  if (set.has('AH') && set.has('AttnHalf')) fail('RelP rules AH and AttnHalf both rule attention\'s pattern·V product: choose one');
}

// tfjs types customGrad's inputs as (Tensor | GradSaveFunc)[]; our functions know their arity.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const custom = (f: (...args: any[]) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[] }) =>
  tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]);

/** Identity forward, zero gradient: the value is treated as a constant in the backward pass. */
export const stopGradient = custom((x: tf.Tensor) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as (x: tf.Tensor) => tf.Tensor;

/**
 * Identity rule for an elementwise activation y = act(x): the backward pass uses act(x)/x instead
 * of act'(x), with x nudged away from 0 by 1e-6·sign(x) (sign(0) taken as +1).
 */
export function identityRule(act: (x: tf.Tensor) => tf.Tensor): (x: tf.Tensor) => tf.Tensor {
  return custom((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const y = act(x);
    save([x, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ys] = saved;
        const nudged = tf.add(xs, tf.where(tf.greaterEqual(xs, 0), tf.fill(xs.shape, 1e-6), tf.fill(xs.shape, -1e-6)));
        return tf.mul(dy, tf.div(ys, nudged));
      },
    };
  }) as (x: tf.Tensor) => tf.Tensor;
}

/** Half rule for a product of two input-dependent factors: each factor gets half its gradient. */
export const halfRuleProduct = custom((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.mul(a, b),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [as, bs] = saved;
      return [tf.mul(tf.mul(dy, bs), 0.5), tf.mul(tf.mul(dy, as), 0.5)];
    },
  };
}) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

/** x [n, a, b] → [n, b, a] (a copy). */
const swapLast3 = (x: tf.Tensor) => tf.transpose(x, [0, 2, 1]);

/**
 * Half rule for a product of two input-dependent matrices, [n, m, k] × [n, k, p] (AttnLRP's rule
 * for Q·Kᵀ and pattern·V): dA = ½ dC·Bᵀ, dB = ½ Aᵀ·dC, so Σ A·dA + Σ B·dB = Σ C·dC — relevance
 * is conserved through the product instead of counted twice. `mm` is the plain path's multiply,
 * so forward values are the same with the rule on or off.
 */
export function halfRuleMatMul(mm: (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D): (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D {
  return custom((a: tf.Tensor3D, b: tf.Tensor3D, save: tf.GradSaveFunc) => {
    save([a, b]);
    return {
      value: mm(a, b),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [as, bs] = saved;
        return [tf.mul(mm(dy as tf.Tensor3D, swapLast3(bs) as tf.Tensor3D), 0.5), tf.mul(mm(swapLast3(as) as tf.Tensor3D, dy as tf.Tensor3D), 0.5)];
      },
    };
  }) as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;
}

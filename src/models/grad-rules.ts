/**
 * LRP rules as modified gradients (RelP). Each is a tf.customGrad whose forward computes exactly
 * the same ops as the plain path, so forward values are bit-identical with rules on or off; only
 * the backward pass changes.
 */
import * as tf from '@tensorflow/tfjs';

export type RelpRule = 'LN' | 'Identity' | 'Half' | 'AH';
export const RELP_RULES: readonly RelpRule[] = ['LN', 'Identity', 'Half', 'AH'];
/** Rules RelP uses unless told otherwise (AH is optional, off by default). */
export const DEFAULT_RELP_RULES: readonly RelpRule[] = ['LN', 'Identity', 'Half'];

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

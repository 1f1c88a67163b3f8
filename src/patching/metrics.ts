/**
 * Patching metrics on final-position logits. Every metric returns one value per prompt ([b]) so
 * callers can average per patch site; `mean` gives the batch metric LD = mean_b(...).
 * Built from masks and sums (no gather) so they are differentiable on every backend.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';

export type MetricKind = 'logit_diff' | 'logprob_diff' | 'prob' | 'kl';
export const METRICS: readonly MetricKind[] = ['logit_diff', 'logprob_diff', 'prob', 'kl'];

export interface MetricTargets {
  answer: number[];
  wrong: number[];
  /** Clean final-position log-probabilities [b, vocab], for 'kl'. */
  cleanLogProbs?: tf.Tensor2D;
}

/** Final-position logits [b, vocab] from [b, 1, vocab] (finalPositionOnly) logits. */
export function finalRow(logits: tf.Tensor3D): tf.Tensor2D {
  if (logits.shape[1] !== 1) fail(`metric expects final-position logits [b, 1, vocab], got [${logits.shape}]`);
  return logits.reshape([logits.shape[0], logits.shape[2]]);
}

function signedMask(b: number, V: number, answer: number[], wrong: number[] | null): tf.Tensor2D {
  const m = new Float32Array(b * V);
  for (let i = 0; i < b; i++) {
    m[i * V + answer[i]] += 1;
    if (wrong) m[i * V + wrong[i]] -= 1;
  }
  return tf.tensor2d(m, [b, V]);
}

/** Per-prompt metric values [b] from final-position logits [b, vocab]. */
export function metricPerPrompt(kind: MetricKind, last: tf.Tensor2D, t: MetricTargets): tf.Tensor1D {
  const [b, V] = last.shape;
  if (t.answer.length !== b) fail(`metric: ${t.answer.length} answers for a batch of ${b}`);
  switch (kind) {
    case 'logit_diff':
      return tf.sum(tf.mul(last, signedMask(b, V, t.answer, t.wrong)), 1) as tf.Tensor1D;
    case 'logprob_diff':
      return tf.sum(tf.mul(tf.logSoftmax(last), signedMask(b, V, t.answer, t.wrong)), 1) as tf.Tensor1D;
    case 'prob':
      return tf.sum(tf.mul(tf.softmax(last), signedMask(b, V, t.answer, null)), 1) as tf.Tensor1D;
    case 'kl': {
      // KL(clean ‖ patched); lower is closer to clean.
      if (!t.cleanLogProbs) fail("metric 'kl' needs the clean run's distribution");
      const lp = tf.logSoftmax(last);
      return tf.sum(tf.mul(tf.exp(t.cleanLogProbs), tf.sub(t.cleanLogProbs, lp)), 1) as tf.Tensor1D;
    }
  }
}

/** (M_patched − M_corrupt) / (M_clean − M_corrupt): 0 = no effect, 1 = clean behaviour restored. */
export function normalise(value: number, clean: number, corrupt: number): number {
  return (value - corrupt) / (clean - corrupt);
}

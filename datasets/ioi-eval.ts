/** How well a model does IOI: accuracy (logit(IO) > logit(S) at the final position) and mean logit difference. */
import * as tf from '@tensorflow/tfjs';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { answerToken } from '../src/patching/pairs.js';
import type { IoiPrompt } from './ioi.js';

export interface IoiScore {
  n: number;
  accuracy: number;
  meanLogitDiff: number;
}

export function evaluateIoi(model: HookedModel, prompts: IoiPrompt[], batchSize = 64): IoiScore {
  const warnings: string[] = [];
  let correct = 0;
  let ldSum = 0;
  for (let i = 0; i < prompts.length; i += batchSize) {
    const group = prompts.slice(i, i + batchSize);
    const ids = group.map((p) => model.encode(p.clean));
    const io = group.map((p) => answerToken(model, p.clean, p.answer, warnings));
    const s = group.map((p) => answerToken(model, p.clean, p.wrong, warnings));
    const lds = tf.tidy(() => {
      const logits = model.run(ids, { finalPositionOnly: true });
      const V = model.cfg.dVocab;
      const mask = new Float32Array(group.length * V);
      group.forEach((_, b) => ((mask[b * V + io[b]] += 1), (mask[b * V + s[b]] -= 1)));
      return tf.sum(tf.mul(logits.reshape([group.length, V]), tf.tensor2d(mask, [group.length, V])), 1);
    });
    for (const ld of lds.dataSync()) (ldSum += ld, (correct += ld > 0 ? 1 : 0));
    lds.dispose();
  }
  return { n: prompts.length, accuracy: correct / prompts.length, meanLogitDiff: ldSum / prompts.length };
}

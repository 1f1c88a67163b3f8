/**
 * The LLaVA projector stage: the tower's selected features → language-model embeddings,
 * linear_2(act(linear_1(x))). Fires hook_image_embeds on its output.
 */
import type * as tf from '@tensorflow/tfjs';
import { applyActivation, linear, type StageContext } from '../components.js';
import type { ActivationKind } from '../config.js';

export function projectorForward(ctx: StageContext, features: tf.Tensor, act: ActivationKind): tf.Tensor {
  const hidden = applyActivation(ctx, linear(ctx, features, 'W_1', 'b_1'), act);
  return ctx.hook('hook_image_embeds', linear(ctx, hidden, 'W_2', 'b_2'));
}

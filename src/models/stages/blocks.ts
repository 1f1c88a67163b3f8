/**
 * The generic pre-norm transformer block, run over a range of layers. Text decoders and ViT
 * towers differ only in their BlockConfig (norm, attention mask, activation, biases) and in the
 * stage that embeds their input.
 */
import * as tf from '@tensorflow/tfjs';
import { applyNorm, attention, mlp, type AttentionInputs, type StageContext } from '../components.js';

/**
 * Blocks `from`..`to` (inclusive) on the residual stream [b, T, d]; returns hook_resid_post of
 * block `to`. `residPreOf(l)` lets a caller see each block's input (the hidden state HF records
 * before the block) without another hook point.
 */
export function runBlocks(
  ctx: StageContext,
  resid: tf.Tensor,
  attnInputs: AttentionInputs,
  from: number,
  to: number,
  residPreOf?: (l: number, x: tf.Tensor) => void,
): tf.Tensor {
  for (let l = from; l <= to; l++) {
    const hp = `blocks.${l}.`;
    residPreOf?.(l, resid);
    resid = ctx.hook(hp + 'hook_resid_pre', resid);
    const attnOut = ctx.hook(hp + 'hook_attn_out', attention(ctx, applyNorm(ctx, resid, `blocks.${l}.ln1`), l, attnInputs));
    resid = ctx.hook(hp + 'hook_resid_mid', tf.add(resid, attnOut));
    const mlpOut = ctx.hook(hp + 'hook_mlp_out', mlp(ctx, applyNorm(ctx, resid, `blocks.${l}.ln2`), l));
    resid = ctx.hook(hp + 'hook_resid_post', tf.add(resid, mlpOut));
  }
  return resid;
}

/**
 * The vision-tower stage (CLIP / SigLIP ViT): patch embedding (+ CLS) + learned positions
 * (hook_embed), CLIP's pre-LayerNorm (ln_pre), then the same generic blocks as a language model
 * with bidirectional attention. Names here are local; the runtime prefixes them with 'vision.'.
 *
 * Hidden states follow Hugging Face: hidden state i is the input of block i as the tower computed
 * it (0 = after ln_pre; L = the last block's output). A hook on blocks.{i}.hook_resid_pre changes
 * block i's computation, not hidden state i — as a forward hook on HF's encoder layer would.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../../errors.js';
import { applyNorm, linear, type StageContext } from '../components.js';
import type { VisionConfig } from '../config.js';
import type { ImageBatch } from '../image-batch.js';
import { runBlocks } from './blocks.js';

export interface VisionForwardOptions {
  /** Hidden state to return (0..L); default L. */
  outputLayer?: number;
  /** Last block to run (≥ outputLayer − 1): later blocks only matter to their own hooks. Default outputLayer − 1. */
  runThrough?: number;
  /** Start at this block from a known hook_resid_pre [n, P, d] (embedding and earlier blocks skipped). */
  resume?: { layer: number; residPre: tf.Tensor };
  /** Apply the standalone tower's post-LayerNorm (ln_post) to the returned last hidden state. */
  postNorm?: boolean;
}

/**
 * Non-overlapping p×p patches of [n, C, H, W] pixels as rows [n, patches, C·p·p], each ordered
 * (channel, row, column) like a Conv2d weight [d, C, p, p] flattened, patches row-major: a
 * stride-p convolution is then one matMul. Host-side: pixels are inputs, never differentiated.
 */
export function imagePatches(images: ImageBatch, patch: number): { data: Float32Array; shape: [number, number, number] } {
  const [n, C, H, W] = images.shape;
  const gh = Math.floor(H / patch);
  const gw = Math.floor(W / patch);
  const per = C * patch * patch;
  const out = new Float32Array(n * gh * gw * per);
  const src = images.data;
  let o = 0;
  for (let i = 0; i < n; i++) {
    for (let py = 0; py < gh; py++) {
      for (let px = 0; px < gw; px++) {
        for (let c = 0; c < C; c++) {
          for (let ky = 0; ky < patch; ky++) {
            const rowStart = ((i * C + c) * H + py * patch + ky) * W + px * patch;
            out.set(src.subarray(rowStart, rowStart + patch), o);
            o += patch;
          }
        }
      }
    }
  }
  return { data: out, shape: [n, gh * gw, per] };
}

export function checkImages(cfg: VisionConfig, images: ImageBatch, source: string): void {
  const [n, c, h, w] = images.shape;
  if (n === 0) fail(`${source}: no images given`);
  if (c !== cfg.nChannels || h !== cfg.imageSize || w !== cfg.imageSize) {
    fail(`${source}: pixel_values have shape [${images.shape.join(', ')}] but the vision tower takes [n, ${cfg.nChannels}, ${cfg.imageSize}, ${cfg.imageSize}]`);
  }
  if (images.data.length !== n * c * h * w) fail(`${source}: pixel_values hold ${images.data.length} values, shape [${images.shape.join(', ')}] needs ${n * c * h * w}`);
}

/** Embedding output [n, P, d]: patches·W_patch (+ b) with CLS first, plus positions. */
function embedImages(ctx: StageContext, cfg: VisionConfig, images: ImageBatch): tf.Tensor {
  const patches = imagePatches(images, cfg.patchSize);
  const n = patches.shape[0];
  let x = linear(ctx, tf.tensor3d(patches.data, patches.shape), 'embed.W_patch', 'embed.b_patch');
  if (cfg.classToken) {
    const cls = tf.tile(ctx.param('embed.cls').reshape([1, 1, cfg.dModel]), [n, 1, 1]);
    x = tf.concat([cls, x], 1);
  }
  return tf.add(x, ctx.param('pos_embed.W_pos'));
}

/** Run the tower; returns hidden state `outputLayer` [n, P, d] (post-normed with postNorm). */
export function visionTowerForward(ctx: StageContext, images: ImageBatch | null, opts: VisionForwardOptions = {}): tf.Tensor {
  const cfg = ctx.cfg as VisionConfig;
  const L = cfg.nLayers;
  const out = opts.outputLayer ?? L;
  const runThrough = Math.max(opts.runThrough ?? out - 1, out - 1);
  let resid: tf.Tensor;
  let from = 0;
  if (opts.resume) {
    resid = opts.resume.residPre;
    from = opts.resume.layer;
    const [, P, d] = resid.shape;
    if (resid.rank !== 3 || P !== cfg.nPositions || d !== cfg.dModel) fail(`vision tower: resume residual has shape [${resid.shape}], expected [n, ${cfg.nPositions}, ${cfg.dModel}]`);
    if (from > out) fail(`vision tower: cannot resume at block ${from} and return hidden state ${out}`);
  } else {
    if (!images) fail('vision tower: no images given');
    resid = ctx.hook('hook_embed', embedImages(ctx, cfg, images));
    if (cfg.preNorm) resid = applyNorm(ctx, resid, 'ln_pre');
  }
  let hidden: tf.Tensor | null = out === from ? resid : null;
  const lastRun = Math.min(runThrough, L - 1);
  const last = runBlocks(ctx, resid, {}, from, lastRun, (l, x) => {
    if (l === out) hidden = x;
  });
  // Hidden state lastRun + 1 is the last block's output (no further block records it).
  if (!hidden && out === lastRun + 1) hidden = last;
  if (!hidden) fail(`vision tower: hidden state ${out} was not computed`);
  return opts.postNorm && out === L ? applyNorm(ctx, hidden, 'ln_post') : hidden;
}

/**
 * The splice stage of a LLaVA model: image embeddings replace the token embeddings at the image
 * placeholder positions, image after image in batch order (HF's masked_scatter). Also the
 * placeholder bookkeeping: a prompt's single placeholder token is expanded to the image's run of
 * tokens, as the HF processor does.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../../errors.js';
import type { TokenBatch } from '../transformer.js';

/** Where the images go: per prompt, the start position of each of its images' token runs. */
export interface SpliceLayout {
  /** runs[b] = start positions in prompt b, in order; images are numbered prompt-major. */
  runs: number[][];
  nImageTokens: number;
}

/**
 * Find the image-token runs of a padded batch. Each run must be exactly nImageTokens long.
 * `where` names the input in errors.
 */
export function spliceLayout(tokens: TokenBatch, imageTokenIndex: number, nImageTokens: number, where = 'input'): SpliceLayout {
  const { batch, seqLen: T, ids, mask } = tokens;
  const runs: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const starts: number[] = [];
    let t = 0;
    while (t < T) {
      const i = b * T + t;
      if (mask[i] && ids[i] === imageTokenIndex) {
        let e = t;
        while (e < T && mask[b * T + e] && ids[b * T + e] === imageTokenIndex) e++;
        const len = e - t;
        if (len % nImageTokens !== 0) {
          fail(`${where}: prompt ${b + 1} has a run of ${len} image tokens (id ${imageTokenIndex}) at position ${t}; each image takes exactly ${nImageTokens}`);
        }
        for (let s = t; s < e; s += nImageTokens) starts.push(s);
        t = e;
      } else t++;
    }
    runs.push(starts);
  }
  return { runs, nImageTokens };
}

export function layoutImageCount(layout: SpliceLayout): number {
  return layout.runs.reduce((a, r) => a + r.length, 0);
}

/**
 * Expand each single image placeholder of a prompt to `nImageTokens` copies (HF processor
 * behaviour); runs that are already nImageTokens long are kept. Returns the new ids and the
 * number of images the prompt asks for.
 */
export function expandImagePlaceholders(ids: readonly number[], imageTokenIndex: number, nImageTokens: number, where: string): { ids: number[]; images: number } {
  const out: number[] = [];
  let images = 0;
  for (let t = 0; t < ids.length; ) {
    if (ids[t] !== imageTokenIndex) {
      out.push(ids[t++]);
      continue;
    }
    let e = t;
    while (e < ids.length && ids[e] === imageTokenIndex) e++;
    const len = e - t;
    if (len === 1) {
      for (let k = 0; k < nImageTokens; k++) out.push(imageTokenIndex);
      images += 1;
    } else if (len % nImageTokens === 0) {
      for (let k = 0; k < len; k++) out.push(imageTokenIndex);
      images += len / nImageTokens;
    } else {
      fail(`${where}: a run of ${len} image tokens (id ${imageTokenIndex}) at position ${t}: use one placeholder per image or exactly ${nImageTokens} tokens per image`);
    }
    t = e;
  }
  return { ids: out, images };
}

/**
 * tokenEmbeds [b, T, d] with image embeddings [n, P, d] written over the image positions.
 * A 0/1 selection matrix per prompt and a batched matMul (exact: one non-zero term per output)
 * keep it differentiable on every backend; gather's gradient has no wasm kernel.
 */
export function spliceImageEmbeds(tokenEmbeds: tf.Tensor, imageEmbeds: tf.Tensor, layout: SpliceLayout): tf.Tensor {
  const [b, T, d] = tokenEmbeds.shape as [number, number, number];
  const [n, P] = imageEmbeds.shape as [number, number, number];
  const total = layoutImageCount(layout);
  if (n !== total) fail(`the prompts have ${total} image placeholder run(s) but ${n} image(s) were given`);
  if (P !== layout.nImageTokens) fail(`image embeddings have ${P} positions, the prompts reserve ${layout.nImageTokens} per image`);
  if (total === 0) return tokenEmbeds;
  const K = Math.max(...layout.runs.map((r) => r.length));
  // Each prompt's images, padded with zero rows to K images: [b, K·P, d].
  let first = 0;
  const perPrompt = layout.runs.map((r) => {
    const parts: tf.Tensor[] = [];
    if (r.length > 0) parts.push(imageEmbeds.slice([first, 0, 0], [r.length, P, d]).reshape([r.length * P, d]));
    if (r.length < K) parts.push(tf.zeros([(K - r.length) * P, d]));
    first += r.length;
    return parts.length === 1 ? parts[0] : tf.concat(parts, 0);
  });
  const images = b === 1 ? perPrompt[0].expandDims(0) : tf.stack(perPrompt);
  const select = new Float32Array(b * T * K * P);
  const isImage = new Float32Array(b * T);
  layout.runs.forEach((starts, p) => {
    starts.forEach((s, k) => {
      for (let j = 0; j < P; j++) {
        select[(p * T + s + j) * K * P + k * P + j] = 1;
        isImage[p * T + s + j] = 1;
      }
    });
  });
  const placed = tf.matMul(tf.tensor3d(select, [b, T, K * P]), images);
  const keep = tf.sub(1, tf.tensor3d(isImage, [b, T, 1]));
  return tf.add(tf.mul(tokenEmbeds, keep), placed);
}

/** Per position of a padded batch: 1 where an image token sits (the Arrow cache's modality column). */
export function imagePositionMask(tokens: TokenBatch, layout: SpliceLayout): Uint8Array {
  const m = new Uint8Array(tokens.batch * tokens.seqLen);
  layout.runs.forEach((starts, b) => {
    for (const s of starts) for (let j = 0; j < layout.nImageTokens; j++) m[b * tokens.seqLen + s + j] = 1;
  });
  return m;
}

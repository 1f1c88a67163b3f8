/**
 * Images as a model takes them: preprocessed pixel values on the host, [n, channels, H, W]
 * row-major float32 (what a Hugging Face image processor returns as `pixel_values`).
 */
import { fail } from '../errors.js';

export interface ImageBatch {
  data: Float32Array;
  shape: [number, number, number, number];
}

export function imageCount(images: ImageBatch | null | undefined): number {
  return images ? images.shape[0] : 0;
}

/** Images i..j (exclusive) of a batch, sharing no memory with it. */
export function sliceImages(images: ImageBatch, start: number, end: number): ImageBatch {
  const [, c, h, w] = images.shape;
  const per = c * h * w;
  return { data: images.data.slice(start * per, end * per), shape: [end - start, c, h, w] };
}

/** Concatenate image batches of one size into one. */
export function concatImages(batches: readonly ImageBatch[]): ImageBatch {
  if (batches.length === 0) fail('no images to concatenate');
  const [, c, h, w] = batches[0].shape;
  for (const b of batches) {
    if (b.shape[1] !== c || b.shape[2] !== h || b.shape[3] !== w) fail(`images of different sizes in one batch: [${batches[0].shape.slice(1)}] and [${b.shape.slice(1)}]`);
  }
  const n = batches.reduce((a, b) => a + b.shape[0], 0);
  const data = new Float32Array(n * c * h * w);
  let off = 0;
  for (const b of batches) (data.set(b.data, off), (off += b.data.length));
  return { data, shape: [n, c, h, w] };
}

/** `times` copies of a batch, one after another (for site-packed patching batches). */
export function repeatImages(images: ImageBatch, times: number): ImageBatch {
  return concatImages(Array.from({ length: times }, () => images));
}

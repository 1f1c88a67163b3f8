/**
 * Images for a vision-language model or tower: a PNG/JPEG goes through the checkpoint's
 * preprocessor_config.json (resize, crop, rescale, normalise) with the image processor of
 * @huggingface/transformers, strictly offline; a `.safetensors` file holding `pixel_values`
 * [n, 3, H, W] (already preprocessed) is used as is. Errors are one line naming the file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HooklensError, fail } from '../errors.js';
import type { VisionConfig } from '../models/config.js';
import { concatImages, imageCount, sliceImages, type ImageBatch } from '../models/image-batch.js';
import { readSafetensors } from './safetensors.js';

export const PREPROCESSOR_CONFIG = 'preprocessor_config.json';

function checkSize(file: string, images: ImageBatch, vision: VisionConfig): void {
  const [, c, h, w] = images.shape;
  if (c !== vision.nChannels || h !== vision.imageSize || w !== vision.imageSize) {
    fail(`${file}: pixel_values have shape [${images.shape.join(', ')}] but the vision tower takes [n, ${vision.nChannels}, ${vision.imageSize}, ${vision.imageSize}]`);
  }
}

/** `pixel_values` [n, C, H, W] or [C, H, W] from a safetensors file. */
export function readPixelValues(file: string, vision: VisionConfig): ImageBatch {
  const { tensors } = readSafetensors(file);
  const t = tensors.get('pixel_values');
  if (!t) fail(`${file}: no tensor 'pixel_values' (tensors: ${[...tensors.keys()].slice(0, 5).join(', ') || 'none'})`);
  const shape = t.shape.length === 3 ? [1, ...t.shape] : t.shape;
  if (shape.length !== 4) fail(`${file}: pixel_values have shape [${t.shape.join(', ')}]; expected [n, ${vision.nChannels}, H, W]`);
  const images: ImageBatch = { data: t.data, shape: shape as ImageBatch['shape'] };
  checkSize(file, images, vision);
  return images;
}

/** The subset of transformers.js's ImageProcessor we use. */
interface Processor {
  (image: unknown): Promise<{ pixel_values: { data: Float32Array; dims: number[] } }>;
  do_resize: boolean;
  size: unknown;
  resample: number;
  get_resize_output_image_size(image: unknown, size: unknown): [number, number];
}
const processors = new Map<string, Promise<Processor>>();

/** The model directory's image processor (cached per directory). */
async function imageProcessor(modelDir: string, imageFile: string): Promise<Processor> {
  const dir = path.resolve(modelDir);
  const cfgFile = path.join(dir, PREPROCESSOR_CONFIG);
  if (!fs.existsSync(cfgFile)) fail(`${imageFile}: the model has no ${PREPROCESSOR_CONFIG} (in ${dir}) to turn an image file into pixel values; give a .safetensors file with pixel_values instead`);
  let p = processors.get(dir);
  if (!p) {
    p = (async () => {
      try {
        JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
      } catch (e) {
        fail(`${cfgFile}: invalid JSON (${(e as Error).message})`);
      }
      const { AutoImageProcessor, env } = await import('@huggingface/transformers');
      env.allowRemoteModels = false;
      env.allowLocalModels = true;
      env.localModelPath = '';
      try {
        return (await AutoImageProcessor.from_pretrained(dir, { local_files_only: true })) as unknown as Processor;
      } catch (e) {
        fail(`${cfgFile}: cannot build the image processor (${(e as Error).message.split('\n')[0]})`);
      }
    })();
    processors.set(dir, p);
  }
  return p;
}

/** PIL resampling codes (preprocessor_config "resample") → sharp kernels. */
const SHARP_KERNELS: Record<number, 'nearest' | 'lanczos3' | 'linear' | 'cubic'> = { 0: 'nearest', 1: 'lanczos3', 2: 'linear', 3: 'cubic', 4: 'linear', 5: 'linear' };

/**
 * Resize as PIL does. Written by hand around sharp's resize because transformers.js resizes with
 * an affine bicubic warp that does not antialias when shrinking: on a smooth 48×40 image it is
 * up to 0.25 off Hugging Face Python's pixel values, sharp's cubic resize 0.008 (one grey level).
 */
async function resizeLikePil(image: { width: number; height: number; channels: number; data: Uint8ClampedArray }, width: number, height: number, resample: number): Promise<unknown> {
  const { default: sharp } = await import('sharp');
  const { RawImage } = await import('@huggingface/transformers');
  const { data, info } = await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), { raw: { width: image.width, height: image.height, channels: image.channels as 1 | 3 | 4 } })
    .resize(width, height, { fit: 'fill', kernel: SHARP_KERNELS[resample] ?? 'cubic' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return new RawImage(new Uint8ClampedArray(data.buffer, data.byteOffset, data.byteLength), info.width, info.height, info.channels as 1 | 3 | 4);
}

/** A PNG/JPEG through the model's image processor: [1, C, H, W]. */
export async function preprocessImageFile(file: string, modelDir: string, vision: VisionConfig): Promise<ImageBatch> {
  if (!fs.existsSync(file)) fail(`${file}: no such image file`);
  const proc = await imageProcessor(modelDir, file);
  const { RawImage } = await import('@huggingface/transformers');
  let image: InstanceType<typeof RawImage>;
  try {
    image = (await RawImage.read(path.resolve(file))).rgb();
  } catch (e) {
    fail(`${file}: cannot read the image (${(e as Error).message.split('\n')[0]})`);
  }
  let out: Awaited<ReturnType<Processor>>;
  try {
    // The processor's own rules give the size; the resampling is done as PIL does; crop, rescale
    // and normalisation are the processor's (its own resize is switched off for the call).
    const resizes = proc.do_resize && proc.size !== undefined;
    let input: unknown = image;
    if (resizes) {
      const [w, h] = proc.get_resize_output_image_size(image, proc.size);
      input = await resizeLikePil(image as never, w, h, proc.resample);
    }
    const saved = proc.do_resize;
    proc.do_resize = false;
    try {
      out = await proc(input);
    } finally {
      proc.do_resize = saved;
    }
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${file}: image preprocessing failed (${(e as Error).message.split('\n')[0]})`);
  }
  const dims = out.pixel_values.dims;
  const images: ImageBatch = { data: Float32Array.from(out.pixel_values.data), shape: dims as ImageBatch['shape'] };
  checkSize(file, images, vision);
  return images;
}

/** Any supported image input for a model directory (PNG/JPEG/WebP or .safetensors). */
export async function loadImages(file: string, modelDir: string, vision: VisionConfig | null, source = modelDir): Promise<ImageBatch> {
  if (!vision) fail(`${file}: an image was given to a text-only model (${source})`);
  if (file.endsWith('.safetensors')) return readPixelValues(file, vision);
  const picked = /^(.+\.safetensors)#(\d+)$/.exec(file);
  if (picked && !fs.existsSync(file)) return pickImage(file, readPixelValues(picked[1], vision), Number(picked[2]));
  return preprocessImageFile(file, modelDir, vision);
}

/** `FILE.safetensors#i`: image i of a batched pixel_values file (batches are how processors save them). */
function pickImage(spec: string, all: ImageBatch, index: number): ImageBatch {
  const n = imageCount(all);
  if (index >= n) fail(`${spec}: image index ${index} out of range (the file holds ${n} image${n === 1 ? '' : 's'})`);
  return sliceImages(all, index, index + 1);
}

/** Several image files (each one or more images) as one batch, in order. */
export async function loadImageList(files: readonly string[], modelDir: string, vision: VisionConfig | null, source = modelDir): Promise<ImageBatch> {
  const batches: ImageBatch[] = [];
  for (const f of files) batches.push(await loadImages(f, modelDir, vision, source));
  return concatImages(batches);
}

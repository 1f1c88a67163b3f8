/**
 * Run prompts through a model and stream the chosen hook activations into an Arrow cache file.
 * Language-model hooks: one row per (prompt, position), with a `modality` column (text / image)
 * for vision-language models. Vision-tower hooks: one row per (prompt, image, patch position),
 * CLS first where the tower has one; projector hooks (hook_image_embeds): one row per (prompt,
 * image, image token). The stages' position axes differ, so one file holds one stage's hooks.
 * Prompts run in small batches; each batch's activations are written and freed before the next.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { ArrowCacheWriter, cacheColumnToArray, type ArrowCache, type ArrowCacheWriterOptions, type HookColumnSpec } from '../io/arrow-cache.js';
import { concatImages, imageCount, type ImageBatch } from '../models/image-batch.js';
import { expandImagePlaceholders, imagePositionMask, spliceLayout } from '../models/stages/splice.js';
import { positionAxis } from './hook-names.js';
import type { HookedModel } from './hooked-model.js';
import type { OnnxForward } from '../onnx/onnx-forward.js';
import { padBatch, promptBatches } from './token-batch.js';
import type { TokenBatch } from '../models/transformer.js';
import type { GraphExtras } from '../models/graph.js';

export interface CacheRunOptions {
  hooks: string[];
  logits?: boolean;
  /** Images per prompt (VLMs: one per placeholder run; standalone towers: the images themselves). */
  images?: (ImageBatch | undefined)[];
  /** Prompts per forward pass; default: as many as fit in a 256-token padded batch. */
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
  /** Checked between batches; when aborted the temp file is removed and nothing is left behind. */
  signal?: AbortSignal;
  /** Record-batch size limits of the file (smaller batches let streaming readers shuffle better). */
  writer?: ArrowCacheWriterOptions;
  /** Run the forwards on onnxruntime instead of tfjs (same values to ~1e-5). */
  onnx?: OnnxForward;
}

/** Per-position shape of a hook (-1 marks the key axis of attention tensors, which varies with length). */
export function perPositionShape(model: HookedModel, name: string): number[] {
  const full = model.hookShape(name, { batch: 1, seqLen: 2, images: 1 }).slice(1);
  const axis = positionAxis(name) - 1;
  const rest = full.filter((_, i) => i !== axis);
  return positionAxis(name) === 2 ? [rest[0], -1] : rest;
}

export async function writeActivationCache(
  model: HookedModel,
  prompts: number[][],
  out: string,
  opts: CacheRunOptions,
): Promise<{ rows: number; bytes: number }> {
  const names = model.resolveHooks(opts.hooks);
  const stageLabel = { vision_tower: 'vision-tower', projector: 'projector', language_model: 'language-model' } as const;
  const stage = names.length ? model.graph.stageOf(names[0]).name : 'language_model';
  const other = names.find((n) => model.graph.stageOf(n).name !== stage);
  if (other) {
    fail(`${stageLabel[stage]} hooks (${names[0]}) and ${stageLabel[model.graph.stageOf(other).name]} hooks (${other}) have different position axes: cache them in two files`);
  }
  // Tower and projector hooks are per image, not per prompt token.
  const towerRows = stage !== 'language_model';
  if (towerRows && opts.logits) fail(`--logits: a ${stageLabel[stage]} cache has one row per image position, not per token; cache logits separately`);
  const images = opts.images ?? [];
  if (images.length > 0 && images.length !== prompts.length) fail(`${images.length} image sets for ${prompts.length} prompts`);
  const wiring = model.graph.llava;
  const seqs = prompts.map((p, i) => {
    if (model.graph.kind !== 'vision-tower' && p.length === 0) fail(`prompt ${i} has no tokens`);
    return wiring ? expandImagePlaceholders(p, wiring.imageTokenIndex, wiring.nImageTokens, `prompt ${i + 1}`).ids : p;
  });
  const columns: HookColumnSpec[] = names.map((name) => ({ name, perPositionShape: perPositionShape(model, name) }));
  if (opts.logits) columns.push({ name: 'logits', perPositionShape: [model.cfg.dVocab] });
  // Later blocks and stages are skipped when no requested hook needs them.
  const stop = opts.logits ? {} : model.graph.stopFor(names);
  const index = towerRows ? { image: true } : wiring ? { modality: true } : {};
  const writer = ArrowCacheWriter.open(out, { model: model.source, columns, index }, opts.writer);
  let rows = 0;
  try {
    const budget = opts.batchSize !== undefined ? { maxPrompts: opts.batchSize } : { maxTokens: BATCH_TOKENS };
    const sized = model.graph.kind === 'vision-tower' ? seqs.map((_, i) => new Array(Math.max(1, imageCount(images[i])) * model.visionCfg!.nPositions).fill(0)) : seqs;
    for (const { start, group } of promptBatches(sized, budget)) {
      if (opts.signal?.aborted) fail('interrupted: no cache file written');
      const groupImages = images.slice(start, start + group.length).filter((x): x is ImageBatch => !!x && imageCount(x) > 0);
      const imgs = groupImages.length ? concatImages(groupImages) : undefined;
      const tokens = model.graph.kind === 'vision-tower' ? model.toTokens({ prompts: [], images: imgs ?? fail(`prompt ${start}: a vision tower needs an image`) }) : { ...padBatch(seqs.slice(start, start + group.length), 'right', 0), ...(imgs ? { images: imgs } : {}) };
      const forward = opts.onnx ? await onnxForward(opts.onnx, tokens, names, stop, !!opts.logits) : tfjsForward(model, tokens, names, stop, !!opts.logits);
      try {
        const host = forward.host;
        if (towerRows) {
          // Row b·P + p of a tower hook is patch position p of image b (images in prompt order).
          let img = 0;
          for (let k = 0; k < group.length; k++) {
            const n = imageCount(images[start + k]);
            for (let j = 0; j < n; j++, img++) {
              const P = host.get(names[0])!.shape[1];
              const cols: Record<string, Float32Array | Float32Array[]> = {};
              for (const [name, { data, shape }] of host) cols[name] = promptRows(name, data, shape, img, P);
              writer.writePrompt(start + k, new Array(P).fill(-1), cols, { image: new Array(P).fill(j) });
              rows += P;
            }
          }
        } else {
          const modality = wiring ? imagePositionMask(tokens, spliceLayout(tokens, wiring.imageTokenIndex, wiring.nImageTokens)) : null;
          seqs.slice(start, start + group.length).forEach((toks, b) => {
            const cols: Record<string, Float32Array | Float32Array[]> = {};
            for (const [n, { data, shape }] of host) cols[n] = promptRows(n, data, shape, b, toks.length);
            const extra = modality ? { modality: modality.subarray(b * tokens.seqLen, b * tokens.seqLen + toks.length) } : {};
            writer.writePrompt(start + b, toks, cols, extra);
            rows += toks.length;
          });
        }
      } finally {
        forward.dispose();
      }
      opts.onProgress?.(start + group.length, prompts.length);
      // Let signal handlers run between batches.
      await new Promise((r) => setImmediate(r));
    }
    await writer.close();
    return { rows, bytes: writer.bytesWritten };
  } catch (e) {
    writer.abort();
    throw e;
  }
}

type HostMap = Map<string, { data: Float32Array; shape: number[] }>;

/** One batch on tfjs: each hook pulled to the host once, then cut per prompt. */
function tfjsForward(model: HookedModel, tokens: Parameters<HookedModel['runWithCache']>[0], names: string[], stop: ReturnType<HookedModel['graph']['stopFor']>, logits: boolean): { host: HostMap; dispose(): void } {
  const r = model.runWithCache(tokens, { names, ...stop });
  const host: HostMap = new Map();
  try {
    for (const n of names) {
      const t = r.cache.get(n);
      host.set(n, { data: t.dataSync() as Float32Array, shape: t.shape });
    }
    if (logits) host.set('logits', { data: r.logits.dataSync() as Float32Array, shape: r.logits.shape });
  } catch (e) {
    r.cache.dispose();
    r.logits.dispose();
    throw e;
  }
  return { host, dispose: () => (r.cache.dispose(), r.logits.dispose()) };
}

/** One batch on onnxruntime: the hooks are graph outputs, already on the host. */
async function onnxForward(onnx: OnnxForward, tokens: TokenBatch, names: string[], stop: GraphExtras, logits: boolean): Promise<{ host: HostMap; dispose(): void }> {
  // Tower-only hooks (visionStopAtLayer): the language model does not run.
  const r = await onnx.run(tokens, { hooks: names, ...(stop.stopAtLayer !== undefined ? { stopAtLayer: stop.stopAtLayer } : {}), ...(stop.visionStopAtLayer !== undefined ? { visionOnly: true } : {}) });
  const host: HostMap = new Map(r.hooks);
  if (logits && r.logits) host.set('logits', r.logits);
  return { host, dispose: () => {} };
}

/** Token budget per forward: on the wasm backend, one long prompt per pass is fastest. */
const BATCH_TOKENS = 256;

/**
 * Rows of batch element b (its first `len` positions): [len × perPos] for position-major hooks, or
 * one Float32Array per query position holding [head, key<len] for attention tensors [b, h, q, k].
 */
function promptRows(name: string, data: Float32Array, shape: number[], b: number, len: number): Float32Array | Float32Array[] {
  if (name !== 'logits' && positionAxis(name) === 2) {
    const [, H, T] = shape;
    const rowsOut: Float32Array[] = [];
    for (let q = 0; q < len; q++) {
      const row = new Float32Array(H * len);
      for (let h = 0; h < H; h++) {
        const off = ((b * H + h) * T + q) * T;
        row.set(data.subarray(off, off + len), h * len);
      }
      rowsOut.push(row);
    }
    return rowsOut;
  }
  const T = shape[1];
  const per = shape.slice(2).reduce((a, c) => a * c, 1);
  return data.slice(b * T * per, (b * T + len) * per);
}

/** A fixed-size column of a cache file as a tf tensor [rows, ...per-position shape] (caller disposes). */
export function cachedActivationTensor(cache: ArrowCache, name: string): tf.Tensor {
  const { shape, data } = cacheColumnToArray(cache, name);
  return tf.tensor(data, shape, 'float32');
}

/**
 * Run prompts through a model and stream the chosen hook activations into an Arrow cache file,
 * one row per (prompt, position). Prompts run in small batches; each batch's activations are
 * written and freed before the next one, so memory stays bounded however many prompts there are.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { ArrowCacheWriter, cacheColumnToArray, type ArrowCache, type ArrowCacheWriterOptions, type HookColumnSpec } from '../io/arrow-cache.js';
import { hookShape, lastLayerNeeded, positionAxis, resolveHookNames } from './hook-names.js';
import type { HookedModel } from './hooked-model.js';
import { padBatch, promptBatches } from './token-batch.js';

export interface CacheRunOptions {
  hooks: string[];
  logits?: boolean;
  /** Prompts per forward pass; default: as many as fit in a 256-token padded batch. */
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
  /** Checked between batches; when aborted the temp file is removed and nothing is left behind. */
  signal?: AbortSignal;
  /** Record-batch size limits of the file (smaller batches let streaming readers shuffle better). */
  writer?: ArrowCacheWriterOptions;
}

/** Per-position shape of a hook (-1 marks the key axis of attention tensors, which varies with length). */
export function perPositionShape(model: HookedModel, name: string): number[] {
  const full = hookShape(model.cfg, name, 1, 2).slice(1);
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
  const names = resolveHookNames(model.cfg, opts.hooks);
  const columns: HookColumnSpec[] = names.map((name) => ({ name, perPositionShape: perPositionShape(model, name) }));
  if (opts.logits) columns.push({ name: 'logits', perPositionShape: [model.cfg.dVocab] });
  prompts.forEach((p, i) => {
    if (p.length === 0) fail(`prompt ${i} has no tokens`);
  });
  // Later blocks, the final norm and the unembedding are skipped when no requested hook needs them.
  const stopAtLayer = opts.logits ? undefined : lastLayerNeeded(model.cfg, names);
  const writer = ArrowCacheWriter.open(out, { model: model.source, columns }, opts.writer);
  let rows = 0;
  try {
    for (const { start, group } of promptBatches(prompts, opts.batchSize !== undefined ? { maxPrompts: opts.batchSize } : { maxTokens: BATCH_TOKENS })) {
      if (opts.signal?.aborted) fail('interrupted: no cache file written');
      const tokens = padBatch(group, 'right', 0);
      const { logits, cache } = model.runWithCache(tokens, { names, stopAtLayer });
      try {
        // Pull each hook to the host once per batch, then cut per prompt.
        const host = new Map<string, { data: Float32Array; shape: number[] }>();
        for (const n of names) {
          const t = cache.get(n);
          host.set(n, { data: t.dataSync() as Float32Array, shape: t.shape });
        }
        if (opts.logits) host.set('logits', { data: logits.dataSync() as Float32Array, shape: logits.shape });
        group.forEach((toks, b) => {
          const cols: Record<string, Float32Array | Float32Array[]> = {};
          for (const [n, { data, shape }] of host) cols[n] = promptRows(n, data, shape, b, toks.length);
          writer.writePrompt(start + b, toks, cols);
          rows += toks.length;
        });
      } finally {
        cache.dispose();
        logits.dispose();
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

/** Token budget per forward: on the wasm backend, one long prompt per pass is fastest. */
const BATCH_TOKENS = 256;

/**
 * Rows of prompt b (its first `len` positions): [len × perPos] for position-major hooks, or one
 * Float32Array per query position holding [head, key<len] for attention tensors [b, h, q, k].
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

/**
 * Seeded sampling from next-token logits (temperature, top-k, top-p / nucleus) and a batched
 * sampling generator on top of HookedModel.
 *
 * Filters apply in the usual Hugging Face order: temperature scales the logits, top-k keeps the
 * k highest, top-p keeps the smallest set of highest-probability tokens whose probability
 * (after temperature and top-k) reaches p. Ties are broken by lower token id so the result does
 * not depend on sort stability. Temperature 0 means greedy (argmax, lowest id on ties).
 *
 * Randomness comes only from the `rng` passed in (e.g. `mulberry32(seed)`): one draw per
 * sampled token (none for greedy), so the same seed gives the same tokens.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { appendColumn, padBatch } from '../hooks/token-batch.js';
import { KvCache } from '../models/kv-cache.js';
import { validateTokens, type TokenBatch } from '../models/transformer.js';
import { mulberry32 } from '../util/random.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 = greedy. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or undefined = no limit). */
  topK?: number;
  /** Nucleus sampling: keep the most likely tokens up to cumulative probability p (1 or undefined = off). */
  topP?: number;
}

/** A random source returning floats in [0, 1). */
export type Rng = () => number;

/** Checks the options; returns them with defaults filled in. */
export function checkSamplingOptions(opts: SamplingOptions = {}): Required<SamplingOptions> {
  const temperature = opts.temperature ?? 1;
  const topK = opts.topK ?? 0;
  const topP = opts.topP ?? 1;
  if (!(Number.isFinite(temperature) && temperature >= 0)) fail(`sampling: temperature must be a finite number >= 0, got ${opts.temperature}`);
  if (!(Number.isInteger(topK) && topK >= 0)) fail(`sampling: top-k must be a non-negative integer, got ${opts.topK}`);
  if (!(Number.isFinite(topP) && topP > 0 && topP <= 1)) fail(`sampling: top-p must be in (0, 1], got ${opts.topP}`);
  return { temperature, topK, topP };
}

function argmax(logits: ArrayLike<number>): number {
  let best = -1;
  let bestV = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > bestV || best < 0) {
      if (Number.isNaN(v)) continue;
      best = i;
      bestV = v;
    }
  }
  if (best < 0) fail('sampling: all logits are NaN');
  return best;
}

/**
 * The candidate tokens after temperature / top-k / top-p and their (renormalised) probabilities,
 * most likely first. Exposed for tests and for callers that want the filtered distribution.
 */
export function filteredDistribution(logits: ArrayLike<number>, opts: SamplingOptions = {}): { ids: Int32Array; probs: Float64Array } {
  const { temperature, topK, topP } = checkSamplingOptions(opts);
  const V = logits.length;
  if (V === 0) fail('sampling: empty logits');
  if (temperature === 0) return { ids: Int32Array.of(argmax(logits)), probs: Float64Array.of(1) };
  const ids: number[] = [];
  for (let i = 0; i < V; i++) if (!Number.isNaN(logits[i]) && logits[i] !== -Infinity) ids.push(i);
  if (ids.length === 0) fail('sampling: no token has a finite logit');
  ids.sort((a, b) => logits[b] - logits[a] || a - b);
  let n = topK > 0 ? Math.min(topK, ids.length) : ids.length;
  // Softmax over the kept candidates, in float64.
  const max = logits[ids[0]] / temperature;
  const p = new Float64Array(n);
  let sum = 0;
  for (let j = 0; j < n; j++) {
    p[j] = Math.exp(logits[ids[j]] / temperature - max);
    sum += p[j];
  }
  for (let j = 0; j < n; j++) p[j] /= sum;
  if (topP < 1) {
    let cum = 0;
    let keep = n;
    for (let j = 0; j < n; j++) {
      cum += p[j];
      if (cum >= topP) {
        keep = j + 1;
        break;
      }
    }
    n = keep;
  }
  const out = new Float64Array(n);
  let s = 0;
  for (let j = 0; j < n; j++) s += p[j];
  for (let j = 0; j < n; j++) out[j] = p[j] / s;
  return { ids: Int32Array.from(ids.slice(0, n)), probs: out };
}

/** Sample one token id from a row of logits. Uses exactly one `rng()` draw unless greedy. */
export function sampleToken(logits: ArrayLike<number>, opts: SamplingOptions, rng: Rng): number {
  const { ids, probs } = filteredDistribution(logits, opts);
  if (ids.length === 1 && (opts.temperature ?? 1) === 0) return ids[0];
  const u = rng();
  let cum = 0;
  for (let j = 0; j < ids.length; j++) {
    cum += probs[j];
    if (u < cum) return ids[j];
  }
  return ids[ids.length - 1]; // rounding: cum may end a hair below 1
}

/** A reusable sampler bound to options and a seeded mulberry32 stream. */
export function makeSampler(opts: SamplingOptions & { seed?: number } = {}): (logits: ArrayLike<number>) => number {
  checkSamplingOptions(opts);
  const rng = mulberry32(opts.seed ?? 0);
  return (logits) => sampleToken(logits, opts, rng);
}

/** Per-sequence seed derived from a base seed and an index (splitmix-style mixing). */
export function deriveSeed(seed: number, index: number): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

export interface SampleGenerateOptions extends SamplingOptions {
  /** Stop each sequence once it reaches this many tokens in total (prompt included). */
  maxTokens: number;
  /** Stop a sequence when it samples EOS (the EOS id is appended). Default true. */
  stopAtEos?: boolean;
  /**
   * Further ids that end a sequence (appended, like EOS). E.g. BOS for llama2.c-style models such
   * as stories260K, which were trained on BOS-separated stories and start a new story with BOS.
   */
  stopTokens?: readonly number[];
  /** Base seed; sequence i draws from mulberry32(deriveSeed(seed, seedOffset + i)). Default 0. */
  seed?: number;
  /** Added to the sequence index when deriving seeds (for generating in several calls). Default 0. */
  seedOffset?: number;
  /** Sequences per forward pass. Default 32. */
  batchSize?: number;
  /** Called after every decoding step with the number of finished sequences. */
  onProgress?: (finished: number, total: number) => void;
  /**
   * Keep past keys/values (default true): each step runs one new position per sequence through
   * the blocks. false reruns every sequence whole at each step (the reference the cache is tested
   * against; logits agree to float rounding, ~1e-6).
   */
  kvCache?: boolean;
}

/**
 * Sample continuations for several prompts (token ids, BOS included if wanted). Each sequence
 * has its own seeded RNG, so its tokens do not depend on which others share its batch (up to
 * float rounding of batched matmuls). Returns prompt + new ids per prompt, the stop token (EOS /
 * stopTokens) included when sampled. Only the last position is unembedded; with the KV cache
 * (default) a batch is left-padded and each step runs one new column, finished rows taking a
 * padding slot until the whole batch is done.
 */
export function sampleGenerate(model: HookedModel, prompts: number[][], opts: SampleGenerateOptions): number[][] {
  checkSamplingOptions(opts);
  const { maxTokens } = opts;
  if (!(Number.isInteger(maxTokens) && maxTokens > 0)) fail(`sampling: maxTokens must be a positive integer, got ${maxTokens}`);
  if (maxTokens > model.cfg.nCtx) fail(`sampling: maxTokens ${maxTokens} exceeds the model context of ${model.cfg.nCtx}`);
  const batchSize = opts.batchSize ?? 32;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) fail(`sampling: batchSize must be a positive integer, got ${batchSize}`);
  const stopAtEos = opts.stopAtEos ?? true;
  const eos = model.cfg.eosTokenId ?? model.tokenizer?.eosTokenId ?? null;
  const stop = new Set(opts.stopTokens ?? []);
  if (stopAtEos && eos !== null) stop.add(eos);
  const seqs = prompts.map((p, i) => {
    if (p.length === 0) fail(`sampling: prompt ${i} has no tokens`);
    validateTokens(model.cfg, padBatch([p]));
    return [...p];
  });
  const rngs = seqs.map((_, i) => mulberry32(deriveSeed(opts.seed ?? 0, (opts.seedOffset ?? 0) + i)));
  const done = seqs.map((s) => s.length >= maxTokens);
  let finished = done.filter(Boolean).length;
  const { dVocab } = model.cfg;
  /** Sample row b's token for sequence i from final-position logits; true when i just finished. */
  const take = (host: Float32Array, b: number, i: number) => {
    const id = sampleToken(host.subarray(b * dVocab, (b + 1) * dVocab), opts, rngs[i]);
    seqs[i].push(id);
    if (seqs[i].length >= maxTokens || stop.has(id)) {
      done[i] = true;
      finished++;
    }
  };

  for (let start = 0; start < seqs.length; start += batchSize) {
    const idx = [...Array(Math.min(batchSize, seqs.length - start)).keys()].map((k) => start + k);
    if (opts.kvCache === false) {
      for (;;) {
        const active = idx.filter((i) => !done[i]);
        if (active.length === 0) break;
        const tokens = padBatch(active.map((i) => seqs[i]), 'right', 0);
        // Logits of each prompt's last real token only (the runtime picks it under right padding).
        const logits = model.run(tokens, { finalPositionOnly: true });
        const host = logits.dataSync() as Float32Array;
        logits.dispose();
        active.forEach((i, b) => take(host, b, i));
        opts.onProgress?.(finished, seqs.length);
      }
    } else {
      sampleBatchCached(model, idx, seqs, done, take);
      opts.onProgress?.(finished, seqs.length);
    }
  }
  return seqs;
}

/**
 * One batch with a KV cache: the unfinished rows, left-padded, then one column per step — the
 * sampled token for a running row, a padding slot (mask 0) for a finished one, so finished rows
 * neither grow nor affect the others.
 */
function sampleBatchCached(model: HookedModel, idx: number[], seqs: number[][], done: boolean[], take: (host: Float32Array, b: number, i: number) => void): void {
  const rows = idx.filter((i) => !done[i]);
  if (rows.length === 0) return;
  const b = rows.length;
  const first = padBatch(rows.map((i) => seqs[i]), 'left', 0);
  let { ids, mask } = first;
  let T = first.seqLen;
  const cache = new KvCache(model.cfg.nLayers, b);
  try {
    for (;;) {
      const batch: TokenBatch = { ids, mask, batch: b, seqLen: T };
      const logits = model.run(batch, { finalPositionOnly: true, kvCache: cache });
      const host = logits.dataSync() as Float32Array;
      logits.dispose();
      const live = rows.map((i) => !done[i]);
      rows.forEach((i, r) => live[r] && take(host, r, i));
      if (rows.every((i) => done[i])) return;
      // Running rows take their new token; finished ones (also those that just finished) a padding slot.
      const next = rows.map((i) => seqs[i][seqs[i].length - 1]);
      ({ ids, mask } = appendColumn(ids, mask, b, T, next, rows.map((i) => !done[i])));
      T++;
    }
  } finally {
    cache.dispose();
  }
}

/**
 * The language-model stage: token embeddings → N generic blocks → final norm → unembed.
 * Everything architecture-specific is in ModelConfig; family files only map weights. A VLM runs
 * the same stage with image embeddings spliced into its token embeddings (spliceEmbeds).
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { applyNorm, linear, ropeTables, type StageContext } from './components.js';
import { runBlocks } from './stages/blocks.js';
import type { ModelConfig } from './config.js';
import type { ImageBatch } from './image-batch.js';
import type { KvCache } from './kv-cache.js';

/**
 * A right- or left-padded batch of token ids, row-major [batch, seqLen]. mask: 1 = real token.
 * A VLM batch also carries its images, in the order their placeholder runs appear (prompt-major).
 */
export interface TokenBatch {
  ids: Int32Array;
  mask: Int32Array;
  batch: number;
  seqLen: number;
  images?: ImageBatch;
}

/** Large finite negative instead of -inf: fully masked (padding) rows stay finite. */
export const MASKED = -1e9;

/** Position ids count real tokens only, so a left-padded prompt sees the same positions as alone. */
export function positionIds(tokens: TokenBatch): Int32Array {
  const { batch, seqLen, mask } = tokens;
  const pos = new Int32Array(batch * seqLen);
  for (let b = 0; b < batch; b++) {
    let n = 0;
    for (let t = 0; t < seqLen; t++) {
      const i = b * seqLen + t;
      pos[i] = Math.max(n - 1 + mask[i], 0);
      n += mask[i];
    }
  }
  return pos;
}

/** Additive attention mask [b, 1, T − fromRow, T]: query rows fromRow.. (a KV cache holds the rest). */
export function maskBias(tokens: TokenBatch, causal: boolean, fromRow = 0): tf.Tensor4D {
  const { batch, seqLen: T, mask } = tokens;
  const Q = T - fromRow;
  const bias = new Float32Array(batch * Q * T);
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < Q; r++) {
      const q = fromRow + r;
      for (let k = 0; k < T; k++) {
        const allowed = mask[b * T + k] === 1 && (!causal || k <= q);
        if (!allowed) bias[(b * Q + r) * T + k] = MASKED;
      }
    }
  }
  return tf.tensor4d(bias, [batch, 1, Q, T]);
}

/** Columns from..T of a row-major [b, T] array. */
function columnsFrom<A extends Int32Array>(a: A, b: number, T: number, from: number): A {
  if (from === 0) return a;
  const out = new (a.constructor as new (n: number) => A)(b * (T - from));
  for (let r = 0; r < b; r++) out.set(a.subarray(r * T + from, (r + 1) * T), r * (T - from));
  return out;
}

export function validateTokens(cfg: ModelConfig, tokens: TokenBatch): void {
  if (tokens.seqLen === 0 || tokens.batch === 0) fail('empty input: no tokens to run');
  if (tokens.ids.length !== tokens.batch * tokens.seqLen) fail(`token batch has ${tokens.ids.length} ids, expected ${tokens.batch}×${tokens.seqLen}`);
  for (let b = 0; b < tokens.batch; b++) {
    let n = 0;
    for (let t = 0; t < tokens.seqLen; t++) n += tokens.mask[b * tokens.seqLen + t];
    if (n > cfg.nCtx) fail(`prompt ${b} has ${n} tokens but the model's context length is ${cfg.nCtx}`);
  }
  for (let i = 0; i < tokens.ids.length; i++) {
    const id = tokens.ids[i];
    if (tokens.mask[i] && (!Number.isInteger(id) || id < 0 || id >= cfg.dVocab)) {
      fail(`token id ${id} at position ${i % tokens.seqLen} of prompt ${Math.floor(i / tokens.seqLen)} is outside the vocabulary (0..${cfg.dVocab - 1})`);
    }
  }
}

export interface ForwardExtras {
  /** Replace all token embeddings ([b, T, d]; training passes one-hot·W_E here). */
  inputsEmbeds?: tf.Tensor;
  /** Change the token embeddings before hook_embed fires (a VLM splices image embeddings in). */
  spliceEmbeds?: (tokenEmbeds: tf.Tensor) => tf.Tensor;
  /** Stop after this block and return its hook_resid_post instead of logits. */
  stopAtLayer?: number;
  /**
   * Unembed only each prompt's last real position: logits [b, 1, vocab]. Patching metrics need
   * nothing else, and the unembedding is a third of a GPT-2 forward. ln_final hooks then see [b, 1, ·].
   */
  finalPositionOnly?: boolean;
  /**
   * Start at block `layer` from a given hook_resid_pre [b, T, d] (e.g. cached from an earlier run
   * of the same tokens): embedding and earlier blocks are skipped and their hooks do not fire.
   */
  resume?: { layer: number; residPre: tf.Tensor };
  /**
   * Past keys/values of the batch's first kvCache.length positions: only the later positions run
   * (their hooks fire, with [b, new positions, …] shapes; attention scores and patterns have the
   * whole prefix on the key axis), logits are theirs, and the cache takes their keys/values.
   */
  kvCache?: KvCache;
}

/** Run the language model; returns logits [b, T, vocab] (or the residual stream with stopAtLayer). */
export function transformerForward(ctx: StageContext, tokens: TokenBatch, extras: ForwardExtras = {}): tf.Tensor {
  const cfg = ctx.cfg as ModelConfig;
  const { batch: b, seqLen: T } = tokens;
  const kv = extras.kvCache;
  const past = kv?.length ?? 0;
  if (kv) checkKvUse(kv, tokens, extras);
  // With a KV cache only positions past.. run; everything below is over those Tn positions.
  const Tn = T - past;
  const pos = columnsFrom(positionIds(tokens), b, T, past);
  const start = extras.resume;
  let resid: tf.Tensor;
  if (start) {
    // Resume from a known residual stream: layers before start.layer are not recomputed.
    if (!tf.util.arraysEqual(start.residPre.shape, [b, T, cfg.dModel])) fail(`resume: residual stream has shape [${start.residPre.shape}], expected [${b},${T},${cfg.dModel}]`);
    resid = start.residPre;
  } else {
    // Padding slots may hold any id; gather needs an in-range one.
    const safeIds = columnsFrom(tokens.ids.map((id, i) => (tokens.mask[i] ? id : 0)), b, T, past);
    let embed = extras.inputsEmbeds ?? tf.gather(ctx.param('embed.W_E'), tf.tensor2d(safeIds, [b, Tn], 'int32'));
    if (extras.spliceEmbeds) embed = extras.spliceEmbeds(embed);
    embed = ctx.hook('hook_embed', embed);
    resid = embed;
    if (cfg.positional === 'learned') {
      // Without left padding positions are past..T-1: a slice (differentiable everywhere, unlike
      // gather on wasm, so training works) gives the same rows.
      const plain = pos.every((p, i) => p === past + (i % Tn));
      const W_pos = ctx.param('pos_embed.W_pos');
      const rows = plain ? tf.tile(W_pos.slice([past, 0], [Tn, cfg.dModel]).expandDims(0), [b, 1, 1]) : tf.gather(W_pos, tf.tensor2d(pos, [b, Tn], 'int32'));
      const posEmbed = ctx.hook('hook_pos_embed', rows);
      resid = tf.add(embed, posEmbed);
    }
  }
  const attnInputs = {
    maskBias: maskBias(tokens, cfg.causal, past),
    rope: cfg.positional === 'rope' ? ropeTables(cfg, pos, b, Tn) : undefined,
    ...(kv ? { kvCache: kv } : {}),
  };
  const lastLayer = extras.stopAtLayer ?? cfg.nLayers - 1;
  resid = runBlocks(ctx, resid, attnInputs, start?.layer ?? 0, lastLayer);
  kv?.advance(Tn);
  if (extras.stopAtLayer !== undefined) return resid;
  if (extras.finalPositionOnly) {
    // A one-hot sum (not gather) picks the last real position: differentiable on every backend.
    const newPart = { ...tokens, ids: columnsFrom(tokens.ids, b, T, past), mask: columnsFrom(tokens.mask, b, T, past), seqLen: Tn };
    resid = tf.sum(tf.mul(resid, lastPositionOneHot(newPart)), 1, true);
  }
  const final = applyNorm(ctx, resid, 'ln_final');
  return linear(ctx, final, 'unembed.W_U', 'unembed.b_U');
}

/** A KV cache continues one batch: same rows, at least one new position, the whole stack run. */
function checkKvUse(kv: KvCache, tokens: TokenBatch, extras: ForwardExtras): void {
  if (kv.batch !== tokens.batch) fail(`kv cache holds ${kv.batch} prompts, the batch has ${tokens.batch}`);
  if (kv.length >= tokens.seqLen) fail(`kv cache holds ${kv.length} positions: the batch of ${tokens.seqLen} has no new ones`);
  if (extras.resume || extras.stopAtLayer !== undefined || extras.inputsEmbeds) fail('kv cache: resume, stopAtLayer and inputsEmbeds run part of the stack or replace the prefix; not with a cache');
  if (kv.length > 0 && extras.spliceEmbeds) fail('kv cache: image embeddings are spliced in the prompt pass, not in later steps');
}

/** [b, T, 1] with 1 at each prompt's last real token. */
export function lastPositionOneHot(tokens: TokenBatch): tf.Tensor3D {
  const { batch, seqLen: T, mask } = tokens;
  const oneHot = new Float32Array(batch * T);
  for (let b = 0; b < batch; b++) {
    let last = 0;
    for (let t = 0; t < T; t++) if (mask[b * T + t]) last = t;
    oneHot[b * T + last] = 1;
  }
  return tf.tensor3d(oneHot, [batch, T, 1]);
}

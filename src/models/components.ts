/**
 * The pieces of a transformer block as plain tf functions. Each one fires its TransformerLens hook
 * points through `ctx.hook`, which returns the (possibly replaced) activation. Whether hooks are
 * registered or not, exactly the same ops run, so forward values do not depend on hooking.
 */
import * as tf from '@tensorflow/tfjs';
import type { ActivationKind, BlockConfig } from './config.js';
import { halfRuleMatMul, halfRuleProduct, identityRule, stopGradient, type RelpRule } from './grad-rules.js';
import type { KvCache } from './kv-cache.js';

/**
 * What a stage's code sees of the runtime. Names are local to the stage: the runtime prefixes
 * them with the stage's weight namespace and hook prefix ('vision.' for a tower, '' for the
 * language model), so the same block code serves every stage of a model.
 */
export interface StageContext {
  cfg: BlockConfig;
  /** Fire hook `name` on `x`; returns x or a replacement of the same shape. */
  hook<T extends tf.Tensor>(name: string, x: T): T;
  /** True when some consumer asked for this (opt-in) hook. */
  wants(name: string): boolean;
  param(name: string): tf.Tensor;
  maybeParam(name: string): tf.Tensor | undefined;
  /** RelP rules active in this pass (modified gradients; forward values unchanged). */
  rules: ReadonlySet<RelpRule>;
  /** Set when only activation gradients are needed: Wᵀ of a weight, cached by the model. */
  transposedParam?: (name: string) => tf.Tensor;
}

/** The name the language-model code has always used for its context. */
export type BlockContext = StageContext;

/**
 * x·W (+ b) on the last axis of a [..., in] tensor, W the weight named `wName` stored [in, out].
 * When the context computes gradients only for activations (weights constant), the backward pass
 * uses a cached Wᵀ: tfjs's own matMul gradient, dy·Wᵀ as a transposed-operand matMul, runs ~10×
 * slower on wasm. Forward values are the same matMul either way.
 */
export function linear(ctx: BlockContext, x: tf.Tensor, wName: string, bName?: string): tf.Tensor {
  const W = ctx.param(wName);
  const b = bName ? ctx.maybeParam(bName) : undefined;
  const inDim = x.shape[x.rank - 1]!;
  const lead = x.shape.slice(0, -1) as number[];
  const x2 = x.reshape([-1, inDim]) as tf.Tensor2D;
  const y = ctx.transposedParam ? matMulConstantWeight(x2, W, () => ctx.transposedParam!(wName)) : tf.matMul(x2, W as tf.Tensor2D);
  const yb = b ? tf.add(y, b) : y;
  return yb.reshape([...lead, W.shape[1]!]);
}

function matMulConstantWeight(x2: tf.Tensor2D, W: tf.Tensor, Wt: () => tf.Tensor): tf.Tensor {
  // W is captured, not an input: no gradient is computed for it.
  const f = tf.customGrad(((x: tf.Tensor) => ({
    value: tf.matMul(x as tf.Tensor2D, W as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor) => tf.matMul(dy as tf.Tensor2D, Wt() as tf.Tensor2D),
  })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(x2);
}

/** LayerNorm / RMSNorm with TransformerLens hooks `{prefix}.hook_scale` and `.hook_normalized`. */
export function applyNorm(ctx: BlockContext, x: tf.Tensor, prefix: string): tf.Tensor {
  const { cfg } = ctx;
  const w = ctx.param(`${prefix}.w`);
  const h = prefix;
  if (cfg.norm === 'layernorm') {
    const centred = tf.sub(x, tf.mean(x, -1, true));
    const scale = ctx.hook(`${h}.hook_scale`, tf.sqrt(tf.add(tf.mean(tf.square(centred), -1, true), cfg.normEps)));
    const b = ctx.maybeParam(`${prefix}.b`);
    const scaled = tf.mul(tf.div(centred, normDenominator(ctx, scale)), w);
    return ctx.hook(`${h}.hook_normalized`, b ? tf.add(scaled, b) : scaled);
  }
  // RMSNorm: TransformerLens hooks the normalised value before the weight.
  const scale = ctx.hook(`${h}.hook_scale`, tf.sqrt(tf.add(tf.mean(tf.square(x), -1, true), cfg.normEps)));
  const normalized = ctx.hook(`${h}.hook_normalized`, tf.div(x, normDenominator(ctx, scale)));
  return tf.mul(normalized, w);
}

/** LN rule: the norm's scale is a constant in the backward pass. */
function normDenominator(ctx: BlockContext, scale: tf.Tensor): tf.Tensor {
  return ctx.rules.has('LN') ? stopGradient(scale) : scale;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export function activation(kind: ActivationKind, x: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'gelu_new': {
      // 0.5·x·(1 + tanh(u)) with u = √(2/π)·(x + 0.044715·x³), written as x·sigmoid(2u): the same
      // function (to float32 rounding, ~5e-7) in fewer, cheaper kernels — wasm's tanh and pow are slow.
      const twoU = tf.mul(x, tf.add(tf.mul(tf.square(x), 2 * SQRT_2_OVER_PI * 0.044715), 2 * SQRT_2_OVER_PI));
      return tf.mul(x, tf.sigmoid(twoU));
    }
    case 'gelu':
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
    case 'silu':
      return tf.mul(x, tf.sigmoid(x));
    case 'relu':
      return tf.relu(x);
    case 'quick_gelu':
      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
  }
}

/** Rotary tables for positions [b, T]: cos and sin of shape [b, T, 1, rotaryDim] (rotate-half layout). */
export function ropeTables(cfg: BlockConfig, positions: Int32Array, b: number, T: number): { cos: tf.Tensor; sin: tf.Tensor } {
  const rd = cfg.rotaryDim;
  const half = rd / 2;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / Math.pow(cfg.ropeTheta, (2 * i) / rd);
  const cos = new Float32Array(b * T * rd);
  const sin = new Float32Array(b * T * rd);
  for (let r = 0; r < b * T; r++) {
    const p = positions[r];
    for (let i = 0; i < half; i++) {
      // float32 product, as HF computes freqs = position * inv_freq in float32.
      const angle = Math.fround(p * invFreq[i]);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[r * rd + i] = c;
      cos[r * rd + i + half] = c;
      // rotate_half(x) = [-x2, x1]; folding the sign into sin lets us use a plain half swap.
      sin[r * rd + i] = -s;
      sin[r * rd + i + half] = s;
    }
  }
  return { cos: tf.tensor4d(cos, [b, T, 1, rd]), sin: tf.tensor4d(sin, [b, T, 1, rd]) };
}

/** Rotate q or k [b, T, h, dh] with HF rotate-half RoPE on the first rotaryDim dims. */
export function applyRope(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor, rotaryDim: number): tf.Tensor {
  const dh = x.shape[3]!;
  const half = rotaryDim / 2;
  const rot = rotaryDim === dh ? x : x.slice([0, 0, 0, 0], [-1, -1, -1, rotaryDim]);
  // [x1, x2] → [x2, x1] as one matMul with a permutation matrix: exact (one non-zero term per
  // output) and on wasm ~10× faster than split + concat, which dominated small models' forwards.
  const perm = new Float32Array(rotaryDim * rotaryDim);
  for (let j = 0; j < rotaryDim; j++) perm[((j + half) % rotaryDim) * rotaryDim + j] = 1;
  const [b, T, n] = rot.shape as number[];
  const swapped = tf.matMul(rot.reshape([b * T * n, rotaryDim]), tf.tensor2d(perm, [rotaryDim, rotaryDim])).reshape(rot.shape);
  const rotated = tf.add(tf.mul(rot, cos), tf.mul(swapped, sin));
  if (rotaryDim === dh) return rotated;
  return tf.concat([rotated, x.slice([0, 0, 0, rotaryDim], [-1, -1, -1, dh - rotaryDim])], 3);
}

export interface AttentionInputs {
  /**
   * Additive mask [b, 1, T, Tk]: 0 where attention is allowed, a large negative number elsewhere;
   * none = attend everywhere (ViT). Tk = T, or past + T with a KV cache.
   */
  maskBias?: tf.Tensor;
  rope?: { cos: tf.Tensor; sin: tf.Tensor };
  /** Past keys/values: the new positions' k/v are appended and attention reads all of them. */
  kvCache?: KvCache;
}

/**
 * GQA/MQA: [b, K, a, c] key/value-head tensors → [b, H, a, c], query head j reading kv head
 * floor(j / (H/K)) as HF's repeat_kv. A rank-4 tile: tfjs has no rank-5 tile gradient, and wasm
 * lacks the kernel gather's gradient needs.
 */
export function repeatKvHeads(x: tf.Tensor, H: number): tf.Tensor {
  const [b, K, a, c] = x.shape as number[];
  if (K === H) return x;
  return tf.tile(x.reshape([b, K, 1, a * c]), [1, 1, H / K, 1]).reshape([b, H, a, c]);
}

/** Each head's write into the residual stream (no b_O): z [b, T, H, dh] · W_O[h] → [b, T, H, d]. */
export function headResults(z: tf.Tensor, W_O: tf.Tensor): tf.Tensor {
  const [b, T, H, dh] = z.shape as number[];
  const d = W_O.shape[1]!;
  const zByHead = tf.transpose(z.reshape([b * T, H, dh]), [1, 0, 2]);
  return tf.transpose(tf.matMul(zByHead, W_O.reshape([H, dh, d])), [1, 0, 2]).reshape([b, T, H, d]);
}

/** Per-slice work (multiply-adds) from which attention's batched matMuls run slice by slice on wasm. */
const PER_SLICE_MIN_MACS = 1 << 21;

/**
 * [n, m, k] × [n, k, p] for attention. tfjs-wasm's BatchMatMul runs at ~1 GFLOP/s while a 2-D
 * matMul goes through XNNPACK at 10–20, so on wasm large slices are multiplied one by one
 * (measured: [12,512,64]×[12,64,512] 428 → 59 ms, [12,256,64]×[12,64,256] 95 → 22 ms); below
 * ~2M multiply-adds a slice the slicing and stacking cost more than they save ([180,15,64]×
 * [180,64,15]: 3 → 165 ms). Same products either way (float rounding aside); gradients flow.
 */
function attentionMatMul(a: tf.Tensor3D, b: tf.Tensor3D): tf.Tensor3D {
  const [n, m, k] = a.shape;
  if (n === 1 || m * k * b.shape[2] < PER_SLICE_MIN_MACS || tf.getBackend() !== 'wasm') return tf.matMul(a, b);
  const bs = tf.unstack(b) as tf.Tensor2D[];
  return tf.stack((tf.unstack(a) as tf.Tensor2D[]).map((x, i) => tf.matMul(x, bs[i]))) as tf.Tensor3D;
}

/** Multi-head attention (MHA / GQA / MQA) with TransformerLens hooks; returns hook_attn_out. */
export function attention(ctx: BlockContext, x: tf.Tensor, l: number, inp: AttentionInputs): tf.Tensor {
  const { cfg } = ctx;
  const p = `blocks.${l}.attn.`;
  const w = `blocks.${l}.attn.`;
  const [b, T] = x.shape as [number, number, number];
  const { nHeads: H, nKvHeads: K, dHead: dh } = cfg;

  let q = ctx.hook(p + 'hook_q', linear(ctx, x, w + 'W_Q', w + 'b_Q').reshape([b, T, H, dh]));
  let k = ctx.hook(p + 'hook_k', linear(ctx, x, w + 'W_K', w + 'b_K').reshape([b, T, K, dh]));
  const v = ctx.hook(p + 'hook_v', linear(ctx, x, w + 'W_V', w + 'b_V').reshape([b, T, K, dh]));
  if (inp.rope) {
    q = ctx.hook(p + 'hook_rot_q', applyRope(q, inp.rope.cos, inp.rope.sin, cfg.rotaryDim));
    k = ctx.hook(p + 'hook_rot_k', applyRope(k, inp.rope.cos, inp.rope.sin, cfg.rotaryDim));
  }
  // Heads first; keys pre-transposed to [.., dh, T] so the score matmul needs no transposed operand.
  // GQA: query head j reads kv head floor(j / G), G = H/K (HF's repeat_kv). The G query heads of a
  // kv head are contiguous, so [b, H, T, dh] is [b·K, G·T, dh]: one matmul per kv head, no repeat.
  const G = H / K;
  const qh = tf.transpose(q, [0, 2, 1, 3]).reshape([b * K, G * T, dh]);
  let kh = tf.transpose(k, [0, 2, 3, 1]).reshape([b * K, dh, T]) as tf.Tensor3D;
  let vh = tf.transpose(v, [0, 2, 1, 3]).reshape([b * K, T, dh]) as tf.Tensor3D;
  if (inp.kvCache) ({ k: kh, v: vh } = inp.kvCache.extend(l, kh, vh));
  const Tk = kh.shape[2];
  // AttnHalf rule (AttnLRP): both bilinear products split their gradient half and half.
  const bilinear = ctx.rules.has('AttnHalf') ? halfRuleMatMul(attentionMatMul) : attentionMatMul;
  const raw = bilinear(qh as tf.Tensor3D, kh).reshape([b, H, T, Tk]);
  const scaled = tf.mul(raw, 1 / Math.sqrt(dh));
  const scores = ctx.hook(p + 'hook_attn_scores', inp.maskBias ? tf.add(scaled, inp.maskBias) : scaled);
  const pattern = ctx.hook(p + 'hook_pattern', tf.softmax(scores, -1));
  // AH rule: the attention pattern is a constant in the backward pass.
  const mixing = ctx.rules.has('AH') ? stopGradient(pattern) : pattern;
  const zh = bilinear(mixing.reshape([b * K, G * T, Tk]) as tf.Tensor3D, vh).reshape([b, H, T, dh]);
  const z = ctx.hook(p + 'hook_z', tf.transpose(zh, [0, 2, 1, 3]));
  if (!ctx.wants(p + 'hook_result')) return linear(ctx, z.reshape([b, T, H * dh]), w + 'W_O', w + 'b_O');
  const result = ctx.hook(p + 'hook_result', headResults(z, ctx.param(w + 'W_O')));
  const b_O = ctx.maybeParam(w + 'b_O');
  const out = tf.sum(result, 2);
  return b_O ? tf.add(out, b_O) : out;
}

/** An elementwise nonlinearity, with the Identity rule's gradient when RelP asks for it. */
export function applyActivation(ctx: StageContext, x: tf.Tensor, kind: ActivationKind = ctx.cfg.act): tf.Tensor {
  const act = (v: tf.Tensor) => activation(kind, v);
  return ctx.rules.has('Identity') ? identityRule(act)(x) : act(x);
}

/** MLP (standard or gated) with hooks mlp.hook_pre[, hook_pre_linear], mlp.hook_post. */
export function mlp(ctx: BlockContext, x: tf.Tensor, l: number): tf.Tensor {
  const { cfg } = ctx;
  const p = `blocks.${l}.mlp.`;
  const w = `blocks.${l}.mlp.`;
  let post: tf.Tensor;
  if (cfg.mlp === 'gated') {
    const pre = ctx.hook(p + 'hook_pre', linear(ctx, x, w + 'W_gate', w + 'b_gate'));
    const preLinear = ctx.hook(p + 'hook_pre_linear', linear(ctx, x, w + 'W_in', w + 'b_in'));
    const gate = applyActivation(ctx, pre);
    post = ctx.hook(p + 'hook_post', ctx.rules.has('Half') ? halfRuleProduct(gate, preLinear) : tf.mul(gate, preLinear));
  } else {
    const pre = ctx.hook(p + 'hook_pre', linear(ctx, x, w + 'W_in', w + 'b_in'));
    post = ctx.hook(p + 'hook_post', applyActivation(ctx, pre));
  }
  return linear(ctx, post, w + 'W_out', w + 'b_out');
}

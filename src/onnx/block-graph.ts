/**
 * The generic pre-norm transformer block as ONNX nodes, op for op the tfjs block
 * (components.ts, stages/blocks.ts): the same norms, activations, rotate-half RoPE, GQA grouping
 * and weights ([in, out], as loaded). Like the tfjs block it reads only a BlockConfig, so the
 * language model and a ViT tower are emitted by the same code; names are local to the stage and
 * the stage's owner maps them to its weight namespace and hook prefix.
 */
import type { HookedModel } from '../hooks/hooked-model.js';
import type { ActivationKind, BlockConfig } from '../models/config.js';
import { FLOAT, type GraphBuilder } from './graph-builder.js';

/** What block code sees of the graph it is emitted into (all names local to the stage). */
export interface StageEmitter {
  g: GraphBuilder;
  cfg: BlockConfig;
  /** Initializer of weight `name`. */
  W(name: string): string;
  maybeW(name: string): string | null;
  /** Hook point `name` on `value`; returns the value later nodes read (patched, edited or as is). */
  hook(name: string, value: string): string;
}

export interface BlockInputs {
  /** Additive mask [b, 1, T, Tk] (0 / −1e9); none = attend everywhere (ViT). */
  maskBias?: string;
  rope?: { cos: string; sin: string };
  /**
   * Past keys [b, K, dh, P] / values [b, K, P, dh] of block l as graph inputs past_k_{l} /
   * past_v_{l}; the concatenations become outputs present_k_{l} / present_v_{l}.
   */
  kvCache?: { inputs: string[]; presents: string[] };
  /**
   * One-hot of each row's final position [b, T, 1]: the last block emitted computes keys and
   * values at every position but queries, attention output and MLP at that one only, and returns
   * [b, 1, d] — all a final-position readout needs (the MLP and Q/O projections are ~5/6 of a
   * block). Hooks of that block past ln1 then see one position; the selection is exact (x·1 + 0s).
   */
  finalRow?: string;
}

/** Row `onehot` of x along `axis` (x·onehot summed over the axis, keepdims): exact for finite x. */
export function selectRow(g: GraphBuilder, x: string, onehot: string, axis: number, rank: number): string {
  const shape = [0, 0, 0, 0].slice(0, rank).map((_, i) => (i === 0 ? 0 : i === axis ? -1 : 1));
  const oh = g.reshape(onehot, shape);
  return g.op('ReduceSum', [g.mul(x, oh), g.constant([axis], [1], 'int64')], { keepdims: 1 });
}

/** The model's weights as initializers of `g`, by full name (prefix + local name). */
export function modelWeights(g: GraphBuilder, model: HookedModel, prefix = ''): Pick<StageEmitter, 'W' | 'maybeW'> {
  const W = (name: string): string => {
    const t = model.weight(prefix + name);
    return g.weight(prefix + name, t.dataSync() as Float32Array, t.shape);
  };
  return { W, maybeW: (name) => (model.hasWeight(prefix + name) ? W(name) : null) };
}

/** True for hooks of the vision tower and projector stages (the vision graph's), false for the language model's. */
export function isVisionStageHook(model: HookedModel, name: string): boolean {
  return model.graph.stageOf(name).name !== 'language_model';
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export function emitLinear(s: StageEmitter, x: string, w: string, b: string): string {
  const y = s.g.matMul(x, s.W(w));
  const bias = s.maybeW(b);
  return bias ? s.g.add(y, bias) : y;
}

/** LayerNorm / RMSNorm with hooks {prefix}.hook_scale and .hook_normalized. */
export function emitNorm(s: StageEmitter, x: string, prefix: string): string {
  const { g, cfg } = s;
  const eps = g.scalar(cfg.normEps);
  if (cfg.norm === 'layernorm') {
    const centred = g.sub(x, g.op('ReduceMean', [x], { axes: [-1], keepdims: 1 }));
    const scale = s.hook(`${prefix}.hook_scale`, g.op('Sqrt', [g.add(g.op('ReduceMean', [g.mul(centred, centred)], { axes: [-1], keepdims: 1 }), eps)]));
    const scaled = g.mul(g.div(centred, scale), s.W(`${prefix}.w`));
    const b = s.maybeW(`${prefix}.b`);
    return s.hook(`${prefix}.hook_normalized`, b ? g.add(scaled, b) : scaled);
  }
  const scale = s.hook(`${prefix}.hook_scale`, g.op('Sqrt', [g.add(g.op('ReduceMean', [g.mul(x, x)], { axes: [-1], keepdims: 1 }), eps)]));
  return g.mul(s.hook(`${prefix}.hook_normalized`, g.div(x, scale)), s.W(`${prefix}.w`));
}

export function emitActivation(g: GraphBuilder, x: string, kind: ActivationKind): string {
  switch (kind) {
    case 'gelu_new': {
      // x·sigmoid(2u), as the tfjs forward computes tanh-GELU.
      const twoU = g.mul(x, g.add(g.mul(g.mul(x, x), g.scalar(2 * SQRT_2_OVER_PI * 0.044715)), g.scalar(2 * SQRT_2_OVER_PI)));
      return g.mul(x, g.op('Sigmoid', [twoU]));
    }
    case 'gelu':
      return g.mul(g.mul(x, g.scalar(0.5)), g.add(g.op('Erf', [g.mul(x, g.scalar(Math.SQRT1_2))]), g.scalar(1)));
    case 'silu':
      return g.mul(x, g.op('Sigmoid', [x]));
    case 'relu':
      return g.op('Relu', [x]);
    case 'quick_gelu':
      return g.mul(x, g.op('Sigmoid', [g.mul(x, g.scalar(1.702))]));
  }
}

function emitRope(s: StageEmitter, x: string, cos: string, sin: string): string {
  const { g, cfg } = s;
  const rd = cfg.rotaryDim;
  const dh = cfg.dHead;
  const half = rd / 2;
  const sl = (from: number, to: number) => g.op('Slice', [x, g.constant([from], [1], 'int64'), g.constant([to], [1], 'int64'), g.constant([3], [1], 'int64')]);
  const rot = rd === dh ? x : sl(0, rd);
  const perm = new Array<number>(rd * rd).fill(0);
  for (let j = 0; j < rd; j++) perm[((j + half) % rd) * rd + j] = 1;
  const swapped = g.matMul(rot, g.constant(perm, [rd, rd]));
  const rotated = g.add(g.mul(rot, cos), g.mul(swapped, sin));
  return rd === dh ? rotated : g.op('Concat', [rotated, sl(rd, dh)], { axis: 3 });
}

/** `finalRow`: queries (and their mask row and rotary angles) at each row's final position only. */
function emitAttention(s: StageEmitter, x: string, l: number, inp: BlockInputs, finalRow?: string): string {
  const { g, cfg } = s;
  const { nHeads: H, nKvHeads: K, dHead: dh } = cfg;
  const p = `blocks.${l}.attn.`;
  const qIn = finalRow ? selectRow(g, x, finalRow, 1, 3) : x;
  let q = s.hook(p + 'hook_q', g.reshape(emitLinear(s, qIn, p + 'W_Q', p + 'b_Q'), [0, 0, H, dh]));
  let k = s.hook(p + 'hook_k', g.reshape(emitLinear(s, x, p + 'W_K', p + 'b_K'), [0, 0, K, dh]));
  const v = s.hook(p + 'hook_v', g.reshape(emitLinear(s, x, p + 'W_V', p + 'b_V'), [0, 0, K, dh]));
  if (inp.rope) {
    const { cos, sin } = inp.rope;
    q = s.hook(p + 'hook_rot_q', finalRow ? emitRope(s, q, selectRow(g, cos, finalRow, 1, 4), selectRow(g, sin, finalRow, 1, 4)) : emitRope(s, q, cos, sin));
    k = s.hook(p + 'hook_rot_k', emitRope(s, k, cos, sin));
  }
  const maskBias = inp.maskBias && finalRow ? selectRow(g, inp.maskBias, finalRow, 2, 4) : inp.maskBias;
  // As in the tfjs forward: the G query heads of a kv head as one [G·T, dh] block per kv head.
  const qh = g.reshape(g.transpose(q, [0, 2, 1, 3]), [0, K, -1, dh]);
  let kh = g.transpose(k, [0, 2, 3, 1]);
  let vh = g.transpose(v, [0, 2, 1, 3]);
  if (inp.kvCache) {
    inp.kvCache.inputs.push(g.input(`past_k_${l}`, FLOAT, ['batch', K, dh, 'past']), g.input(`past_v_${l}`, FLOAT, ['batch', K, 'past', dh]));
    kh = g.op('Concat', [`past_k_${l}`, kh], { axis: 3 });
    vh = g.op('Concat', [`past_v_${l}`, vh], { axis: 2 });
    g.output(`present_k_${l}`, kh);
    g.output(`present_v_${l}`, vh);
    inp.kvCache.presents.push(`present_k_${l}`, `present_v_${l}`);
  }
  const raw = g.reshape(g.matMul(qh, kh), [0, H, -1, 0]);
  const scaled = g.mul(raw, g.scalar(1 / Math.sqrt(dh)));
  const scores = s.hook(p + 'hook_attn_scores', maskBias ? g.add(scaled, maskBias) : scaled);
  const pattern = s.hook(p + 'hook_pattern', g.op('Softmax', [scores], { axis: -1 }));
  const zh = g.reshape(g.matMul(g.reshape(pattern, [0, K, -1, 0]), vh), [0, H, -1, dh]);
  const z = s.hook(p + 'hook_z', g.transpose(zh, [0, 2, 1, 3]));
  return emitLinear(s, g.reshape(z, [0, 0, H * dh]), p + 'W_O', p + 'b_O');
}

function emitMlp(s: StageEmitter, x: string, l: number): string {
  const { g, cfg } = s;
  const p = `blocks.${l}.mlp.`;
  let post: string;
  if (cfg.mlp === 'gated') {
    const pre = s.hook(p + 'hook_pre', emitLinear(s, x, p + 'W_gate', p + 'b_gate'));
    const preLinear = s.hook(p + 'hook_pre_linear', emitLinear(s, x, p + 'W_in', p + 'b_in'));
    post = s.hook(p + 'hook_post', g.mul(emitActivation(g, pre, cfg.act), preLinear));
  } else {
    post = s.hook(p + 'hook_post', emitActivation(g, s.hook(p + 'hook_pre', emitLinear(s, x, p + 'W_in', p + 'b_in')), cfg.act));
  }
  return emitLinear(s, post, p + 'W_out', p + 'b_out');
}

/** Blocks from..to (inclusive) on the residual stream; returns block `to`'s hook_resid_post. */
export function emitBlocks(s: StageEmitter, resid: string, from: number, to: number, inp: BlockInputs): string {
  const { g } = s;
  for (let l = from; l <= to; l++) {
    const hp = `blocks.${l}.`;
    resid = s.hook(hp + 'hook_resid_pre', resid);
    const finalRow = l === to ? inp.finalRow : undefined;
    const attnOut = s.hook(hp + 'hook_attn_out', emitAttention(s, emitNorm(s, resid, `${hp}ln1`), l, inp, finalRow));
    if (finalRow) resid = selectRow(g, resid, finalRow, 1, 3);
    resid = s.hook(hp + 'hook_resid_mid', g.add(resid, attnOut));
    const mlpOut = s.hook(hp + 'hook_mlp_out', emitMlp(s, emitNorm(s, resid, `${hp}ln2`), l));
    resid = s.hook(hp + 'hook_resid_post', g.add(resid, mlpOut));
  }
  return resid;
}

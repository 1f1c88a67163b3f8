/**
 * The language-model stage as an ONNX graph, op for op the tfjs forward (components.ts): the same
 * norms, activations, rotate-half RoPE, GQA grouping and weights ([in, out], as loaded). Each
 * requested hook point becomes an extra graph output with the TransformerLens name and shape, so a
 * forward that only reads activations runs entirely in onnxruntime.
 *
 * Inputs: input_ids int64 [b, T]; mask_bias float [b, 1, T, T] (0 / −1e9, as maskBias());
 * positions int64 [b, T] (learned positions) or rope_cos / rope_sin float [b, T, 1, rotaryDim]
 * (as ropeTables()); last_onehot float [b, T, 1] when only the final position is unembedded.
 * Output: logits [b, T or 1, vocab], then the hooks in the order asked.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { ActivationKind, ModelConfig } from '../models/config.js';
import { FLOAT, GraphBuilder, INT64 } from './graph-builder.js';

export interface LmGraphOptions {
  hooks: readonly string[];
  finalPositionOnly?: boolean;
  /** Stop after this block: no logits output (as stopAtLayer); the residual is output 'resid_out'. */
  stopAtLayer?: number;
  /**
   * Start at this block from input 'resid_in' [b, T, d] (its hook_resid_pre) instead of the ids;
   * nLayers = just the head (final norm and unembedding).
   */
  fromLayer?: number;
  /**
   * Replace hook `hooks[i]` by x + mask·(src − x): inputs patch_mask_{i} (broadcastable to the
   * hook's shape, 0/1; a scalar 0 leaves the hook alone) and patch_src_{i} — activation patching
   * as graph inputs.
   */
  patch?: { hooks: readonly string[] };
  /**
   * Incremental decoding: inputs past_k_{l} [b, K, dh, P] and past_v_{l} [b, K, P, dh] (P may be
   * 0), outputs present_k_{l} / present_v_{l} with the new positions appended; mask_bias is
   * [b, 1, new, P + new] and the ids, positions and rotary tables are the new positions'.
   */
  kvCache?: boolean;
  /**
   * Probe interventions as inputs edit_{i}_mask [1, T, 1] and edit_{i}_vec [d] (add: x + mask·vec)
   * or edit_{i}_basis [r, d] (project: x − mask·(x·Bᵀ)·B), applied in order at their hooks.
   */
  edits?: readonly { hook: string; kind: 'add' | 'project' }[];
  /**
   * Logits of chosen tokens only: the unembedding comes in as inputs unembed_cols [d, C] and
   * unembed_bias [C] (columns of W_U / b_U), so a logit-difference head carries no vocabulary-sized
   * weight (for GPT-2 small: no 154 MB session to build, 1/25000 of the head's work).
   */
  logitColumns?: boolean;
}

export interface LmGraph {
  bytes: Uint8Array;
  inputs: string[];
  /** Output names: 'logits' (unless stopped early) then the hooks. */
  outputs: string[];
  /** Weights kept out of the protobuf (past maxEmbeddedBytes), as onnxruntime's externalData. */
  externalData: { path: string; data: Uint8Array }[];
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export function lmGraph(model: HookedModel, opts: LmGraphOptions, maxEmbeddedBytes?: number): LmGraph {
  if (model.graph.kind !== 'causal-lm') fail(`onnx backend: ${model.graph.description} is not supported yet (text language models only)`);
  const cfg = model.cfg as ModelConfig;
  const known = new Set(model.hookNames());
  for (const h of opts.hooks) {
    if (!known.has(h)) fail(`onnx backend: unknown hook '${h}'`);
    if (h.endsWith('attn.hook_result')) fail(`onnx backend: ${h} is not exported; use the tfjs backend for per-head results`);
  }
  const g = new GraphBuilder(maxEmbeddedBytes);
  const wanted = new Set(opts.hooks);
  const taps = new Map<string, string>();
  const patched = new Set<number>();
  const applied = new Set<number>();
  const hook = (name: string, value: string): string => {
    (opts.patch?.hooks ?? []).forEach((h, i) => {
      if (h !== name) return;
      value = g.add(value, g.mul(`patch_mask_${i}`, g.sub(`patch_src_${i}`, value)));
      patched.add(i);
    });
    (opts.edits ?? []).forEach((e, i) => {
      if (e.hook !== name) return;
      const mask = `edit_${i}_mask`;
      if (e.kind === 'add') value = g.add(value, g.mul(mask, `edit_${i}_vec`));
      else {
        const B = `edit_${i}_basis`;
        value = g.sub(value, g.mul(mask, g.matMul(g.matMul(value, g.transpose(B, [1, 0])), B)));
      }
      applied.add(i);
    });
    if (wanted.has(name)) taps.set(name, value);
    return value;
  };
  const W = (name: string): string => {
    const t = model.weight(name);
    return g.weight(name, t.dataSync() as Float32Array, t.shape);
  };
  const maybeW = (name: string): string | null => (model.hasWeight(name) ? W(name) : null);
  const linear = (x: string, w: string, b: string): string => {
    const y = g.matMul(x, W(w));
    const bias = maybeW(b);
    return bias ? g.add(y, bias) : y;
  };
  const { nHeads: H, nKvHeads: K, dHead: dh, dModel: d } = cfg;
  const G = H / K;

  const from = opts.fromLayer ?? 0;
  const maskBias = g.input('mask_bias', FLOAT, ['batch', 1, 'seq', opts.kvCache ? 'kseq' : 'seq']);
  const inputs = ['mask_bias'];
  const presents: string[] = [];
  (opts.edits ?? []).forEach((e, i) => {
    inputs.push(g.input(`edit_${i}_mask`, FLOAT, [1, 'seq', 1]));
    inputs.push(e.kind === 'add' ? g.input(`edit_${i}_vec`, FLOAT, [d]) : g.input(`edit_${i}_basis`, FLOAT, ['rank', d]));
  });
  (opts.patch?.hooks ?? []).forEach((_, i) => {
    inputs.push(g.input(`patch_mask_${i}`, FLOAT, []), g.input(`patch_src_${i}`, FLOAT, []));
  });
  let cos = '';
  let sin = '';
  if (cfg.positional === 'rope') {
    cos = g.input('rope_cos', FLOAT, ['batch', 'seq', 1, cfg.rotaryDim]);
    sin = g.input('rope_sin', FLOAT, ['batch', 'seq', 1, cfg.rotaryDim]);
    inputs.push('rope_cos', 'rope_sin');
  }
  let resid: string;
  if (opts.fromLayer !== undefined) {
    resid = g.input('resid_in', FLOAT, ['batch', 'seq', d]);
    inputs.push('resid_in');
  } else {
    const ids = g.input('input_ids', INT64, ['batch', 'seq']);
    inputs.push('input_ids');
    resid = hook('hook_embed', g.op('Gather', [W('embed.W_E'), ids], { axis: 0 }));
    if (cfg.positional === 'learned') {
      const pos = g.input('positions', INT64, ['batch', 'seq']);
      inputs.push('positions');
      resid = g.add(resid, hook('hook_pos_embed', g.op('Gather', [W('pos_embed.W_pos'), pos], { axis: 0 })));
    }
  }

  const norm = (x: string, prefix: string): string => {
    const eps = g.scalar(cfg.normEps);
    if (cfg.norm === 'layernorm') {
      const centred = g.sub(x, g.op('ReduceMean', [x], { axes: [-1], keepdims: 1 }));
      const scale = hook(`${prefix}.hook_scale`, g.op('Sqrt', [g.add(g.op('ReduceMean', [g.mul(centred, centred)], { axes: [-1], keepdims: 1 }), eps)]));
      const scaled = g.mul(g.div(centred, scale), W(`${prefix}.w`));
      const b = maybeW(`${prefix}.b`);
      return hook(`${prefix}.hook_normalized`, b ? g.add(scaled, b) : scaled);
    }
    const scale = hook(`${prefix}.hook_scale`, g.op('Sqrt', [g.add(g.op('ReduceMean', [g.mul(x, x)], { axes: [-1], keepdims: 1 }), eps)]));
    return g.mul(hook(`${prefix}.hook_normalized`, g.div(x, scale)), W(`${prefix}.w`));
  };

  const act = (x: string, kind: ActivationKind): string => {
    switch (kind) {
      case 'gelu_new': {
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
  };

  const rope = (x: string): string => {
    const rd = cfg.rotaryDim;
    const half = rd / 2;
    const sl = (from: number, to: number) => g.op('Slice', [x, g.constant([from], [1], 'int64'), g.constant([to], [1], 'int64'), g.constant([3], [1], 'int64')]);
    const rot = rd === dh ? x : sl(0, rd);
    const perm = new Array<number>(rd * rd).fill(0);
    for (let j = 0; j < rd; j++) perm[((j + half) % rd) * rd + j] = 1;
    const swapped = g.matMul(rot, g.constant(perm, [rd, rd]));
    const rotated = g.add(g.mul(rot, cos), g.mul(swapped, sin));
    return rd === dh ? rotated : g.op('Concat', [rotated, sl(rd, dh)], { axis: 3 });
  };

  const attention = (x: string, l: number): string => {
    const p = `blocks.${l}.attn.`;
    let q = hook(p + 'hook_q', g.reshape(linear(x, p + 'W_Q', p + 'b_Q'), [0, 0, H, dh]));
    let k = hook(p + 'hook_k', g.reshape(linear(x, p + 'W_K', p + 'b_K'), [0, 0, K, dh]));
    const v = hook(p + 'hook_v', g.reshape(linear(x, p + 'W_V', p + 'b_V'), [0, 0, K, dh]));
    if (cfg.positional === 'rope') {
      q = hook(p + 'hook_rot_q', rope(q));
      k = hook(p + 'hook_rot_k', rope(k));
    }
    // As in the tfjs forward: the G query heads of a kv head as one [G·T, dh] block per kv head.
    const qh = g.reshape(g.transpose(q, [0, 2, 1, 3]), [0, K, -1, dh]);
    let kh = g.transpose(k, [0, 2, 3, 1]);
    let vh = g.transpose(v, [0, 2, 1, 3]);
    if (opts.kvCache) {
      inputs.push(g.input(`past_k_${l}`, FLOAT, ['batch', K, dh, 'past']), g.input(`past_v_${l}`, FLOAT, ['batch', K, 'past', dh]));
      kh = g.op('Concat', [`past_k_${l}`, kh], { axis: 3 });
      vh = g.op('Concat', [`past_v_${l}`, vh], { axis: 2 });
      g.output(`present_k_${l}`, kh);
      g.output(`present_v_${l}`, vh);
      presents.push(`present_k_${l}`, `present_v_${l}`);
    }
    const raw = g.reshape(g.matMul(qh, kh), [0, H, -1, 0]);
    const scores = hook(p + 'hook_attn_scores', g.add(g.mul(raw, g.scalar(1 / Math.sqrt(dh))), maskBias));
    const pattern = hook(p + 'hook_pattern', g.op('Softmax', [scores], { axis: -1 }));
    const zh = g.reshape(g.matMul(g.reshape(pattern, [0, K, -1, 0]), vh), [0, H, -1, dh]);
    const z = hook(p + 'hook_z', g.transpose(zh, [0, 2, 1, 3]));
    return linear(g.reshape(z, [0, 0, H * dh]), p + 'W_O', p + 'b_O');
  };

  const mlp = (x: string, l: number): string => {
    const p = `blocks.${l}.mlp.`;
    let post: string;
    if (cfg.mlp === 'gated') {
      const pre = hook(p + 'hook_pre', linear(x, p + 'W_gate', p + 'b_gate'));
      const preLinear = hook(p + 'hook_pre_linear', linear(x, p + 'W_in', p + 'b_in'));
      post = hook(p + 'hook_post', g.mul(act(pre, cfg.act), preLinear));
    } else {
      post = hook(p + 'hook_post', act(hook(p + 'hook_pre', linear(x, p + 'W_in', p + 'b_in')), cfg.act));
    }
    return linear(post, p + 'W_out', p + 'b_out');
  };

  const last = opts.stopAtLayer ?? cfg.nLayers - 1;
  for (let l = from; l <= last; l++) {
    const hp = `blocks.${l}.`;
    resid = hook(hp + 'hook_resid_pre', resid);
    const attnOut = hook(hp + 'hook_attn_out', attention(norm(resid, `${hp}ln1`), l));
    resid = hook(hp + 'hook_resid_mid', g.add(resid, attnOut));
    const mlpOut = hook(hp + 'hook_mlp_out', mlp(norm(resid, `${hp}ln2`), l));
    resid = hook(hp + 'hook_resid_post', g.add(resid, mlpOut));
  }
  const outputs: string[] = [];
  (opts.edits ?? []).forEach((e, i) => {
    if (!applied.has(i)) fail(`onnx backend: hook ${e.hook} of an edit is not in this graph`);
  });
  (opts.patch?.hooks ?? []).forEach((h, i) => {
    if (!patched.has(i)) fail(`onnx backend: hook ${h} to patch is not in blocks ${from}..${last}`);
  });
  if (opts.stopAtLayer !== undefined) {
    g.output('resid_out', resid);
    outputs.push('resid_out');
  } else {
    if (opts.finalPositionOnly) {
      g.input('last_onehot', FLOAT, ['batch', 'seq', 1]);
      inputs.push('last_onehot');
      resid = g.op('ReduceSum', [g.mul(resid, 'last_onehot'), g.constant([1], [1], 'int64')], { keepdims: 1 });
    }
    const final = norm(resid, 'ln_final');
    if (opts.logitColumns) {
      inputs.push(g.input('unembed_cols', FLOAT, [d, 'cols']), g.input('unembed_bias', FLOAT, ['cols']));
      g.output('logits', g.add(g.matMul(final, 'unembed_cols'), 'unembed_bias'));
    } else g.output('logits', linear(final, 'unembed.W_U', 'unembed.b_U'));
    outputs.push('logits');
  }
  for (const h of opts.hooks) {
    const v = taps.get(h);
    if (!v) fail(`onnx backend: hook ${h} is not reached${opts.stopAtLayer !== undefined ? ` before block ${opts.stopAtLayer} ends` : ''}`);
    g.output(h, v);
    outputs.push(h);
  }
  outputs.push(...presents);
  return { bytes: g.toBytes(), inputs, outputs, externalData: g.externalData() };
}

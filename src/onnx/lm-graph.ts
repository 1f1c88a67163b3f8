/**
 * The language-model stage as an ONNX graph: embedding (with a VLM's image rows spliced in),
 * the generic blocks (block-graph.ts), final norm and unembedding, as the tfjs forward
 * (transformer.ts). Each requested hook point becomes an extra graph output with the
 * TransformerLens name and shape, so a forward that only reads activations runs entirely in
 * onnxruntime; patches, probe edits and past keys/values are graph inputs.
 *
 * Inputs: input_ids int64 [b, T]; mask_bias float [b, 1, T, T] (0 / −1e9, as maskBias());
 * positions int64 [b, T] (learned positions) or rope_cos / rope_sin float [b, T, 1, rotaryDim]
 * (as ropeTables()); last_onehot float [b, T, 1] when only the final position is unembedded.
 * With imageSplice: image_rows [b, T, d] (the projector's output at image positions, 0 elsewhere)
 * and text_keep [b, T, 1] (0 at image positions), embeddings = W_E[ids]·text_keep + image_rows
 * before hook_embed — the tfjs splice, which is exact the same way.
 * Output: logits [b, T or 1, vocab], then the hooks in the order asked.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { ModelConfig } from '../models/config.js';
import { emitBlocks, emitLinear, emitNorm, isVisionStageHook, modelWeights, selectRow, type StageEmitter } from './block-graph.js';
import { FLOAT, GraphBuilder, INT64, type EmittedGraph } from './graph-builder.js';

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
  /** Image rows spliced into the embeddings (a VLM prompt pass): inputs image_rows and text_keep. */
  imageSplice?: boolean;
  /**
   * With stopAtLayer: the last block reads keys/values at every position and computes the rest at
   * each row's final position only (input last_onehot); resid_out is [b, 1, d]. Patch points in that
   * block must then be idle (scalar masks). A finalPositionOnly graph does this by itself when no
   * hook, edit or patch sits in its last block.
   */
  finalRowOnly?: boolean;
}

/** Outputs: 'logits' (or 'resid_out' when stopped early), the hooks, then present_k/v_{l}. */
export type LmGraph = EmittedGraph;

export function lmGraph(model: HookedModel, opts: LmGraphOptions, maxEmbeddedBytes?: number): LmGraph {
  if (model.graph.kind === 'vision-tower') fail(`onnx backend: ${model.graph.description} has no language model`);
  const cfg = model.graph.lm as ModelConfig;
  const known = new Set(model.hookNames());
  for (const h of opts.hooks) {
    if (!known.has(h)) fail(`onnx backend: unknown hook '${h}'`);
    if (isVisionStageHook(model, h)) fail(`onnx backend: ${h} is a vision-stage hook, not the language model's`);
    if (h.endsWith('attn.hook_result')) fail(`onnx backend: ${h} is not exported; use the tfjs backend for per-head results`);
  }
  const g = new GraphBuilder(maxEmbeddedBytes);
  const wanted = new Set(opts.hooks);
  const taps = new Map<string, string>();
  const patched = new Set<number>();
  const applied = new Set<number>();
  // Edits first, then patches: the order of the tfjs runtime, where a session's edit hooks run
  // before the patching hook (a patched site takes the source value, edits included).
  const hook = (name: string, value: string): string => {
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
    (opts.patch?.hooks ?? []).forEach((h, i) => {
      if (h !== name) return;
      value = g.add(value, g.mul(`patch_mask_${i}`, g.sub(`patch_src_${i}`, value)));
      patched.add(i);
    });
    if (wanted.has(name)) taps.set(name, value);
    return value;
  };
  const s: StageEmitter = { g, cfg, ...modelWeights(g, model), hook };
  const { W } = s;
  const d = cfg.dModel;

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
  let rope: { cos: string; sin: string } | undefined;
  if (cfg.positional === 'rope') {
    rope = { cos: g.input('rope_cos', FLOAT, ['batch', 'seq', 1, cfg.rotaryDim]), sin: g.input('rope_sin', FLOAT, ['batch', 'seq', 1, cfg.rotaryDim]) };
    inputs.push('rope_cos', 'rope_sin');
  }
  let resid: string;
  if (opts.fromLayer !== undefined) {
    resid = g.input('resid_in', FLOAT, ['batch', 'seq', d]);
    inputs.push('resid_in');
  } else {
    const ids = g.input('input_ids', INT64, ['batch', 'seq']);
    inputs.push('input_ids');
    let embed = g.op('Gather', [W('embed.W_E'), ids], { axis: 0 });
    if (opts.imageSplice) {
      inputs.push(g.input('image_rows', FLOAT, ['batch', 'seq', d]), g.input('text_keep', FLOAT, ['batch', 'seq', 1]));
      embed = g.add(g.mul(embed, 'text_keep'), 'image_rows');
    }
    resid = hook('hook_embed', embed);
    if (cfg.positional === 'learned') {
      const pos = g.input('positions', INT64, ['batch', 'seq']);
      inputs.push('positions');
      resid = g.add(resid, hook('hook_pos_embed', g.op('Gather', [W('pos_embed.W_pos'), pos], { axis: 0 })));
    }
  }

  const last = opts.stopAtLayer ?? cfg.nLayers - 1;
  const kvCache = opts.kvCache ? { inputs: [] as string[], presents } : undefined;
  const inLast = (h: string) => h.startsWith(`blocks.${last}.`);
  const untouchedLast = ![...opts.hooks, ...(opts.edits ?? []).map((e) => e.hook), ...(opts.patch?.hooks ?? [])].some(inLast);
  const finalRow = last >= from && (opts.stopAtLayer !== undefined ? !!opts.finalRowOnly : !!opts.finalPositionOnly && untouchedLast);
  if (opts.finalRowOnly && opts.stopAtLayer === undefined) fail('onnx backend: finalRowOnly needs stopAtLayer');
  if (finalRow || opts.finalPositionOnly) inputs.push(g.input('last_onehot', FLOAT, ['batch', 'seq', 1]));
  resid = emitBlocks(s, resid, from, last, { maskBias, rope, kvCache, ...(finalRow ? { finalRow: 'last_onehot' } : {}) });
  if (kvCache) inputs.push(...kvCache.inputs);
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
    if (opts.finalPositionOnly && !finalRow) resid = selectRow(g, resid, 'last_onehot', 1, 3);
    const final = emitNorm(s, resid, 'ln_final');
    if (opts.logitColumns) {
      inputs.push(g.input('unembed_cols', FLOAT, [d, 'cols']), g.input('unembed_bias', FLOAT, ['cols']));
      g.output('logits', g.add(g.matMul(final, 'unembed_cols'), 'unembed_bias'));
    } else g.output('logits', emitLinear(s, final, 'unembed.W_U', 'unembed.b_U'));
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

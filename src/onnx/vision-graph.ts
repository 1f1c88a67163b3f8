/**
 * The vision stages as one ONNX graph: a LLaVA model's tower (patch embedding + CLS + positions,
 * ln_pre, the generic blocks with bidirectional attention) up to the feature layer, the feature
 * selection and the projector — or a standalone tower's last hidden state (post-normed where the
 * tower has ln_post). Op for op stages/vision-tower.ts and stages/projector.ts.
 *
 * Input: patches float [n, gridSize², C·p·p] (imagePatches() on the host: a stride-p convolution is
 * then one MatMul, as on tfjs). Output 'image_embeds' [n, nImageTokens, d_lm] (llava) or
 * 'hidden' [n, P, d] (tower), then the requested hooks ('vision.*', 'hook_image_embeds').
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { LlavaWiring, VisionConfig } from '../models/config.js';
import { lastVisionBlockRequested } from '../models/graph.js';
import { emitActivation, emitBlocks, emitLinear, emitNorm, isVisionStageHook, modelWeights, type StageEmitter } from './block-graph.js';
import { FLOAT, GraphBuilder, type EmittedGraph } from './graph-builder.js';

const PREFIX = 'vision.';

export function visionGraph(model: HookedModel, hooks: readonly string[], maxEmbeddedBytes?: number): EmittedGraph {
  const vision = model.graph.vision as VisionConfig | null;
  if (!vision) fail(`onnx backend: ${model.graph.description} has no vision tower`);
  const llava = model.graph.llava as LlavaWiring | null;
  const known = new Set(model.hookNames());
  for (const h of hooks) {
    if (!known.has(h)) fail(`onnx backend: unknown hook '${h}'`);
    if (!isVisionStageHook(model, h)) fail(`onnx backend: ${h} is not a vision-stage hook`);
    if (h.endsWith('attn.hook_result')) fail(`onnx backend: ${h} is not exported; use the tfjs backend for per-head results`);
  }
  const g = new GraphBuilder(maxEmbeddedBytes);
  const wanted = new Set(hooks);
  const taps = new Map<string, string>();
  const tap = (name: string, value: string): string => {
    if (wanted.has(name)) taps.set(name, value);
    return value;
  };
  // The tower's names are local ('blocks.0.…'); weights and hooks live under 'vision.'.
  const tower: StageEmitter = { g, cfg: vision, ...modelWeights(g, model, PREFIX), hook: (n, v) => tap(PREFIX + n, v) };
  const d = vision.dModel;

  const patches = g.input('patches', FLOAT, ['images', vision.gridSize * vision.gridSize, vision.nChannels * vision.patchSize * vision.patchSize]);
  let x = emitLinear(tower, patches, 'embed.W_patch', 'embed.b_patch');
  if (vision.classToken) {
    // CLS first: the learned [d] row broadcast to [n, 1, d] (n from the input's shape).
    const n = g.op('Slice', [g.op('Shape', [patches]), g.constant([0], [1], 'int64'), g.constant([1], [1], 'int64')]);
    const shape = g.op('Concat', [n, g.constant([1, d], [2], 'int64')], { axis: 0 });
    const cls = g.op('Expand', [g.reshape(tower.W('embed.cls'), [1, 1, d]), shape]);
    x = g.op('Concat', [cls, x], { axis: 1 });
  }
  let resid = tower.hook('hook_embed', g.add(x, tower.W('pos_embed.W_pos')));
  if (vision.preNorm) resid = emitNorm(tower, resid, 'ln_pre');

  const L = vision.nLayers;
  // Hidden state i = the input of block i (0 = after ln_pre, L = the last block's output).
  const out = llava ? llava.featureLayer : L;
  const runThrough = Math.min(L - 1, Math.max(out - 1, lastVisionBlockRequested(hooks)));
  let hidden = out === 0 ? resid : '';
  for (let l = 0; l <= runThrough; l++) {
    resid = emitBlocks(tower, resid, l, l, {});
    if (l + 1 === out) hidden = resid;
  }
  const inputs = ['patches'];
  const outputs: string[] = [];
  if (llava) {
    const P = vision.nPositions;
    const selected = llava.selectStrategy === 'default' ? g.op('Slice', [hidden, g.constant([1], [1], 'int64'), g.constant([P], [1], 'int64'), g.constant([1], [1], 'int64')]) : hidden;
    const projector: StageEmitter = { g, cfg: model.graph.lm!, ...modelWeights(g, model, 'projector.'), hook: tap };
    const act = emitActivation(g, emitLinear(projector, selected, 'W_1', 'b_1'), llava.projectorAct);
    g.output('image_embeds', projector.hook('hook_image_embeds', emitLinear(projector, act, 'W_2', 'b_2')));
    outputs.push('image_embeds');
  } else {
    g.output('hidden', vision.postNorm ? emitNorm(tower, hidden, 'ln_post') : hidden);
    outputs.push('hidden');
  }
  for (const h of hooks) {
    const v = taps.get(h);
    if (!v) fail(`onnx backend: hook ${h} is not reached`);
    g.output(h, v);
    outputs.push(h);
  }
  return { bytes: g.toBytes(), inputs, outputs, externalData: g.externalData() };
}

/**
 * A LLaVA-shaped forward with random weights: a CLIP ViT-B/16-shaped tower (12 layers, d 768,
 * 12 heads, 224 px → 196 patches + CLS = 197 positions, feature layer −2) → GELU projector → a
 * GPT-2-small-shaped Llama language model (12 layers, d 768, 12 heads, SwiGLU 2048, vocab 32000)
 * reading 196 image + 32 text tokens. Prints the whole forward and the tower's share, on tfjs and
 * on onnxruntime (tower, projector and splice as graphs; logits compared).
 *   npx tsx bench/vlm.ts [--reps 5]
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.js';
import { StagedModel } from '../src/hooks/staged-model.js';
import type { RawTensor } from '../src/io/raw-tensor.js';
import type { LlavaWiring, ModelConfig, VisionConfig } from '../src/models/config.js';
import { LlavaGraph } from '../src/models/graph.js';
import type { ImageBatch } from '../src/models/image-batch.js';
import { mulberry32 } from '../src/util/random.js';
import { medianSeconds, medianSecondsAsync } from './timing.js';
import { OnnxForward } from '../src/onnx/onnx-forward.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '5' } } });
const reps = Number(values.reps);

const vision: VisionConfig = {
  architecture: 'clip', nLayers: 12, dModel: 768, nHeads: 12, nKvHeads: 12, dHead: 64, dMlp: 3072, norm: 'layernorm', normEps: 1e-5,
  positional: 'none', ropeTheta: 0, rotaryDim: 0, mlp: 'standard', act: 'quick_gelu', qkvBias: true, attnOutBias: true, mlpBias: true,
  causal: false, imageSize: 224, patchSize: 16, nChannels: 3, classToken: true, preNorm: true, postNorm: false, gridSize: 14, nPositions: 197,
};
const lm: ModelConfig = {
  architecture: 'llama', nLayers: 12, dModel: 768, nHeads: 12, nKvHeads: 12, dHead: 64, dMlp: 2048, norm: 'rmsnorm', normEps: 1e-6,
  positional: 'rope', ropeTheta: 10000, rotaryDim: 64, mlp: 'gated', act: 'silu', qkvBias: false, attnOutBias: false, mlpBias: false,
  causal: true, dVocab: 32000, nCtx: 2048, unembedBias: false, tiedEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: null,
};
const IMAGE_TOKEN = 31999;
const wiring: LlavaWiring = { featureLayer: 11, selectStrategy: 'default', projectorAct: 'gelu', imageTokenIndex: IMAGE_TOKEN, nImageTokens: 196 };

const rand = mulberry32(7);
const t = (shape: number[], std = 0.02, mean = 0): RawTensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = mean + std * (rand() * 2 - 1) * 1.732;
  return { shape, data };
};

function weights(): Map<string, RawTensor> {
  const w = new Map<string, RawTensor>();
  const dv = vision.dModel;
  w.set('vision.embed.W_patch', t([3 * 16 * 16, dv]));
  w.set('vision.embed.cls', t([dv]));
  w.set('vision.pos_embed.W_pos', t([197, dv]));
  w.set('vision.ln_pre.w', t([dv], 0.05, 1));
  w.set('vision.ln_pre.b', t([dv], 0.01));
  for (let l = 0; l < 12; l++) {
    const b = `vision.blocks.${l}.`;
    for (const n of ['ln1', 'ln2']) (w.set(b + n + '.w', t([dv], 0.05, 1)), w.set(b + n + '.b', t([dv], 0.01)));
    for (const n of ['Q', 'K', 'V', 'O']) (w.set(b + `attn.W_${n}`, t([dv, dv])), w.set(b + `attn.b_${n}`, t([dv], 0.01)));
    w.set(b + 'mlp.W_in', t([dv, 3072]));
    w.set(b + 'mlp.b_in', t([3072], 0.01));
    w.set(b + 'mlp.W_out', t([3072, dv]));
    w.set(b + 'mlp.b_out', t([dv], 0.01));
  }
  const d = lm.dModel;
  w.set('projector.W_1', t([dv, d]));
  w.set('projector.b_1', t([d], 0.01));
  w.set('projector.W_2', t([d, d]));
  w.set('projector.b_2', t([d], 0.01));
  w.set('embed.W_E', t([lm.dVocab, d]));
  for (let l = 0; l < 12; l++) {
    const b = `blocks.${l}.`;
    w.set(b + 'ln1.w', t([d], 0.05, 1));
    w.set(b + 'ln2.w', t([d], 0.05, 1));
    for (const n of ['Q', 'K', 'V', 'O']) w.set(b + `attn.W_${n}`, t([d, d]));
    w.set(b + 'mlp.W_gate', t([d, lm.dMlp]));
    w.set(b + 'mlp.W_in', t([d, lm.dMlp]));
    w.set(b + 'mlp.W_out', t([lm.dMlp, d]));
  }
  w.set('ln_final.w', t([d], 0.05, 1));
  w.set('unembed.W_U', t([d, lm.dVocab]));
  return w;
}

const timeIt = (fn: () => void): number => medianSeconds(fn, reps);

await initBackend();
const model = new StagedModel(new LlavaGraph(vision, lm, wiring), weights(), null, 'bench/vlm.ts (random weights)');
const image: ImageBatch = { data: t([1, 3, 224, 224], 1).data, shape: [1, 3, 224, 224] };
const prompt = [1, ...Array.from({ length: 15 }, (_, i) => 100 + i), IMAGE_TOKEN, ...Array.from({ length: 16 }, (_, i) => 300 + i)];
const input = model.toTokens({ prompts: prompt, images: image });
const T = input.seqLen;

const full = timeIt(() => {
  const lg = model.run(input);
  lg.dataSync();
  lg.dispose();
});
const last = timeIt(() => {
  const lg = model.run(input, { finalPositionOnly: true });
  lg.dataSync();
  lg.dispose();
});
// The tower up to the feature layer (what the language model reads) and the projector.
const tower = timeIt(() => {
  const { logits, cache } = model.runWithCache(input, { names: ['vision.blocks.10.hook_resid_post'], visionStopAtLayer: 10 });
  logits.dataSync();
  logits.dispose();
  cache.dispose();
});
console.log(`backend ${tf.getBackend()}; ${wiring.nImageTokens} image + ${T - wiring.nImageTokens} text tokens = ${T}; tower 197 positions × 11 blocks (feature layer −2)`);
console.log(`forward, all logits:             ${full.toFixed(3)} s`);
console.log(`forward, final-position logits:  ${last.toFixed(3)} s`);
console.log(`tower to the feature layer:      ${tower.toFixed(3)} s  (${((100 * tower) / last).toFixed(0)} % of the final-position forward)`);
const onnx = new OnnxForward(model);
const onnxLast = await medianSecondsAsync(() => onnx.run(input, { hooks: [], finalPositionOnly: true }), reps);
const onnxHooks = await medianSecondsAsync(() => onnx.run(input, { hooks: ['vision.blocks.*.hook_resid_post', 'blocks.*.hook_resid_post'] }), reps);
const a = (await onnx.run(input, { hooks: [], finalPositionOnly: true })).logits!.data;
const ref = model.run(input, { finalPositionOnly: true });
const b = ref.dataSync();
ref.dispose();
let worst = 0;
let scale = 0;
for (let i = 0; i < a.length; i++) (worst = Math.max(worst, Math.abs(a[i] - b[i]))), (scale = Math.max(scale, Math.abs(b[i])));
console.log(`onnxruntime, final-position logits: ${onnxLast.toFixed(3)} s  (×${(last / onnxLast).toFixed(1)} vs tfjs; max |Δlogit| ${(worst / scale).toExponential(1)} of the largest)`);
console.log(`onnxruntime, all logits + 24 resid_post hooks of tower and LM: ${onnxHooks.toFixed(3)} s`);
await onnx.dispose();
model.dispose();

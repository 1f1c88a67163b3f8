/**
 * Training and gradient speed on wasm with BatchMatMul's gradient as hooklens registers it
 * (transposes as copies, src/backend/matmul-gradient.ts) against tfjs's own (transpose flags on
 * the kernel): one Adam step of the deep IOI model's shape (6 layers, d 64, vocabulary 2048,
 * 16 × 64 tokens) and one AtP backward on a GPT-2-small-shaped model (15 tokens).
 *   npx tsx bench/training.ts
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.js';
import { gpt2Config } from '../src/models/families/gpt2.js';
import { CausalLmTrainer, initGpt2Weights } from '../src/training/causal-lm.js';
import { gpt2ConfigJson } from '../src/training/gpt2-checkpoint.js';
import { loadModel } from '../src/models/load.js';
import { registerBatchMatMulGradient } from '../src/backend/matmul-gradient.js';
import { makeGpt2SmallCheckpoint } from './gpt2-small-checkpoint.js';
import { medianSeconds } from './timing.js';
import fs from 'node:fs';

await initBackend();
const cfg = gpt2Config(gpt2ConfigJson({ nLayers: 6, dModel: 64, nHeads: 4, dMlp: 256, nCtx: 64, dVocab: 2048 }), 'bench');
const trainer = new CausalLmTrainer(cfg, initGpt2Weights(cfg, 0), { peak: 1e-3, warmup: 10, total: 1000 });
const ids = Int32Array.from({ length: 16 * 64 }, (_, i) => (i * 7919) % 2048);
let step = 0;
const trainStep = () => void trainer.step(step++, ids, 16, 64);

const dir = makeGpt2SmallCheckpoint();
const model = await loadModel(dir);
const tokens = Array.from({ length: 15 }, (_, i) => (i * 7919 + 13) % 50257);
const backward = () => {
  const r = model.gradients(tokens, 'blocks.0.hook_resid_pre', (l) => l.sum().asScalar(), { finalPositionOnly: true });
  tf.dispose([...r.grads.values()]);
};

const rows: string[] = [];
for (const [name, copyTransposes] of [['tfjs gradient (transpose flags)', false], ['hooklens gradient (transposes as copies)', true]] as const) {
  registerBatchMatMulGradient(copyTransposes);
  const s = medianSeconds(trainStep, 5);
  const g = medianSeconds(backward, 3);
  rows.push(`${name.padEnd(42)} train step ${(s * 1000).toFixed(0)} ms (${((16 * 64) / s).toFixed(0)} tokens/s)   GPT-2-small backward ${(g * 1000).toFixed(0)} ms`);
}
console.log(`backend ${tf.getBackend()}`);
for (const r of rows) console.log(r);
trainer.dispose();
model.dispose();
fs.rmSync(dir, { recursive: true, force: true });

/**
 * Cost of the expensive baseline versus the gradient estimates on a GPT-2-small-shaped model:
 * full activation-patching grids for resid_pre, attn_out and mlp_out over a 15-token prompt pair
 * on tfjs and on onnxruntime (the patch as a graph input), versus AtP and RelP for the same grids
 * (speed-ups against the onnxruntime baseline).
 *   npx tsx bench/patching.ts
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import { PatchingSession } from '../src/patching/session.js';
import type { Component, Method } from '../src/patching/types.js';
import { agreementFor } from '../src/patching/stats.js';
import { makeGpt2SmallCheckpoint } from './gpt2-small-checkpoint.js';
import { OnnxForward } from '../src/onnx/onnx-forward.js';

const dir = makeGpt2SmallCheckpoint();
const model = await loadModel(dir);
const T = 15;
const clean = Array.from({ length: T }, (_, i) => (i * 7919 + 13) % 50257);
const corrupt = clean.map((t, i) => (i === 4 ? (t + 1000) % 50257 : t));
const session = new PatchingSession(model, [{ clean, corrupt, answer: 262, wrong: 318 }], { maxBatchTokens: process.env.MBT ? Number(process.env.MBT) : undefined });
session.baselines();
const components: Component[] = ['resid_pre', 'attn_out', 'mlp_out'];
const sites = components.length * model.cfg.nLayers * T;

function time(method: Method): { seconds: number; grids: ReturnType<PatchingSession['grid']>[] } {
  const t0 = performance.now();
  const grids = components.map((c) => session.grid(c, method));
  return { seconds: (performance.now() - t0) / 1000, grids };
}

console.log(`backend ${tf.getBackend()}; GPT-2-small shape, ${T}-token pair, ${sites} sites (3 components × 12 layers × ${T} positions)`);
// The first backward pass builds the model's cached transposed weights (once per model).
const tw = performance.now();
const warm = model.gradients(clean, 'blocks.0.hook_resid_pre', (l) => l.sum().asScalar(), { finalPositionOnly: true });
tf.dispose([...warm.grads.values()]);
console.log(`one-time set-up for gradients (transposed weights): ${((performance.now() - tw) / 1000).toFixed(1)} s`);
const act = time('activation');
console.log(`activation patching, tfjs: ${act.seconds.toFixed(1)} s  ${(sites / act.seconds).toFixed(1)} sites/s`);
const onnx = new OnnxForward(model);
const onnxSession = new PatchingSession(model, [{ clean, corrupt, answer: 262, wrong: 318 }], { onnx, maxBatchTokens: process.env.MBT ? Number(process.env.MBT) : undefined });
onnxSession.baselines();
const to = performance.now();
const onnxGrids = [];
const perComponent: string[] = [];
for (const c of components) {
  const tc = performance.now();
  onnxGrids.push(await onnxSession.gridAsync(c, 'activation'));
  perComponent.push(`${c} ${((performance.now() - tc) / 1000).toFixed(1)} s`);
}
const onnxSeconds = (performance.now() - to) / 1000;
// The first component pays for building the sessions: what one `hooklens patch` run costs.
console.log(`  cold, per component in order: ${perComponent.join(', ')} (tfjs: ${(act.seconds / components.length).toFixed(1)} s a component on average)`);
const maxDiff = Math.max(...onnxGrids.flatMap((g, i) => (g.scores as number[][]).flat().map((v, j) => Math.abs(v - (act.grids[i].scores as number[][]).flat()[j]))));
console.log(`activation patching, onnxruntime: ${onnxSeconds.toFixed(1)} s  ${(sites / onnxSeconds).toFixed(1)} sites/s  ×${(act.seconds / onnxSeconds).toFixed(1)} vs tfjs (sessions built on first use, included); max |Δscore| vs tfjs ${maxDiff.toExponential(1)}`);
const t2 = performance.now();
for (const c of components) await onnxSession.gridAsync(c, 'activation');
const onnxWarm = (performance.now() - t2) / 1000;
console.log(`activation patching, onnxruntime, sessions warm: ${onnxWarm.toFixed(1)} s  ×${(act.seconds / onnxWarm).toFixed(1)} vs tfjs`);
for (const method of ['atp', 'relp'] as const) {
  const est = time(method);
  const r = est.grids.map((g, i) => agreementFor(g, act.grids[i]).pearson.toFixed(3)).join(' / ');
  console.log(`${method.padEnd(4)}: ${est.seconds.toFixed(2)} s  ${(sites / est.seconds).toFixed(0)} sites/s  speed-up ×${(act.seconds / est.seconds).toFixed(0)} vs tfjs activation, ×${(onnxSeconds / est.seconds).toFixed(1)} vs onnx activation  (Pearson vs activation, random weights: ${r})`);
}
onnxSession.dispose();
await onnx.dispose();
session.dispose();
model.dispose();
fs.rmSync(dir, { recursive: true, force: true });

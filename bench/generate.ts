/**
 * Greedy generation on a GPT-2-small-shaped model (random weights): tokens/s for 64 new tokens
 * from a 16-token prompt with the KV cache and without (every step reruns the whole sequence),
 * and batched generation of 4 prompts with the cache; then the same on onnxruntime (past
 * keys/values as graph inputs and outputs); and seeded sampling (sampleGenerate) of 4 prompts
 * with and without the cache.
 *   npx tsx bench/generate.ts [--prompt 16] [--new 64] [--reps 3]
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import { makeGpt2SmallCheckpoint } from './gpt2-small-checkpoint.js';
import { medianSeconds, medianSecondsAsync } from './timing.js';
import { OnnxForward } from '../src/onnx/onnx-forward.js';
import { sampleGenerate } from '../src/generation/sampling.js';

const { values } = parseArgs({ options: { prompt: { type: 'string', default: '16' }, new: { type: 'string', default: '64' }, reps: { type: 'string', default: '3' } } });
const P = Number(values.prompt);
const N = Number(values.new);
const reps = Number(values.reps);

const dir = makeGpt2SmallCheckpoint();
const model = await loadModel(dir);
console.log(`backend ${tf.getBackend()}; GPT-2-small shape, ${P}-token prompt, ${N} new tokens, median of ${reps}`);
const prompt = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % 50257);

const withCache = medianSeconds(() => void model.generate(prompt, N), reps);
const withoutCache = medianSeconds(() => void model.generate(prompt, N, { kvCache: false }), reps);
const same = JSON.stringify(model.generate(prompt, N)) === JSON.stringify(model.generate(prompt, N, { kvCache: false }));
console.log(`KV cache:     ${withCache.toFixed(2)} s  ${(N / withCache).toFixed(1)} tokens/s`);
console.log(`no KV cache:  ${withoutCache.toFixed(2)} s  ${(N / withoutCache).toFixed(1)} tokens/s`);
console.log(`speed-up ×${(withoutCache / withCache).toFixed(1)}; identical tokens: ${same}`);

const prompts = [0, 1, 2, 3].map((s) => Array.from({ length: P - s * 3 }, (_, i) => (i * 7919 + 101 * s) % 50257));
const batched = medianSeconds(() => void model.generateBatch(prompts, N), reps);
console.log(`batch of 4 (left-padded), KV cache: ${batched.toFixed(2)} s  ${((4 * N) / batched).toFixed(1)} tokens/s`);
const onnx = new OnnxForward(model);
const onnxOne = await medianSecondsAsync(() => onnx.generateBatch([prompt], N), reps);
const onnxSame = JSON.stringify((await onnx.generateBatch([prompt], N))[0]) === JSON.stringify(model.generate(prompt, N));
console.log(`onnxruntime, KV cache: ${onnxOne.toFixed(2)} s  ${(N / onnxOne).toFixed(1)} tokens/s  (×${(withoutCache / onnxOne).toFixed(1)} vs tfjs without cache; identical tokens: ${onnxSame})`);
const onnxBatch = await medianSecondsAsync(() => onnx.generateBatch(prompts, N), reps);
console.log(`onnxruntime, batch of 4, KV cache: ${onnxBatch.toFixed(2)} s  ${((4 * N) / onnxBatch).toFixed(1)} tokens/s`);
const sampling = { maxTokens: P + N, temperature: 0.9, topP: 0.95, seed: 1, stopAtEos: false };
// One timed run each (the reruns take minutes), their outputs compared.
const once = (fn: () => number[][]) => {
  const t0 = performance.now();
  const out = fn();
  return { out, seconds: (performance.now() - t0) / 1000 };
};
const { out: cachedOut, seconds: sampled } = once(() => sampleGenerate(model, prompts, sampling));
const { out: rerunOut, seconds: sampledRerun } = once(() => sampleGenerate(model, prompts, { ...sampling, kvCache: false }));
// On random weights 50k near-equal probabilities let ~1e-6 logit differences pick a neighbouring
// token now and then; the trained stories260K gives identical samples (test/sampling.test.ts).
const sameRows = cachedOut.filter((s, i) => JSON.stringify(s) === JSON.stringify(rerunOut[i])).length;
console.log(`sampling (sampleGenerate), 4 prompts: KV cache ${sampled.toFixed(2)} s, reruns ${sampledRerun.toFixed(2)} s, ×${(sampledRerun / sampled).toFixed(1)}; rows with identical tokens: ${sameRows} of 4`);
await onnx.dispose();
model.dispose();
fs.rmSync(dir, { recursive: true, force: true });

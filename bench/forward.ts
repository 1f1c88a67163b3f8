/**
 * Forward-pass throughput on a GPT-2-small-shaped model: 128-token forward with no hooks and with
 * every hook cached, the hook overhead ratio, and Arrow cache write speed; then, for 32/128/512
 * tokens and a batch of 4×128: hooklens on tfjs, hooklens on onnxruntime (no hooks and 12 hook
 * outputs), and plain onnxruntime (session.run on the same exported graph, inputs prepared once).
 *   npx tsx bench/forward.ts [--tokens 128] [--reps 5] [--threads N]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import { writeActivationCache } from '../src/hooks/cache-to-arrow.js';
import { ArrowCacheWriter } from '../src/io/arrow-cache.js';
import { gpt2ForwardFlops, makeGpt2SmallCheckpoint } from './gpt2-small-checkpoint.js';
import { medianSeconds, medianSecondsAsync } from './timing.js';
import * as ort from 'onnxruntime-node';
import { OnnxForward } from '../src/onnx/onnx-forward.js';
import { lmGraph } from '../src/onnx/lm-graph.js';
import { padBatch } from '../src/hooks/token-batch.js';
import { maskBias, positionIds } from '../src/models/transformer.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '128' }, reps: { type: 'string', default: '5' }, threads: { type: 'string', default: String(os.availableParallelism()) } } });
const threads = Number(values.threads);
const T = Number(values.tokens);
const reps = Number(values.reps);

const timeIt = (fn: () => void): number => medianSeconds(fn, reps);

const t0 = performance.now();
const dir = makeGpt2SmallCheckpoint();
const tWrite = (performance.now() - t0) / 1000;
const t1 = performance.now();
const model = await loadModel(dir);
const tLoad = (performance.now() - t1) / 1000;
console.log(`backend ${tf.getBackend()}; checkpoint written in ${tWrite.toFixed(1)} s, loaded in ${tLoad.toFixed(1)} s`);

const tokens = Array.from({ length: T }, (_, i) => (i * 7919) % 50257);
const flops = gpt2ForwardFlops(T);

const plain = timeIt(() => {
  const logits = model.run(tokens);
  logits.dataSync();
  logits.dispose();
});
const cached = timeIt(() => {
  const { logits, cache } = model.runWithCache(tokens);
  logits.dataSync();
  cache.dispose();
  logits.dispose();
});
const nHooks = model.hookNames().filter((n) => !n.endsWith('hook_result')).length;
console.log(`forward ${T} tokens, no hooks:        ${plain.toFixed(3)} s  ${(T / plain).toFixed(1)} tokens/s  ${(flops / plain / 1e9).toFixed(1)} GFLOP/s`);
console.log(`forward ${T} tokens, ${nHooks} hooks cached: ${cached.toFixed(3)} s  ${(T / cached).toFixed(1)} tokens/s  ${(flops / cached / 1e9).toFixed(1)} GFLOP/s`);
console.log(`hook overhead ratio (cached / plain): ${(cached / plain).toFixed(3)}`);

// Cache: end-to-end `hooklens cache` throughput (forwards + writing) and the pure Arrow write speed.
const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-bench-'));
const prompts = Array.from({ length: 8 }, (_, p) => tokens.map((t) => (t + p) % 50257));
const tc = performance.now();
const { bytes } = await writeActivationCache(model, prompts, path.join(outDir, 'e2e.arrow'), { hooks: ['blocks.*.hook_resid_post'] });
const tCache = (performance.now() - tc) / 1000;
console.log(`cache end-to-end: ${prompts.length}×${T} tokens, 12 hooks, ${(bytes / 1e6).toFixed(0)} MB in ${tCache.toFixed(2)} s (${((prompts.length * T) / tCache).toFixed(0)} tokens/s)`);
const names = model.hookNames().filter((n) => n.endsWith('hook_resid_post'));
const { logits: l0, cache: c0 } = model.runWithCache(tokens, { names });
const host: Record<string, Float32Array> = Object.fromEntries(names.map((n) => [n, c0.get(n).dataSync() as Float32Array]));
c0.dispose();
l0.dispose();
const writer = ArrowCacheWriter.open(path.join(outDir, 'write.arrow'), { model: dir, columns: names.map((name) => ({ name, perPositionShape: [768] })) });
const tw = performance.now();
for (let p = 0; p < 64; p++) writer.writePrompt(p, tokens, host);
await writer.close();
const tWriteCache = (performance.now() - tw) / 1000;
console.log(`cache write: ${(writer.bytesWritten / 1e6).toFixed(0)} MB in ${tWriteCache.toFixed(2)} s = ${(writer.bytesWritten / 1e6 / tWriteCache).toFixed(0)} MB/s`);
fs.rmSync(outDir, { recursive: true, force: true });

// tfjs vs onnx vs plain onnxruntime on the same exported graph.
const onnx = new OnnxForward(model, { threads });
const twelve = names;
const plainGraph = lmGraph(model, { hooks: [] });
const plainSession = await ort.InferenceSession.create(plainGraph.bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
console.log(`\nonnxruntime: ${threads} intra-op threads`);
console.log('| shape | hooklens tfjs | hooklens onnx | onnx + 12 hooks | plain ORT | onnx / ORT | hooks / no hooks | tfjs / onnx |');
console.log('|---|---|---|---|---|---|---|---|');
for (const [b, n] of [[1, 32], [1, 128], [1, 512], [4, 128]] as const) {
  const batch = padBatch(Array.from({ length: b }, (_, p) => Array.from({ length: n }, (_, i) => (i * 7919 + p * 31) % 50257)), 'right', 0);
  const tfjsTime = medianSeconds(() => {
    const lg = model.run(batch);
    lg.dataSync();
    lg.dispose();
  }, Math.min(reps, 3));
  const onnxTime = await medianSecondsAsync(() => onnx.run(batch, { hooks: [] }), reps);
  const hooksTime = await medianSecondsAsync(() => onnx.run(batch, { hooks: twelve }), reps);
  const mask = maskBias(batch, true);
  const feeds = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(batch.ids, (x) => BigInt(x)), [b, n]),
    mask_bias: new ort.Tensor('float32', mask.dataSync() as Float32Array, [b, 1, n, n]),
    positions: new ort.Tensor('int64', BigInt64Array.from(positionIds(batch), (x) => BigInt(x)), [b, n]),
  };
  mask.dispose();
  const ortTime = await medianSecondsAsync(() => plainSession.run(feeds), reps);
  console.log(`| ${b}×${n} | ${tfjsTime.toFixed(3)} s | ${onnxTime.toFixed(3)} s | ${hooksTime.toFixed(3)} s | ${ortTime.toFixed(3)} s | ${(onnxTime / ortTime).toFixed(2)} | ${(hooksTime / onnxTime).toFixed(2)} | ×${(tfjsTime / onnxTime).toFixed(1)} |`);
}
await onnx.dispose();
await plainSession.release();
model.dispose();
fs.rmSync(dir, { recursive: true, force: true });

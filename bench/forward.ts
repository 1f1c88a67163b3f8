/**
 * Forward-pass throughput on a GPT-2-small-shaped model: 128-token forward with no hooks and with
 * every hook cached, the hook overhead ratio, and Arrow cache write speed.
 *   npx tsx bench/forward.ts [--tokens 128] [--reps 5]
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
import { medianSeconds } from './timing.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '128' }, reps: { type: 'string', default: '5' } } });
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
model.dispose();
fs.rmSync(dir, { recursive: true, force: true });

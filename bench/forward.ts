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
import { gpt2ForwardFlops, makeGpt2SmallCheckpoint } from './gpt2-small-checkpoint.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '128' }, reps: { type: 'string', default: '5' } } });
const T = Number(values.tokens);
const reps = Number(values.reps);

function timeIt(fn: () => void): number {
  fn(); // warm-up: kernel set-up and allocation
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]; // median
}

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

// Cache write: every layer's resid_post for 16 prompts of T tokens.
const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-bench-')), 'cache.arrow');
const prompts = Array.from({ length: 16 }, (_, p) => tokens.map((t) => (t + p) % 50257));
const tc = performance.now();
const { bytes } = await writeActivationCache(model, prompts, out, { hooks: ['blocks.*.hook_resid_post'], batchSize: 4 });
const tCache = (performance.now() - tc) / 1000;
// Separate pure write speed from the forwards that produced the data.
const forwards = (prompts.length / 4) * plain * 4;
console.log(`cache: ${(bytes / 1e6).toFixed(0)} MB in ${tCache.toFixed(2)} s end-to-end (${(bytes / 1e6 / tCache).toFixed(0)} MB/s incl. forwards; ~${(bytes / 1e6 / Math.max(tCache - forwards, 1e-3)).toFixed(0)} MB/s write after subtracting ${forwards.toFixed(2)} s of forward time)`);
model.dispose();
fs.rmSync(path.dirname(out), { recursive: true, force: true });
fs.rmSync(dir, { recursive: true, force: true });

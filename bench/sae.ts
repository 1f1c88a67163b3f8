/**
 * SAE throughput on the wasm backend (single-threaded):
 *   1. training tokens/s per architecture at the stories260K shape (d_in 64, d_sae 512), both the
 *      optimisation step alone (rows already in memory) and end to end (streamed from an Arrow
 *      cache through the shuffle buffer);
 *   2. encode (and encode+decode) tokens/s of a GPT-2-small-sized SAE (d_in 768, d_sae 24576,
 *      random weights) on one batch;
 *   3. the streaming reader alone (shuffled, rows/s and MB/s) at d_in 64 and 768.
 *
 *   npx tsx bench/sae.ts [--batch 4096] [--steps 20] [--encode-batch 256] [--reps 3]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.js';
import { ArrowCacheWriter } from '../src/io/arrow-cache.js';
import { ActivationStream } from '../src/sae/activation-stream.js';
import { makeSaeConfig } from '../src/sae/config.js';
import { Sae } from '../src/sae/sae.js';
import { SaeTrainer, type TrainArchitecture } from '../src/sae/train.js';
import { mulberry32 } from '../src/util/random.js';

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '4096' },
    steps: { type: 'string', default: '20' },
    'encode-batch': { type: 'string', default: '256' },
    reps: { type: 'string', default: '3' },
  },
});
const BATCH = Number(values.batch);
const STEPS = Number(values.steps);
const ENC_BATCH = Number(values['encode-batch']);
const REPS = Number(values.reps);

const backend = await initBackend();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-bench-sae-'));
const HOOK = 'blocks.2.hook_resid_post';

/** A cache of `rows` rows of d floats (Gaussian-ish, with a mean offset), prompts of 128 positions. */
async function makeCache(file: string, d: number, rows: number): Promise<number> {
  const r = mulberry32(d);
  const T = 128;
  const w = ArrowCacheWriter.open(file, { model: 'bench', columns: [{ name: HOOK, perPositionShape: [d] }] }, { maxBatchRows: 4096 });
  const acts = new Float32Array(T * d);
  for (let p = 0; p * T < rows; p++) {
    for (let i = 0; i < acts.length; i++) acts[i] = (r() + r() + r() - 1.5) * 2 + (i % d) * 0.01;
    w.writePrompt(p, Array.from({ length: T }, (_, i) => i), { [HOOK]: acts });
  }
  await w.close();
  return fs.statSync(file).size;
}

/**
 * A quarter of the latents never fire (b_enc = −10⁴), so after the warm-up steps they count as
 * dead and topk/batchtopk steps include the AuxK pass, the expensive case.
 */
function withDeadLatents(tr: SaeTrainer): SaeTrainer {
  const b = new Float32Array(tr.sae.b_enc.dataSync());
  for (let i = 0; i < b.length; i += 4) b[i] = -1e4;
  tf.tidy(() => tr.sae.b_enc.assign(tf.tensor1d(b)));
  return tr;
}

function fmt(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}

const out: string[] = [];
const log = (s: string) => {
  console.log(s);
  out.push(s);
};

try {
  log(`backend ${backend}, node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} logical)`);

  // 1. Training throughput at the stories shape.
  const small = path.join(dir, 'd64.arrow');
  await makeCache(small, 64, 65536);
  log(`\n## training, d_in 64, d_sae 512, batch ${BATCH} (${STEPS} timed steps after 3 warm-up)`);
  log('| architecture | step only (tokens/s) | streamed end to end (tokens/s) |');
  log('|---|---|---|');
  const cases: [TrainArchitecture, boolean][] = [['standard', false], ['topk', false], ['topk', true], ['batchtopk', false], ['batchtopk', true]];
  for (const [arch, dead] of cases) {
    const opts = {
      cache: small,
      hook: HOOK,
      architecture: arch,
      dSae: 512,
      k: arch === 'standard' ? undefined : 16,
      batchSize: BATCH,
      steps: STEPS + 3,
      lr: 1e-3,
      normalizeActivations: 'expected_average_only_in' as const,
      deadTokens: 3 * BATCH,
      resampleEvery: 0,
    };
    const make = () => (dead ? withDeadLatents(SaeTrainer.create(opts)) : SaeTrainer.create(opts));
    // Step only: the same in-memory batch each step.
    const tr = make();
    const { stream, batches } = tr.openStream();
    const rows = batches.next().value!.acts.slice();
    stream.close();
    for (let i = 0; i < 3; i++) tr.trainStep(rows);
    const t0 = performance.now();
    for (let i = 0; i < STEPS; i++) tr.trainStep(rows);
    const stepTps = (STEPS * BATCH) / ((performance.now() - t0) / 1000);
    tr.dispose();
    // End to end: run() streams the cache (shuffle buffer, record-batch reads) as training does.
    const tr2 = make();
    const t1 = performance.now();
    await tr2.run({ logEvery: 1000 });
    const e2eTps = ((STEPS + 3) * BATCH) / ((performance.now() - t1) / 1000);
    tr2.dispose();
    log(`| ${arch}${dead ? ' + AuxK (¼ of latents dead)' : ''} | ${fmt(stepTps)} | ${fmt(e2eTps)} |`);
  }

  // 2. Encode throughput of a GPT-2-small-sized SAE.
  log(`\n## encode, d_in 768, d_sae 24576, batch ${ENC_BATCH} tokens (random weights, best of ${REPS})`);
  log('| architecture | encode (tokens/s) | encode + decode (tokens/s) |');
  log('|---|---|---|');
  const xr = mulberry32(1);
  const xData = Float32Array.from({ length: ENC_BATCH * 768 }, () => xr() * 2 - 1);
  for (const arch of ['standard', 'topk'] as const) {
    const sae = Sae.init(makeSaeConfig({ architecture: arch, dIn: 768, dSae: 24576, k: arch === 'topk' ? 32 : undefined, hookName: 'blocks.8.hook_resid_pre' }), 3);
    const x = tf.tensor2d(xData, [ENC_BATCH, 768]);
    const time = (f: () => tf.Tensor[]): number => {
      let best = Infinity;
      for (let i = 0; i < REPS + 1; i++) {
        const t = performance.now();
        const ts = f();
        for (const y of ts) y.dataSync();
        tf.dispose(ts);
        if (i > 0) best = Math.min(best, performance.now() - t);
      }
      return (ENC_BATCH / best) * 1000;
    };
    const enc = time(() => [sae.encode(x)]);
    const fwd = time(() => {
      const { acts, recons } = sae.forward(x);
      return [acts, recons];
    });
    log(`| ${arch} | ${fmt(enc)} | ${fmt(fwd)} |`);
    x.dispose();
    sae.dispose();
  }

  // 3. The streaming reader alone.
  log(`\n## streaming reader (shuffled, batch 4096, default buffer)`);
  log('| d_in | rows | file MB | rows/s | MB/s |');
  log('|---|---|---|---|---|');
  for (const [d, rows] of [[64, 65536 * 4], [768, 65536]] as const) {
    const file = path.join(dir, `read-${d}.arrow`);
    const bytes = await makeCache(file, d, rows);
    let best = Infinity;
    let n = 0;
    for (let i = 0; i < REPS; i++) {
      const s = ActivationStream.open({ files: file, hook: HOOK, batchSize: 4096, seed: i });
      const t = performance.now();
      n = 0;
      for (const b of s.batches()) n += b.rows;
      best = Math.min(best, performance.now() - t);
      s.close();
    }
    log(`| ${d} | ${fmt(n)} | ${(bytes / 1e6).toFixed(1)} | ${fmt((n / best) * 1000)} | ${((bytes / 1e6 / best) * 1000).toFixed(0)} |`);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

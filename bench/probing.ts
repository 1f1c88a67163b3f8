/**
 * Probe fitting on the wasm backend, synthetic activations with planted class structure:
 *   1. a layer sweep from one Arrow cache: `--layers` hooks blocks.{l}.hook_resid_post (d 768),
 *      `--sweep-rows` rows (16 positions per prompt, one label per prompt, 10 classes), signal
 *      growing with depth; per layer probeRowsFromCache + fitProbe (logistic, 20 % test prompts),
 *      with RSS sampled before and after every layer (run first, so the big fit below does not
 *      inflate the baseline);
 *   2. fitLogistic / fitRidge / fitMeanDiff on `--rows` rows × d 768 in memory (10 classes,
 *      labels = argmax_k 3·x·w_k + Gumbel noise, i.e. exactly a softmax model).
 *
 *   npx tsx bench/probing.ts [--rows 100000] [--layers 12] [--sweep-rows 20000]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { initBackend } from '../src/backend/index.js';
import { ArrowCacheWriter, type HookColumnSpec } from '../src/io/arrow-cache.js';
import { fitProbe } from '../src/probing/fit.js';
import { readLabels } from '../src/probing/labels.js';
import { probeRowsFromCache } from '../src/probing/rows.js';
import { fitLogistic, fitMeanDiff, fitRidge, probeOutputs } from '../src/probing/solvers.js';
import { mulberry32 } from '../src/util/random.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    layers: { type: 'string', default: '12' },
    'sweep-rows': { type: 'string', default: '20000' },
  },
});
const N = Number(values.rows);
const LAYERS = Number(values.layers);
const SWEEP_ROWS = Number(values['sweep-rows']);
const D = 768;
const K = 10;
const T = 16;

const r = mulberry32(1234);
/** Standard normal (Box–Muller, one value per call). */
const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
const unit = (): Float64Array => {
  const v = Float64Array.from({ length: D }, gauss);
  const s = Math.hypot(...v);
  return v.map((a) => a / s);
};
const secs = (t0: number) => (performance.now() - t0) / 1000;
const mb = (b: number) => (b / 1e6).toFixed(0);
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
const rss = () => process.memoryUsage().rss;

const backend = await initBackend();
console.log(`backend ${backend}, node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} logical)`);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-bench-probing-'));
try {
  // 1. Layer sweep from one cache.
  const prompts = Math.ceil(SWEEP_ROWS / T);
  const hooks = Array.from({ length: LAYERS }, (_, l) => `blocks.${l}.hook_resid_post`);
  const columns: HookColumnSpec[] = hooks.map((name) => ({ name, perPositionShape: [D] }));
  const strength = hooks.map((_, l) => (4 * (l + 1)) / LAYERS); // class-mean offset per layer
  const mus = hooks.map(() => Array.from({ length: K }, unit));
  const labels = Int32Array.from({ length: prompts }, () => Math.floor(r() * K));
  const labelFile = path.join(dir, 'labels.jsonl');
  fs.writeFileSync(labelFile, Array.from(labels, (k, i) => JSON.stringify({ prompt: i, label: k })).join('\n') + '\n');
  const file = path.join(dir, 'cache.arrow');
  const tw = performance.now();
  const w = ArrowCacheWriter.open(file, { model: 'bench', columns });
  const acts: Record<string, Float32Array> = Object.fromEntries(hooks.map((h) => [h, new Float32Array(T * D)]));
  for (let p = 0; p < prompts; p++) {
    hooks.forEach((h, l) => {
      const a = acts[h];
      const mu = mus[l][labels[p]];
      for (let t = 0; t < T; t++) for (let j = 0; j < D; j++) a[t * D + j] = gauss() + strength[l] * mu[j];
    });
    w.writePrompt(p, Array.from({ length: T }, () => Math.floor(r() * 50257)), acts);
  }
  await w.close();
  const size = fs.statSync(file).size;
  const hookMB = (prompts * T * D * 4) / 1e6;
  console.log(`\n## sweep: ${LAYERS} hooks × ${fmt(prompts * T)} rows (${prompts} prompts × ${T} positions) × d ${D}, logistic ${K} classes, l2 1e-3, test 20 % of prompts`);
  console.log(`cache ${mb(size)} MB (one hook's rows ${hookMB.toFixed(0)} MB), written + generated in ${secs(tw).toFixed(1)} s`);
  const labelSet = readLabels(labelFile);
  const rss0 = rss();
  let peak = rss0;
  console.log(`RSS before sweep ${mb(rss0)} MB`);
  console.log('| hook | signal | train acc | test acc | iters | converged | read s | fit s | RSS after (MB) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  const ts = performance.now();
  let rowsFitted = 0;
  hooks.forEach((hook, l) => {
    const t0 = performance.now();
    const rows = probeRowsFromCache(file, hook, { position: 'all', labels: labelSet });
    const readS = secs(t0);
    const t1 = performance.now();
    const fp = fitProbe(rows, { method: 'logistic', l2: 1e-3, testFrac: 0.2, seed: 0 });
    const fitS = secs(t1);
    rowsFitted += rows.n;
    const now = rss();
    peak = Math.max(peak, now);
    console.log(`| ${hook} | ${strength[l].toFixed(2)} | ${fp.train.accuracy!.toFixed(3)} | ${fp.test!.accuracy!.toFixed(3)} | ${fp.solver.iterations} | ${fp.solver.converged} | ${readS.toFixed(2)} | ${fitS.toFixed(2)} | ${mb(now)} |`);
  });
  const sweepS = secs(ts);
  console.log(`sweep total ${sweepS.toFixed(1)} s, ${fmt(rowsFitted / sweepS)} rows/s (read + split + fit + score, all hooks)`);
  console.log(`RSS peak (sampled) ${mb(peak)} MB = before + ${mb(peak - rss0)} MB; process maxRSS ${mb(process.resourceUsage().maxRSS * 1024)} MB; file ${mb(size)} MB`);
  fs.rmSync(file, { force: true });

  // 2. One big in-memory fit.
  const wk = Array.from({ length: K }, unit);
  const x = new Float32Array(N * D);
  const y = new Int32Array(N);
  const target = new Float64Array(N);
  let planted = 0;
  const tg = performance.now();
  for (let i = 0; i < N; i++) {
    const off = i * D;
    for (let j = 0; j < D; j++) x[off + j] = gauss();
    let best = -Infinity;
    let bestClean = -Infinity;
    let cleanK = 0;
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let j = 0; j < D; j++) s += x[off + j] * wk[k][j];
      if (k === 0) target[i] = s + 0.5 * gauss();
      if (s > bestClean) [bestClean, cleanK] = [s, k];
      const z = 3 * s - Math.log(-Math.log(1 - r())); // + Gumbel noise
      if (z > best) [best, y[i]] = [z, k];
    }
    if (cleanK === y[i]) planted++;
  }
  const m = { x, n: N, d: D };
  console.log(`\n## in-memory fit: ${fmt(N)} rows × d ${D} (${mb(x.byteLength)} MB float32), generated in ${secs(tg).toFixed(1)} s`);
  const t0 = performance.now();
  const { probe, report } = fitLogistic(m, y, K, { l2: 1e-3, standardize: false });
  const logS = secs(t0);
  const z = probeOutputs(m, probe);
  let correct = 0;
  for (let i = 0; i < N; i++) {
    let bk = 0;
    for (let k = 1; k < K; k++) if (z[i * K + k] > z[i * K + bk]) bk = k;
    if (bk === y[i]) correct++;
  }
  const it = report.iterations ?? 0;
  console.log(`logistic (${K} classes, l2 1e-3): ${logS.toFixed(1)} s wall, ${fmt(N / logS)} rows/s of wall time, ${it} iterations, ${fmt((N * it) / logS)} row·iterations/s`);
  console.log(`  objective ${report.objective.toFixed(6)}, gradNorm ${report.gradNorm?.toExponential(2)}, converged ${report.converged}, train acc ${(correct / N).toFixed(4)} (Bayes-optimal, argmax of the planted logits: ${(planted / N).toFixed(4)})`);
  const t1 = performance.now();
  const ridge = fitRidge(m, target, { l2: 1e-3, standardize: false });
  const ridgeS = secs(t1);
  console.log(`ridge (l2 1e-3): ${ridgeS.toFixed(1)} s wall, ${fmt(N / ridgeS)} rows/s, objective ${ridge.report.objective.toFixed(5)}`);
  const yb = Int32Array.from(y, (k) => (k < K / 2 ? 1 : 0));
  const t2 = performance.now();
  fitMeanDiff(m, yb, { standardize: false });
  const mdS = secs(t2);
  console.log(`mean-diff (classes 0–4 vs 5–9): ${mdS.toFixed(2)} s wall, ${fmt(N / mdS)} rows/s`);
  console.log(`process maxRSS ${mb(process.resourceUsage().maxRSS * 1024)} MB`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

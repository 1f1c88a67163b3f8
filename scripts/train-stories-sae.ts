/**
 * Train the shipped stories260K SAE: a TopK SAE on `blocks.2.hook_resid_post` (the middle of the
 * model's 5 layers, d_in 64), trained on the train split of datasets/stories/stories.jsonl and
 * evaluated (evaluateSae: L0, explained variance, MSE, cosine, CE orig/SAE/zero, CE loss score,
 * KL) on the held-out eval split. Seeded and deterministic.
 *
 *   npx tsx scripts/train-stories-sae.ts [--model ../shared/models/stories260K.gguf]
 *       [--d-sae 512] [--k 16] [--tokens 4000000] [--batch 1024] [--lr 0.002] [--seed 0]
 *       [--out datasets/stories260K-sae] [--work sae-runs/stories260K-sae]
 *       [--sweep 256:8,512:8,512:16 [--sweep-tokens 1000000]]
 *
 * Writes OUT in SAELens layout (cfg.json, sae_weights.safetensors, sparsity.safetensors) plus
 * training.json (settings, training time and tokens, final training metrics, eval metrics).
 * The activation cache and checkpoints go to WORK (not committed); the cache is rebuilt when the
 * corpus changes. With --sweep, each d_sae:k pair is trained for --sweep-tokens tokens and
 * evaluated on the eval split; results go to WORK/sweep.json (and into training.json of the next
 * full run on the same corpus), and nothing is written to OUT.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readStoriesSplit, STORIES_JSONL } from '../datasets/stories.js';
import { progressBar } from '../src/cli/progress.js';
import { writeActivationCache } from '../src/hooks/cache-to-arrow.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { loadModel } from '../src/models/load.js';
import { evaluateSae, pickEvalMetrics, type SaeEvalResult } from '../src/sae/eval.js';
import { trainSae, type SaeTrainOptions, type TrainSaeResult } from '../src/sae/train.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: '../shared/models/stories260K.gguf' },
    hook: { type: 'string', default: 'blocks.2.hook_resid_post' },
    corpus: { type: 'string', default: STORIES_JSONL },
    'd-sae': { type: 'string', default: '512' },
    k: { type: 'string', default: '16' },
    tokens: { type: 'string', default: '4000000' },
    batch: { type: 'string', default: '1024' },
    lr: { type: 'string', default: '0.002' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'datasets/stories260K-sae' },
    work: { type: 'string', default: 'sae-runs/stories260K-sae' },
    sweep: { type: 'string' },
    'sweep-tokens': { type: 'string', default: '1000000' },
  },
});

const num = (flag: string, s: string | undefined): number => {
  const v = Number(s);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${flag} must be a positive number, got ${s}`);
  return v;
};
const HOOK = values.hook!;
const BATCH = num('batch', values.batch);
const LR = num('lr', values.lr);
const SEED = Number(values.seed);
const WORK = values.work!;

const corpusBytes = fs.readFileSync(values.corpus!);
const corpusSha = crypto.createHash('sha256').update(corpusBytes).digest('hex');
const split = readStoriesSplit(values.corpus);
const model = await loadModel(values.model!);
const evalPrompts = split.eval.map((s) => s.tokens);
const count = (xs: { tokens: number[] }[]) => xs.reduce((s, x) => s + x.tokens.length, 0);

// Activation cache of the train split, rebuilt when the corpus, model or hook changes.
fs.mkdirSync(WORK, { recursive: true });
const cacheFile = path.join(WORK, `${HOOK}.train.arrow`);
const stampFile = `${cacheFile}.json`;
const stamp = JSON.stringify({ corpusSha, model: path.basename(values.model!), hook: HOOK });
if (!fs.existsSync(cacheFile) || !fs.existsSync(stampFile) || fs.readFileSync(stampFile, 'utf8') !== stamp) {
  const bar = progressBar(`caching ${HOOK}`);
  const t = Date.now();
  fs.rmSync(cacheFile, { force: true });
  const { rows } = await writeActivationCache(model, split.train.map((s) => s.tokens), cacheFile, {
    hooks: [HOOK],
    onProgress: (d, n) => bar.update(d, n),
    writer: { maxBatchRows: 4096 },
  });
  bar.stop();
  writeFileAtomic(stampFile, stamp);
  console.error(`cached ${rows} rows of ${HOOK} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
}

function options(dSae: number, k: number, tokens: number): SaeTrainOptions {
  const steps = Math.ceil(tokens / BATCH);
  return {
    cache: cacheFile,
    hook: HOOK,
    architecture: 'topk',
    dSae,
    k,
    tokens,
    batchSize: BATCH,
    lr: LR,
    lrWarmupSteps: Math.min(200, Math.floor(steps / 20)),
    lrDecaySteps: Math.floor(steps / 5),
    seed: SEED,
    normalizeActivations: 'expected_average_only_in',
    bDecInit: 'geometric_median',
    // Dead = silent for ~4 epochs of the train split (63K tokens each).
    deadTokens: 250_000,
    densityWindowTokens: 250_000,
    modelName: 'stories260K',
    cfgExtra: { dataset_path: 'datasets/stories/stories.jsonl', prepend_bos: true, context_size: 128 },
    logEvery: 50,
  };
}

function evalMetrics(r: SaeEvalResult) {
  return { ...pickEvalMetrics(r), fvu: r.fvu, dead_fraction: r.dead_fraction, dense_fraction: r.dense_fraction, n_tokens: r.n_tokens, n_ce_positions: r.n_ce_positions };
}

const round = (x: number, d = 6) => Number(x.toFixed(d));

if (values.sweep) {
  const pairs = values.sweep.split(',').map((p) => p.split(':').map(Number) as [number, number]);
  const tokens = num('sweep-tokens', values['sweep-tokens']);
  const results = [];
  for (const [dSae, k] of pairs) {
    const t0 = Date.now();
    const r = await trainSae(options(dSae, k, tokens));
    const ev = evaluateSae(model, r.sae, evalPrompts);
    r.sae.dispose();
    const row = { d_sae: dSae, k, tokens: r.tokensSeen, seconds: round(r.seconds, 1), ...Object.fromEntries(Object.entries(evalMetrics(ev)).map(([a, b]) => [a, round(b)])) };
    results.push(row);
    console.log(JSON.stringify(row), `(${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  writeFileAtomic(path.join(WORK, 'sweep.json'), JSON.stringify({ corpusSha, hook: HOOK, lr: LR, batch: BATCH, seed: SEED, tokens, results }, null, 2) + '\n');
  model.dispose();
  process.exit(0);
}

const D_SAE = num('d-sae', values['d-sae']);
const K = num('k', values.k);
const TOKENS = num('tokens', values.tokens);
const ckpt = path.join(WORK, `checkpoint-${D_SAE}-${K}`);
fs.rmSync(ckpt, { recursive: true, force: true });
const opts = options(D_SAE, K, TOKENS);
const bar = progressBar('training');
const t0 = Date.now();
const result: TrainSaeResult = await trainSae({ ...opts, checkpointDir: ckpt, checkpointEvery: 1000, out: values.out, onProgress: (p) => bar.update(p.step, p.totalSteps) });
bar.stop();
const wall = (Date.now() - t0) / 1000;
const tEval = Date.now();
const ev = evaluateSae(model, result.sae, evalPrompts);
const evalSeconds = (Date.now() - tEval) / 1000;
const sweepFile = path.join(WORK, 'sweep.json');
const sweep = fs.existsSync(sweepFile) ? JSON.parse(fs.readFileSync(sweepFile, 'utf8')) : null;

const training = {
  description: `TopK SAE (d_sae ${D_SAE}, k ${K}) on stories260K ${HOOK}, trained on the train split of the stories corpus, evaluated on its held-out eval split`,
  command: `npx tsx scripts/train-stories-sae.ts --d-sae ${D_SAE} --k ${K} --tokens ${TOKENS} --batch ${BATCH} --lr ${LR} --seed ${SEED}`,
  model: path.basename(values.model!),
  hook: HOOK,
  corpus: {
    file: 'datasets/stories/stories.jsonl',
    sha256: corpusSha,
    train: { stories: split.train.length, tokens: count(split.train) },
    eval: { stories: split.eval.length, tokens: count(split.eval) },
  },
  settings: result.settings,
  training: {
    steps: result.step,
    tokens: result.tokensSeen,
    epochs: round(result.tokensSeen / count(split.train), 2),
    seconds: round(result.seconds, 1),
    wall_seconds: round(wall, 1),
    tokens_per_second: Math.round(result.tokensPerSecond),
    backend: 'wasm (single-threaded)',
    final_train_metrics: result.last,
    dead_fraction_train: result.deadFraction,
  },
  eval: { ...Object.fromEntries(Object.entries(evalMetrics(ev)).map(([a, b]) => [a, round(b)])), seconds: round(evalSeconds, 1) },
  sweep: sweep && sweep.corpusSha === corpusSha ? sweep : null,
};
result.sae.dispose();
writeFileAtomic(path.join(values.out!, 'training.json'), JSON.stringify(training, null, 2) + '\n');
model.dispose();
console.log(JSON.stringify({ training: training.training, eval: training.eval }, null, 2));

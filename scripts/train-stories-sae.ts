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
import { writeFileAtomic } from '../src/io/atomic.js';
import { loadModel } from '../src/models/load.js';
import { evaluateSae } from '../src/sae/eval.js';
import { cacheActivationsOnce, evalMetrics, parseSweep, round, runSweep, topkOptions, trainFinal, trainingFigures, type TopkRecipe } from './sae-recipe.js';

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
const cacheFile = await cacheActivationsOnce(model, split.train.map((s) => s.tokens), {
  work: WORK,
  hook: HOOK,
  stamp: JSON.stringify({ corpusSha, model: path.basename(values.model!), hook: HOOK }),
});
const recipe: TopkRecipe = {
  cacheFile,
  hook: HOOK,
  batch: BATCH,
  lr: LR,
  seed: SEED,
  modelName: 'stories260K',
  cfgExtra: { dataset_path: 'datasets/stories/stories.jsonl', prepend_bos: true, context_size: 128 },
};
const options = (dSae: number, k: number, tokens: number) => topkOptions(recipe, dSae, k, tokens);

if (values.sweep) {
  const tokens = num('sweep-tokens', values['sweep-tokens']);
  const results = await runSweep(parseSweep(values.sweep), tokens, options, (sae) => evalMetrics(evaluateSae(model, sae, evalPrompts)));
  writeFileAtomic(path.join(WORK, 'sweep.json'), JSON.stringify({ corpusSha, hook: HOOK, lr: LR, batch: BATCH, seed: SEED, tokens, results }, null, 2) + '\n');
  model.dispose();
  process.exit(0);
}

const D_SAE = num('d-sae', values['d-sae']);
const K = num('k', values.k);
const TOKENS = num('tokens', values.tokens);
const { result, wall } = await trainFinal(options(D_SAE, K, TOKENS), WORK, values.out!);
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
  training: trainingFigures(result, count(split.train), wall),
  eval: { ...evalMetrics(ev), seconds: round(evalSeconds, 1) },
  sweep: sweep && sweep.corpusSha === corpusSha ? sweep : null,
};
result.sae.dispose();
writeFileAtomic(path.join(values.out!, 'training.json'), JSON.stringify(training, null, 2) + '\n');
model.dispose();
console.log(JSON.stringify({ training: training.training, eval: training.eval }, null, 2));

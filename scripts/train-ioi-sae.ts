/**
 * Train the shipped IOI-model SAE: a TopK SAE on `blocks.0.hook_resid_post` of the shipped IOI
 * model (datasets/ioi-gpt2; the residual stream right after a0.h1 — the S-suppression head — and
 * MLP0 have written; d_in 64), trained on text from the model's own corpus generator
 * (datasets/ioi-corpus.ts `sampleDocument`, TRAINING split of names and templates, seeded) and
 * evaluated (evaluateSae, plus the IOI logit difference with the SAE spliced in) on held-out IOI
 * prompts (TEST split names and templates). Seeded and deterministic.
 *
 *   npx tsx scripts/train-ioi-sae.ts [--model datasets/ioi-gpt2] [--docs 4000] [--p-ioi 0.6]
 *       [--d-sae 256] [--k 8] [--tokens 2000000] [--batch 1024] [--lr 0.002] [--seed 0]
 *       [--out datasets/ioi-gpt2-sae] [--work sae-runs/ioi-gpt2]
 *       [--sweep 128:8,256:8,256:16,512:8 [--sweep-tokens 1000000]]
 *
 * Corpus: --docs documents, each BOS + one `sampleDocument` draw (an IOI sentence with its answer
 * with probability --p-ioi, the model's training mix; else a repeated name list or a filler
 * sentence over all names). Documents are drawn from mulberry32(seed).
 * Validation (model selection, --sweep): 256 held-out IOI prompts (test split, prompt seed 2).
 * Eval (the reported figures): 256 other held-out IOI prompts (test split, prompt seed 1, none
 * shared with the validation set), each the clean prompt + its answer token, so the IOI
 * prediction is one of the CE positions; plus 300 fresh corpus documents (seed + 1) as an
 * in-distribution check, and IOI prompts from each mix of training / held-out templates and names
 * (where the held-out gap comes from).
 *
 * Writes OUT in SAELens layout (cfg.json, sae_weights.safetensors, sparsity.safetensors) plus
 * training.json. The activation cache and checkpoints go to WORK (gitignored). With --sweep, each
 * d_sae:k pair is trained for --sweep-tokens tokens and scored on the validation prompts; results go
 * to WORK/sweep-TOKENS.json (and into training.json of the next full run on the same corpus), nothing to
 * OUT. The latent-level IOI analysis is scripts/ioi-sae-latents.ts (writes OUT/latents.json).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { generateIoiPrompts, mulberry32, type IoiPrompt } from '../datasets/ioi.js';
import { IOI_MODEL_SPLIT, sampleDocument } from '../datasets/ioi-corpus.js';
import { namesKnownTo } from '../src/circuits/ioi-report.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { loadModel } from '../src/models/load.js';
import { evaluateSae } from '../src/sae/eval.js';
import type { Sae } from '../src/sae/sae.js';
import { spliceSae } from '../src/sae/splice.js';
import { cacheActivationsOnce, evalMetrics, parseSweep, round, runSweep, topkOptions, trainFinal, trainingFigures, type TopkRecipe } from './sae-recipe.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'datasets/ioi-gpt2' },
    hook: { type: 'string', default: 'blocks.0.hook_resid_post' },
    docs: { type: 'string', default: '4000' },
    'p-ioi': { type: 'string', default: '0.6' },
    'd-sae': { type: 'string', default: '256' },
    k: { type: 'string', default: '8' },
    tokens: { type: 'string', default: '2000000' },
    batch: { type: 'string', default: '1024' },
    lr: { type: 'string', default: '0.002' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'datasets/ioi-gpt2-sae' },
    work: { type: 'string', default: 'sae-runs/ioi-gpt2' },
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
const DOCS = num('docs', values.docs);
const P_IOI = Number(values['p-ioi']);
if (!(P_IOI >= 0 && P_IOI <= 1)) throw new Error(`--p-ioi must be in [0, 1], got ${values['p-ioi']}`);
const BATCH = num('batch', values.batch);
const LR = num('lr', values.lr);
const SEED = Number(values.seed);
if (!Number.isInteger(SEED) || SEED < 0) throw new Error(`--seed must be a non-negative integer, got ${values.seed}`);
const WORK = values.work!;
const EVAL_N = 256;

const model = await loadModel(values.model!);
const tokenizer = model.tokenizer;
if (!tokenizer) throw new Error(`${values.model}: the model has no tokenizer`);
const UNK_ID = tokenizer.encode('[UNK]', { addSpecialTokens: false })[0];

function encodeKnown(text: string): number[] {
  const ids = model.encode(text);
  if (ids.includes(UNK_ID)) throw new Error(`a word of ${JSON.stringify(text)} is not in the model's vocabulary`);
  return ids;
}

/** BOS + one sampleDocument draw each, from mulberry32(seed). */
function corpus(n: number, seed: number): { text: string; tokens: number[] }[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const text = sampleDocument(rand, IOI_MODEL_SPLIT.train, P_IOI);
    return { text, tokens: encodeKnown(text) };
  });
}

const train = corpus(DOCS, SEED);
const inDist = corpus(300, SEED + 1);
const corpusSha = crypto.createHash('sha256').update(JSON.stringify(train.map((d) => d.tokens))).digest('hex');
const count = (xs: { tokens: number[] }[]) => xs.reduce((s, x) => s + x.tokens.length, 0);
// IOI sentences end "… to IO." (every template ends with "to"; no filler sentence ends "to <Name>.").
const nIoiDocs = train.filter((d) => / to [A-Z][a-z]+\.$/.test(d.text)).length;

// Held-out IOI prompts (test split of names and templates; names the tokenizer knows).
const testNames = namesKnownTo(tokenizer, IOI_MODEL_SPLIT.test.names);
const evalIoi = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names: testNames, n: EVAL_N, seed: 1, tokenizer, requireSameLength: false });
const evalClean = new Set(evalIoi.map((p) => p.clean));
const valIoi = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names: testNames, n: 2 * EVAL_N, seed: 2, tokenizer, requireSameLength: false })
  .filter((p) => !evalClean.has(p.clean))
  .slice(0, EVAL_N);
if (valIoi.length < EVAL_N) throw new Error(`only ${valIoi.length} validation prompts are disjoint from the eval prompts`);
const withAnswer = (ps: IoiPrompt[]) => ps.map((p) => encodeKnown(p.clean + p.answer));
const evalPrompts = withAnswer(evalIoi);
const valPrompts = withAnswer(valIoi);

// Activation cache of the training documents, rebuilt when the corpus, model or hook changes.
const cacheFile = await cacheActivationsOnce(model, train.map((d) => d.tokens), {
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
  modelName: 'ioi-gpt2',
  cfgExtra: { dataset_path: 'datasets/ioi-corpus.ts (sampleDocument, IOI_MODEL_SPLIT.train)', prepend_bos: true, context_size: 32 },
};
const options = (dSae: number, k: number, tokens: number) => topkOptions(recipe, dSae, k, tokens);

/** IOI accuracy and mean logit difference (IO − S at the final position), optionally with the SAE spliced in (no error term). */
function ioiScore(m: HookedModel, prompts: IoiPrompt[], sae?: Sae): { accuracy: number; mean_logit_diff: number } {
  const byLen = new Map<number, { ids: number[]; io: number; s: number }[]>();
  for (const p of prompts) {
    const ids = encodeKnown(p.clean);
    const [io] = tokenizer!.encode(p.answer, { addSpecialTokens: false });
    const [s] = tokenizer!.encode(p.wrong, { addSpecialTokens: false });
    byLen.set(ids.length, [...(byLen.get(ids.length) ?? []), { ids, io, s }]);
  }
  let correct = 0;
  let sum = 0;
  for (const group of byLen.values()) {
    const lds = tf.tidy(() => {
      const logits = m.run(group.map((g) => g.ids), { finalPositionOnly: true, fwdHooks: sae ? spliceSae(m, sae) : [] });
      const V = m.cfg.dVocab;
      const flat = logits.reshape([group.length, V]);
      const io = tf.gather(flat.reshape([-1]), group.map((g, b) => b * V + g.io));
      const s = tf.gather(flat.reshape([-1]), group.map((g, b) => b * V + g.s));
      return tf.sub(io, s);
    });
    for (const ld of lds.dataSync()) {
      sum += ld;
      if (ld > 0) correct++;
    }
    lds.dispose();
  }
  return { accuracy: correct / prompts.length, mean_logit_diff: sum / prompts.length };
}

function ioiMetrics(prompts: IoiPrompt[], sae: Sae) {
  const orig = ioiScore(model, prompts);
  const spliced = ioiScore(model, prompts, sae);
  return {
    accuracy_orig: round(orig.accuracy, 4),
    accuracy_sae: round(spliced.accuracy, 4),
    logit_diff_orig: round(orig.mean_logit_diff, 4),
    logit_diff_sae: round(spliced.mean_logit_diff, 4),
    logit_diff_recovered: round(spliced.mean_logit_diff / orig.mean_logit_diff, 4),
  };
}

if (values.sweep) {
  const tokens = num('sweep-tokens', values['sweep-tokens']);
  const results = await runSweep(parseSweep(values.sweep), tokens, options, (sae) => ({ ...evalMetrics(evaluateSae(model, sae, valPrompts)), ...ioiMetrics(valIoi, sae) }));
  writeFileAtomic(
    path.join(WORK, `sweep-${tokens}.json`),
    JSON.stringify({ corpusSha, hook: HOOK, lr: LR, batch: BATCH, seed: SEED, tokens, scored_on: `${valIoi.length} validation IOI prompts (test split, prompt seed 2) + answer token`, results }, null, 2) + '\n',
  );
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
const evIn = evaluateSae(model, result.sae, inDist.map((d) => d.tokens));
// Where the held-out gap comes from: IOI prompts (+ answer) with each half of the split held out.
const trainV = IOI_MODEL_SPLIT.train;
const testV = { ...IOI_MODEL_SPLIT.test, names: testNames };
const bySource = Object.fromEntries(
  (
    [
      ['train_templates_train_names', trainV],
      ['train_templates_heldout_names', { ...trainV, names: testV.names }],
      ['heldout_templates_train_names', { ...testV, names: trainV.names }],
      ['heldout_templates_heldout_names', testV],
    ] as const
  ).map(([label, v]) => {
    const ps = generateIoiPrompts({ ...v, n: EVAL_N, seed: 5, tokenizer, requireSameLength: false });
    const r = evaluateSae(model, result.sae, withAnswer(ps));
    return [label, { explained_variance: round(r.explained_variance), ce_orig: round(r.ce_orig), ce_sae: round(r.ce_sae), ce_loss_score: round(r.ce_loss_score), kl_div: round(r.kl_div) }];
  }),
);
// Every sweep on this corpus (one file per --sweep-tokens), shortest first.
const sweeps = fs
  .readdirSync(WORK)
  .filter((f) => /^sweep-\d+\.json$/.test(f))
  .map((f) => JSON.parse(fs.readFileSync(path.join(WORK, f), 'utf8')))
  .filter((s) => s.corpusSha === corpusSha && s.hook === HOOK)
  .sort((a, b) => a.tokens - b.tokens);

const training = {
  description: `TopK SAE (d_sae ${D_SAE}, k ${K}) on the shipped IOI model's ${HOOK} (after a0.h1 and MLP0), trained on its corpus generator's text (training split of names and templates), evaluated on held-out IOI prompts (test split)`,
  command: `npx tsx scripts/train-ioi-sae.ts --d-sae ${D_SAE} --k ${K} --tokens ${TOKENS} --batch ${BATCH} --lr ${LR} --seed ${SEED} --docs ${DOCS} --p-ioi ${P_IOI}`,
  model: 'datasets/ioi-gpt2',
  hook: HOOK,
  corpus: {
    generator: 'datasets/ioi-corpus.ts sampleDocument(mulberry32(seed), IOI_MODEL_SPLIT.train, p_ioi), one document per prompt, BOS prepended',
    seed: SEED,
    p_ioi: P_IOI,
    sha256_of_token_ids: corpusSha,
    documents: train.length,
    ioi_sentences: nIoiDocs,
    tokens: count(train),
  },
  eval_prompts: {
    what: 'held-out IOI prompts: IOI_MODEL_SPLIT.test names (known to the tokenizer) and templates, generateIoiPrompts seed 1, clean prompt + answer token',
    n: evalIoi.length,
    tokens: count(evalPrompts.map((tokens) => ({ tokens }))),
    validation: 'model selection (--sweep) used 256 other test-split prompts (seed 2), none shared with these',
  },
  settings: result.settings,
  training: trainingFigures(result, count(train), wall),
  eval: { ...evalMetrics(ev), seconds: round(evalSeconds, 1) },
  eval_ioi: ioiMetrics(evalIoi, result.sae),
  eval_in_distribution: { what: '300 fresh corpus documents (seed + 1)', ...evalMetrics(evIn) },
  eval_by_source: { what: `${EVAL_N} IOI prompts (+ answer, prompt seed 5) per combination of training / held-out templates and names`, ...bySource },
  sweeps,
};
result.sae.dispose();
writeFileAtomic(path.join(values.out!, 'training.json'), JSON.stringify(training, null, 2) + '\n');
model.dispose();
console.log(JSON.stringify({ training: { ...training.training, final_train_metrics: undefined }, eval: training.eval, eval_ioi: training.eval_ioi, eval_in_distribution: training.eval_in_distribution, eval_by_source: bySource }, null, 2));
process.exit(0);

/**
 * Train the deeper IOI model of datasets/ioi-gpt2-deep: GPT-2 architecture, a byte-level BPE
 * tokenizer trained on its own corpus, and a corpus that defeats positional shortcuts
 * (datasets/ioi-deep-corpus.ts). Two phases with one optimizer:
 *  1. --steps (5000) on the fixed templates (and --compose of the first grammar), stories,
 *     filler and name lists;
 *  2. --phase2-steps (3000), the learning rate restarted, on the wide grammar (S2 in many roles,
 *     insertions of varying length between S2 and its verb, distractors before and after S2)
 *     with made-up names in part of the IOI sentences, so that only a name-agnostic
 *     "suppress the repeated name" mechanism answers every sentence.
 * Seeded and deterministic (single-threaded wasm kernels, data drawn from (seed, step)),
 * resumable from an atomic checkpoint (also across the phases), interruptible (Ctrl-C saves).
 *
 *   npx tsx scripts/train-ioi-deep.ts [--steps 5000] [--phase2-steps 3000] [--out datasets/ioi-gpt2-deep] [--checkpoint DIR]
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend } from '../src/backend/index.js';
import { StagedModel } from '../src/hooks/staged-model.js';
import { CausalLmGraph } from '../src/models/graph.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { gpt2Config, gpt2Weights } from '../src/models/families/gpt2.js';
import { CausalLmTrainer, initGpt2Weights } from '../src/training/causal-lm.js';
import { restoreCheckpoint, saveCheckpoint } from '../src/training/checkpoint.js';
import { gpt2ConfigJson, gpt2HfTensors, writeGpt2Directory, type Gpt2Shape } from '../src/training/gpt2-checkpoint.js';
import { BpeEncoder, bpeTokenizerFiles, trainBpe } from '../src/tokenizers/bpe-trainer.js';
import { progressBar } from '../src/cli/progress.js';
import { hfTokenizerFromJson } from '../src/tokenizers/hf-tokenizer.js';
import { DEEP_MIX, bpeTrainingTexts, deepTrainingBatch, type CorpusOptions } from '../datasets/ioi-deep-corpus.js';
import { deepEvalSets } from '../datasets/ioi-deep-eval.js';
import { evaluateIoi } from '../datasets/ioi-eval.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '5000' },
    out: { type: 'string', default: 'datasets/ioi-gpt2-deep' },
    checkpoint: { type: 'string', default: '.ioi-deep-checkpoint' },
    seed: { type: 'string', default: '0' },
    layers: { type: 'string', default: '6' },
    'd-model': { type: 'string', default: '64' },
    heads: { type: 'string', default: '4' },
    vocab: { type: 'string', default: '2048' },
    batch: { type: 'string', default: '16' },
    'seq-len': { type: 'string', default: '64' },
    lr: { type: 'string', default: '2e-3' },
    'eval-every': { type: 'string', default: '250' },
    'p-ioi': { type: 'string', default: String(DEEP_MIX.ioi) },
    // Fraction of IOI sentences from the template grammar (composeTemplate) instead of the fixed templates.
    compose: { type: 'string', default: '0' },
    // Phase 2 (after --steps): a restarted schedule on the wide grammar (composeWideTemplate).
    'phase2-steps': { type: 'string', default: '3000' },
    'phase2-lr': { type: 'string', default: '1e-3' },
    'phase2-wide': { type: 'string', default: '0.7' },
    'phase2-p-ioi': { type: 'string', default: '0.6' },
    // Fraction of phase 2's IOI sentences with made-up names (pseudoNames).
    'phase2-pseudo': { type: 'string', default: '0.4' },
    // Fraction of phase 2's wide-grammar templates with an insertion between S2 and its verb.
    'phase2-insert': { type: 'string', default: '0' },
    // Phase 2's share of name-list documents, and of held-out names in name lists and filler.
    // (default: the phase-1 proportions of everything but IOI sentences)
    'phase2-names': { type: 'string' },
    'phase2-held-out-share': { type: 'string', default: '0' },
    // Phase 2's fraction of story documents said twice (for induction heads).
    'phase2-repeat': { type: 'string', default: '0' },
    // Phase 2's fraction of wide-grammar templates with S2 in a middle sentence.
    'phase2-moved': { type: 'string', default: '0' },
  },
});
/** A numeric option, or a one-line error naming it. */
function num(name: keyof typeof values, lo: number, hi: number): number {
  const x = Number(values[name]);
  if (!(x >= lo && x <= hi)) {
    console.error(`train-ioi-deep: error: --${name}: expected a number in [${lo}, ${hi}], got '${values[name]}'`);
    process.exit(2);
  }
  return x;
}
const STEPS = num('steps', 0, 1e7);
const SEED = num('seed', 0, 2 ** 31);
const BATCH = num('batch', 1, 4096);
const T = num('seq-len', 2, 4096);
const D = num('d-model', 4, 4096);
const LR = num('lr', 0, 1);
const WARMUP = 300;
/** IOI sentences with probability pIoi; name lists with probability pNames (default: DEEP_MIX's share of the rest); stories and filler in DEEP_MIX's proportion. */
const mixWith = (pIoi: number, pNames?: number) => {
  if (pNames === undefined) {
    const restScale = (1 - pIoi) / (1 - DEEP_MIX.ioi);
    return { ioi: pIoi, story: DEEP_MIX.story * restScale, filler: DEEP_MIX.filler * restScale, names: DEEP_MIX.names * restScale };
  }
  const restScale = (1 - pIoi - pNames) / (DEEP_MIX.story + DEEP_MIX.filler);
  return { ioi: pIoi, story: DEEP_MIX.story * restScale, filler: DEEP_MIX.filler * restScale, names: pNames };
};
const PHASE1: CorpusOptions = { mix: mixWith(num('p-ioi', 0, 1)), compose: num('compose', 0, 1) };
const PHASE2 = {
  steps: num('phase2-steps', 0, 1e7),
  lr: num('phase2-lr', 0, 1),
  warmup: 100,
  corpus: {
    mix: mixWith(num('phase2-p-ioi', 0, 1), values['phase2-names'] === undefined ? undefined : num('phase2-names', 0, 1)),
    wide: num('phase2-wide', 0, 1),
    pseudo: num('phase2-pseudo', 0, 1),
    insert: num('phase2-insert', 0, 1),
    heldOutShare: num('phase2-held-out-share', 0, 1),
    repeat: num('phase2-repeat', 0, 1),
    moved: num('phase2-moved', 0, 1),
  } satisfies CorpusOptions,
};
const TOTAL = STEPS + PHASE2.steps;
const EVAL_EVERY = num('eval-every', 1, 1e7);

await initBackend();
// The tokenizer is a function of the corpus alone (trained in ~5 s), so a resumed run rebuilds it identically.
const bpe = trainBpe(bpeTrainingTexts(), num('vocab', 300, 1e6));
const encoder = new BpeEncoder(bpe.vocab, bpe.merges);
const { tokenizerJson, tokenizerConfig } = bpeTokenizerFiles(bpe.vocab, bpe.merges);
const shape: Gpt2Shape = { nLayers: num('layers', 1, 64), dModel: D, nHeads: num('heads', 1, 64), dMlp: 4 * D, nCtx: T, dVocab: bpe.vocab.length };
const cfg = gpt2Config(gpt2ConfigJson(shape), 'train-ioi-deep');
const trainer = new CausalLmTrainer(cfg, initGpt2Weights(cfg, SEED), [
  { peak: LR, warmup: WARMUP, total: STEPS },
  { from: STEPS, peak: PHASE2.lr, warmup: PHASE2.warmup, total: PHASE2.steps },
]);

// Evaluation through the tokenizer files we ship, so it sees exactly what users will.
const tokenizer = await hfTokenizerFromJson(tokenizerJson, tokenizerConfig);
const evalSets = deepEvalSets(tokenizer, 200);

function evaluate(): Record<string, { n: number; accuracy: number; meanLogitDiff: number }> {
  const model = new StagedModel(new CausalLmGraph(cfg), gpt2Weights(cfg, gpt2HfTensors(trainer.weights(), shape.nLayers), 'train'), tokenizer, 'training');
  try {
    return Object.fromEntries(Object.entries(evalSets).map(([k, prompts]) => [k, evaluateIoi(model, prompts)]));
  } finally {
    model.dispose();
  }
}

// Resume.
const start = await restoreCheckpoint(trainer, values.checkpoint);
if (start > 0) console.error(`resumed from ${values.checkpoint} at step ${start}`);
const logFile = path.join(values.checkpoint, 'log.json');
const log: { step: number; loss: number; seconds: number; eval: ReturnType<typeof evaluate> }[] = fs.existsSync(logFile) ? JSON.parse(fs.readFileSync(logFile, 'utf8')) : [];
async function checkpoint(step: number) {
  await saveCheckpoint(trainer, values.checkpoint, step);
  writeFileAtomic(logFile, JSON.stringify(log));
}

let interrupted = false;
process.on('SIGINT', () => (interrupted = true));
const bar = progressBar('train');
const t0 = performance.now();
const secondsBefore = log.length ? log[log.length - 1].seconds : 0;
let emaLoss = 0;
let step = start;
/** Batch `step`: phase 1's corpus, then phase 2's (both a function of (seed, step) alone). */
const encode = (t: string) => encoder.encode(t);
const batchAt = (step: number) => deepTrainingBatch(encode, 0, SEED, step, BATCH, T, step < STEPS ? PHASE1 : PHASE2.corpus);
for (; step < TOTAL && !interrupted; step++) {
  const loss = trainer.step(step, batchAt(step), BATCH, T);
  emaLoss = step === start ? loss : 0.98 * emaLoss + 0.02 * loss;
  bar.update(step + 1, TOTAL);
  if ((step + 1) % EVAL_EVERY === 0 || step + 1 === TOTAL) {
    const e = evaluate();
    const seconds = secondsBefore + (performance.now() - t0) / 1000;
    log.push({ step: step + 1, loss: emaLoss, seconds, eval: e });
    if (!process.stderr.isTTY) console.error(`step ${step + 1} ${seconds.toFixed(0)} s loss ${emaLoss.toFixed(3)} ` + Object.entries(e).map(([k, v]) => `${k} ${v.accuracy.toFixed(3)}/${v.meanLogitDiff.toFixed(2)}`).join(' '));
    await checkpoint(step + 1);
  }
}
bar.stop();
if (interrupted) {
  await checkpoint(step);
  console.error(`interrupted at step ${step}; checkpoint saved to ${values.checkpoint} (run again to resume)`);
  process.exit(130);
}

const final = evaluate();
writeGpt2Directory(values.out, shape, trainer.weights(), { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': tokenizerConfig });
writeFileAtomic(
  path.join(values.out, 'training.json'),
  JSON.stringify(
    {
      seed: SEED,
      steps: TOTAL,
      phase1: { steps: STEPS, ...PHASE1 },
      phase2: PHASE2,
      batch: BATCH,
      seqLen: T,
      shape,
      optimizer: `adam(0.9, 0.98); phase 1: peak lr ${LR}, warmup ${WARMUP}, cosine to ${LR / 10}; phase 2: restart at ${PHASE2.lr}, warmup ${PHASE2.warmup}, cosine to ${PHASE2.lr / 10}`,
      trainingSeconds: log.length ? log[log.length - 1].seconds : null,
      machine: 'tfjs wasm, one thread',
      final,
      log,
    },
    null,
    2,
  ) + '\n',
);
console.log(JSON.stringify(final));
trainer.dispose();

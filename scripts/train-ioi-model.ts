/**
 * Train the small GPT-2-architecture model that ships in datasets/ioi-gpt2 and really solves
 * indirect object identification. Seeded and deterministic (single-threaded wasm kernels, data
 * drawn from (seed, step)), resumable from an atomic checkpoint, interruptible (Ctrl-C saves).
 *
 *   npx tsx scripts/train-ioi-model.ts [--steps 4000] [--out datasets/ioi-gpt2] [--checkpoint DIR]
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend } from '../src/backend/index.js';
import { StagedModel } from '../src/hooks/staged-model.js';
import { CausalLmGraph } from '../src/models/graph.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { gpt2Config } from '../src/models/families/gpt2.js';
import { gpt2Weights } from '../src/models/families/gpt2.js';
import { CausalLmTrainer, initGpt2Weights } from '../src/training/causal-lm.js';
import { restoreCheckpoint, saveCheckpoint } from '../src/training/checkpoint.js';
import { gpt2ConfigJson, gpt2HfTensors, writeGpt2Directory, type Gpt2Shape } from '../src/training/gpt2-checkpoint.js';
import { wordTokenizerJson } from '../src/tokenizers/word-tokenizer.js';
import { progressBar } from '../src/cli/progress.js';
import { hfTokenizerFromJson } from '../src/tokenizers/hf-tokenizer.js';
import { IOI_MODEL_SPLIT, corpusWords, trainingBatch } from '../datasets/ioi-corpus.js';
import { evaluateIoi } from '../datasets/ioi-eval.js';
import { generateIoiPrompts } from '../datasets/ioi.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '4000' },
    out: { type: 'string', default: 'datasets/ioi-gpt2' },
    checkpoint: { type: 'string', default: '.ioi-train-checkpoint' },
    seed: { type: 'string', default: '0' },
    layers: { type: 'string', default: '3' },
    'd-model': { type: 'string', default: '64' },
    heads: { type: 'string', default: '4' },
    lr: { type: 'string', default: '3e-3' },
    'p-ioi': { type: 'string', default: '0.6' },
  },
});
const STEPS = Number(values.steps);
const SEED = Number(values.seed);
const BATCH = 32;
const T = 32;
const D = Number(values['d-model']);
const SHAPE: Omit<Gpt2Shape, 'dVocab'> = { nLayers: Number(values.layers), dModel: D, nHeads: Number(values.heads), dMlp: 4 * D, nCtx: T };
const LR = Number(values.lr);

await initBackend();
const { tokenizerJson, tokenizerConfig, vocab } = wordTokenizerJson(corpusWords());
const vocabIds = new Map(vocab.map((w, i) => [w, i]));
const shape: Gpt2Shape = { ...SHAPE, dVocab: vocab.length };
const cfg = gpt2Config(gpt2ConfigJson(shape), 'train-ioi-model');
const trainer = new CausalLmTrainer(cfg, initGpt2Weights(cfg, SEED), { peak: LR, warmup: 200, total: STEPS });

// Evaluation prompts: held-out names and templates only. A tokenizer from the files we ship
// makes sure evaluation sees exactly what users will.
const tokenizer = await hfTokenizerFromJson(tokenizerJson, tokenizerConfig);
const heldOut = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, n: 200, seed: 1, tokenizer, requireSameLength: false });
const seenTemplates = generateIoiPrompts({ ...IOI_MODEL_SPLIT.train, names: IOI_MODEL_SPLIT.test.names, n: 200, seed: 2, tokenizer, requireSameLength: false });

function evaluate() {
  const model = new StagedModel(new CausalLmGraph(cfg), gpt2Weights(cfg, gpt2HfTensorsAsSource(), 'train'), tokenizer, 'training');
  try {
    return { heldOut: evaluateIoi(model, heldOut), heldOutNamesSeenTemplates: evaluateIoi(model, seenTemplates) };
  } finally {
    model.dispose();
  }
}
function gpt2HfTensorsAsSource() {
  return gpt2HfTensors(trainer.weights(), shape.nLayers);
}

// Resume.
const start = await restoreCheckpoint(trainer, values.checkpoint);
if (start > 0) console.error(`resumed from ${values.checkpoint} at step ${start}`);

let interrupted = false;
process.on('SIGINT', () => (interrupted = true));
const bar = progressBar('train');
const log: { step: number; loss: number; heldOutAccuracy?: number; heldOutLogitDiff?: number }[] = [];
let emaLoss = 0;
let step = start;
for (; step < STEPS && !interrupted; step++) {
  const loss = trainer.step(step, trainingBatch(vocabIds, SEED, step, BATCH, T, Number(values['p-ioi'])), BATCH, T);
  emaLoss = step === start ? loss : 0.98 * emaLoss + 0.02 * loss;
  bar.update(step + 1, STEPS);
  if ((step + 1) % 250 === 0 || step + 1 === STEPS) {
    const e = evaluate();
    log.push({ step: step + 1, loss: emaLoss, heldOutAccuracy: e.heldOut.accuracy, heldOutLogitDiff: e.heldOut.meanLogitDiff });
    if (!process.stderr.isTTY) console.error(`step ${step + 1} loss ${emaLoss.toFixed(3)} held-out acc ${e.heldOut.accuracy.toFixed(3)} LD ${e.heldOut.meanLogitDiff.toFixed(2)}`);
    await saveCheckpoint(trainer, values.checkpoint, step + 1);
  }
}
bar.stop();
if (interrupted) {
  await saveCheckpoint(trainer, values.checkpoint, step);
  console.error(`interrupted at step ${step}; checkpoint saved to ${values.checkpoint} (run again to resume)`);
  process.exit(130);
}

const final = evaluate();
writeGpt2Directory(values.out, shape, trainer.weights(), { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': tokenizerConfig });
writeFileAtomic(
  path.join(values.out, 'training.json'),
  JSON.stringify({ seed: SEED, steps: STEPS, batch: BATCH, seqLen: T, shape, optimizer: `adam(0.9, 0.98), peak lr ${LR}, warmup 200, cosine to ${LR / 10}`, split: { heldOutNames: IOI_MODEL_SPLIT.test.names, heldOutTemplates: IOI_MODEL_SPLIT.test.templates }, final, log }, null, 2) + '\n',
);
console.log(JSON.stringify(final));
trainer.dispose();

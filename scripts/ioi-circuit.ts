/**
 * The IOI circuit study on the shipped model (or any GPT-2-style model with a tokenizer):
 * accuracy and logit difference on held-out IOI pairs, activation patching / AtP / RelP grids and
 * their agreement, head roles, EAP edges, a greedy circuit with its mean-ablation faithfulness, the
 * answer-head ablation, and an HTML report (index.html, circuit.json, circuit.svg, summary.json).
 *
 *   npx tsx scripts/ioi-circuit.ts [--model PATH] [--n 32] [--seed 0] [--out ioi-report] [--json]
 *                                  [--target 0.8]
 *
 * The orchestration lives in src/circuits/ioi-report.ts; this file parses flags, loads the model,
 * makes the prompts, times the phases and prints.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateIoiPrompts } from '../datasets/ioi.js';
import { IOI_MODEL_SPLIT } from '../datasets/ioi-corpus.js';
import { DEEP_NAMES, DEEP_SPLIT, isDeepIoiTokenizer } from '../datasets/ioi-deep-corpus.js';
import { fail, HooklensError } from '../src/errors.js';
import { parseOptions, parsePositiveInt } from '../src/cli/args.js';
import { progressBar, type Progress } from '../src/cli/progress.js';
import { loadModel } from '../src/models/load.js';
import { formatIoiSummary, ioiTransferCheck, namesKnownTo, runIoiCircuitStudy, writeIoiReport } from '../src/circuits/ioi-report.js';
import { ioiProbingPrompts, runIoiProbing } from '../src/circuits/ioi-probing.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_MODEL = path.join(REPO, 'datasets', 'ioi-gpt2');

const USAGE = `usage: npx tsx scripts/ioi-circuit.ts [--model PATH] [--n 32] [--seed 0] [--out ioi-report] [--json] [--target 0.8]

  --model PATH   model directory (default datasets/ioi-gpt2, the shipped IOI model; a model trained by
                 scripts/train-ioi-deep.ts gets that corpus's held-out prompts; e.g. GPT-2 small works too)
  --n N          number of held-out IOI prompt pairs (default 32; all share one token length)
  --seed S       prompt seed (default 0)
  --out DIR      report directory (default ioi-report): index.html, circuit.json, circuit.svg, summary.json
  --target F     faithfulness the greedy circuit must reach (default 0.8)
  --probe-n N    prompts for the IO-identity probes (default 320, over 8 names)
  --json         print summary.json to stdout instead of the text summary`;

async function main(argv: string[]): Promise<void> {
  const { values } = parseOptions('ioi-circuit', argv, {
    model: { type: 'string' },
    n: { type: 'string' },
    seed: { type: 'string' },
    out: { type: 'string' },
    target: { type: 'string' },
    'probe-n': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const n = parsePositiveInt('--n', values.n, 32);
  const probeN = parsePositiveInt('--probe-n', values['probe-n'], 320);
  const seedText = values.seed ?? '0';
  if (!/^\d+$/.test(seedText)) fail(`--seed: expected a non-negative integer, got '${seedText}'`);
  const seed = Number(seedText);
  const target = values.target === undefined ? 0.8 : Number(values.target);
  if (!(target > 0 && target <= 1.5)) fail(`--target: expected a number in (0, 1.5], got '${values.target}'`);
  const out = values.out ?? 'ioi-report';
  const modelSpec = values.model ?? DEFAULT_MODEL;
  if (values.model === undefined && !fs.existsSync(DEFAULT_MODEL)) {
    fail(`${path.relative(process.cwd(), DEFAULT_MODEL) || DEFAULT_MODEL}: the shipped IOI model is missing (train it with scripts/train-ioi-model.ts, or pass --model PATH)`);
  }

  const interactive = !!process.stderr.isTTY && !process.env.CI;
  const say = (msg: string) => {
    if (interactive) process.stderr.write(`ioi-circuit: ${msg}\n`);
  };
  const timings: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => T | Promise<T>): Promise<T> => {
    say(`${name}…`);
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      timings[name] = (performance.now() - t0) / 1000;
    }
  };

  const model = await timed('load', () => loadModel(modelSpec));
  try {
    if (!model.tokenizer) fail(`${modelSpec}: the model has no tokenizer; IOI prompts are text`);
    // The deep IOI model: its held-out names × held-out templates (only templates that open with
    // a word, so that every name is a " Name" token). Any other model: the shipped model's split.
    const deep = isDeepIoiTokenizer(model.tokenizer!);
    // The circuit is found without the distractor templates; the transfer check below uses them.
    const heldOut = DEEP_SPLIT.heldOutTemplates.filter((t) => !t.startsWith('['));
    const split = deep ? { names: DEEP_NAMES.otherTextOnly, templates: heldOut.filter((t) => !t.includes('[D]')), places: DEEP_SPLIT.train.places, objects: DEEP_SPLIT.train.objects } : IOI_MODEL_SPLIT.test;
    const names = namesKnownTo(model.tokenizer, split.names);
    if (names.length < split.names.length) {
      const unknown = split.names.filter((x) => !names.includes(x));
      console.error(`ioi-circuit: note: ${unknown.length} of ${split.names.length} held-out names are not in the model's vocabulary and are skipped (${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''})`);
    }
    const prompts = await timed('generate', () => generateIoiPrompts({ ...split, names, n, seed, tokenizer: model.tokenizer!, requireSameLength: true }));
    let bar: Progress | null = null;
    const result = await runIoiCircuitStudy(model, prompts, {
      modelName: values.model ?? path.relative(REPO, DEFAULT_MODEL),
      target,
      onPhase: (phase) => {
        bar?.stop();
        bar = null;
        if (phase === 'patching') bar = progressBar('activation patching');
        else say(`${phase}…`);
      },
      onProgress: (done, total) => bar?.update(done, total),
    });
    (bar as Progress | null)?.stop();
    say('probing…');
    // Probes need more prompts per class than patching: their own prompt set, over fewer names.
    const probePrompts = ioiProbingPrompts(model, { ...split, names }, { n: probeN, seed: seed + 1 });
    result.probing = await timed('probing', () => runIoiProbing(model, probePrompts));
    // The circuit on prompts it was not found on: another seed, and for the deep model the
    // held-out template whose latest name is a distractor.
    const other = deep ? { ...split, templates: heldOut.filter((t) => t.includes('[D]')) } : split;
    const transferPrompts = generateIoiPrompts({ ...other, names, n, seed: seed + 1000, tokenizer: model.tokenizer!, requireSameLength: true });
    result.transfer = await timed('transfer', () => ioiTransferCheck(model, result, transferPrompts, deep ? 'held-out distractor template, another seed' : 'another seed'));
    // Caller phases first, then the study's.
    result.timings = { ...timings, ...result.timings };
    say('report…');
    const written = await writeIoiReport(out, result);
    if (values.json) {
      for (const w of result.warnings) console.error(`ioi-circuit: warning: ${w}`);
      process.stdout.write(JSON.stringify(written.summary) + '\n');
    } else {
      console.log(formatIoiSummary(result));
      console.log(`\ntotal ${written.summary.totalSeconds?.toFixed(1)} s; report: ${written.files.html} (+ circuit.json, circuit.svg, summary.json)`);
    }
  } finally {
    model.dispose();
  }
}

try {
  await main(process.argv.slice(2));
  // Exit explicitly: tfjs can keep handles open.
  process.exit(0);
} catch (e) {
  if (e instanceof HooklensError) console.error(`ioi-circuit: error: ${e.message.replace(/^ioi-circuit: /, '')}`);
  else {
    console.error(`ioi-circuit: internal error: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    if (process.env.HOOKLENS_DEBUG && e instanceof Error) console.error(e.stack);
  }
  process.exit(1);
}

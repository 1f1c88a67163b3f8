/**
 * How well AtP and RelP (with each attention rule) reproduce activation patching, with bootstrap
 * intervals over ≥ 100 IOI prompt pairs: Pearson, relative L2 error and slope per component
 * (residual stream, attention and MLP outputs per position, heads, MLP neurons), plus the model's
 * accuracy on the pairs and RelP's conservation for each rule set.
 *
 *   npx tsx scripts/relp-agreement.ts [--model datasets/ioi-gpt2-deep | stories260K.gguf]
 *        [--n 100] [--samples 1000] [--components resid_pre,attn_out,mlp_out,head_out,mlp_post]
 *        [--out relp-agreement.json] [--task ioi|pronoun]
 *
 * Prompts (all of one token length, so that position grids pool): the deep IOI model's held-out
 * names × held-out templates when the model is that one (by its tokenizer knowing the names as
 * single tokens), else TinyStories-style IOI (`--simple` prompts). `--task pronoun` (stories
 * models): the next pronoun after a named character (datasets/pronoun-task.ts).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseOptions, parsePositiveInt } from '../src/cli/args.js';
import { progressBar } from '../src/cli/progress.js';
import { loadModel } from '../src/models/load.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { OnnxForward } from '../src/onnx/onnx-forward.js';
import { bootstrapAgreement, perPairGrids, type AgreementWithCi } from '../src/patching/bootstrap.js';
import { relevanceConservation } from '../src/patching/conservation.js';
import { tokenizePairs, type PromptPair } from '../src/patching/pairs.js';
import { COMPONENT_NAMES } from '../src/patching/sites.js';
import type { Component, Method } from '../src/patching/types.js';
import type { RelpRule } from '../src/models/grad-rules.js';
import { generateIoiPrompts, type IoiPrompt } from '../datasets/ioi.js';
import { DEEP_NAMES, DEEP_SPLIT, isDeepIoiTokenizer } from '../datasets/ioi-deep-corpus.js';
import { evaluateIoi } from '../datasets/ioi-eval.js';
import { fail } from '../src/errors.js';
import { pronounPairs } from '../datasets/pronoun-task.js';
import { logitDiffScore, pairBatches } from '../src/circuits/common.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseOptions('relp-agreement', process.argv.slice(2), {
  model: { type: 'string' },
  n: { type: 'string' },
  samples: { type: 'string' },
  components: { type: 'string' },
  out: { type: 'string' },
  task: { type: 'string' },
});
const modelPath = values.model ?? path.join(REPO, 'datasets', 'ioi-gpt2-deep');
const N = parsePositiveInt('--n', values.n, 100);
const samples = parsePositiveInt('--samples', values.samples, 1000);
const components = (values.components ?? 'resid_pre,attn_out,mlp_out,head_out,mlp_post').split(',') as Component[];
for (const c of components) if (!COMPONENT_NAMES.includes(c)) fail(`--components: unknown component '${c}'`);
const out = values.out ?? 'relp-agreement.json';

const model = await loadModel(modelPath);
const tok = model.tokenizer ?? fail(`${modelPath}: the model has no tokenizer`);
// The deep IOI model knows its corpus's held-out names as single tokens; other models get the simple preset.
const deep = isDeepIoiTokenizer(tok);
const task = values.task ?? 'ioi';
if (task !== 'ioi' && task !== 'pronoun') fail(`--task must be ioi or pronoun, got '${task}'`);
const prompts: IoiPrompt[] = task === 'pronoun' ? [] : deep
  ? generateIoiPrompts({ n: N, seed: 7, names: DEEP_NAMES.otherTextOnly, templates: DEEP_SPLIT.heldOutTemplates.filter((t) => !t.startsWith('[')), places: DEEP_SPLIT.train.places, objects: DEEP_SPLIT.train.objects, tokenizer: tok, requireSameLength: true })
  : generateIoiPrompts({ n: N, seed: 7, preset: 'simple', tokenizer: tok, requireSameLength: true });
let pairs: PromptPair[];
let score: { n: number; accuracy: number; meanLogitDiff: number };
if (task === 'pronoun') {
  pairs = pronounPairs(model, N);
  const { clean, targets } = pairBatches(model, pairs);
  score = logitDiffScore(model, clean, targets);
} else {
  if (prompts.length < N) fail(`only ${prompts.length} prompt pairs could be made; need ${N}`);
  score = evaluateIoi(model, prompts);
  const tokenized = tokenizePairs(model, prompts.map((p) => ({ clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong })), 'relp-agreement');
  if (tokenized.warnings.length) console.error(`note: ${tokenized.warnings.length} answers are several tokens (the first is used)`);
  pairs = tokenized.pairs;
}

const ruleSets: { name: string; rules: RelpRule[] }[] = [
  { name: 'relp', rules: ['LN', 'Identity', 'Half'] },
  { name: 'relp+AH', rules: ['LN', 'Identity', 'Half', 'AH'] },
  { name: 'relp+AttnHalf', rules: ['LN', 'Identity', 'Half', 'AttnHalf'] },
];
const onnx = new OnnxForward(model);
const t0 = performance.now();
const results: (AgreementWithCi & { rules?: RelpRule[] })[] = [];
for (const component of components) {
  const bar = progressBar(component);
  const grids = await perPairGrids(model, pairs as PromptPair[], component, ['activation', 'atp'] as Method[], { onnx, onPair: (d, t) => bar.update(d, t) });
  const [act, atp] = grids;
  results.push(bootstrapAgreement(atp, act, { samples }));
  for (const rs of ruleSets) {
    const [relp] = await perPairGrids(model, pairs, component, ['relp'], { grid: { rules: rs.rules } });
    results.push({ ...bootstrapAgreement(relp, act, { samples }), rules: rs.rules });
  }
  bar.stop();
  console.error(`${component} done (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}
const conservation = ruleSets.map((rs) => {
  const c = pairs.slice(0, 20).map((p) => relevanceConservation(model, p.clean, p.answer, p.wrong, rs.rules).input);
  return { rules: rs.rules, inputRatioMean: c.reduce((a, b) => a + b, 0) / c.length, inputRatioRange: [Math.min(...c), Math.max(...c)] };
});
const seconds = (performance.now() - t0) / 1000;
const f = (x: number) => x.toFixed(3);
const taskText = task === 'pronoun' ? 'pronoun after a named character, story prefixes' : deep ? 'IOI, held-out names × held-out templates' : 'TinyStories-style IOI';
console.log(`${path.basename(modelPath)}: ${N} pairs (${taskText}), accuracy ${f(score.accuracy)}, mean LD ${f(score.meanLogitDiff)}; ${samples} bootstrap samples, ${seconds.toFixed(0)} s`);
console.log('component   method          Pearson [95% CI]         rel. L2 [95% CI]          slope [95% CI]');
for (const r of results) {
  const m = r.rules ? ruleSets.find((s) => s.rules.join() === r.rules!.join())!.name : r.method;
  const ci = (i: { value: number; lo: number; hi: number }) => `${f(i.value)} [${f(i.lo)}, ${f(i.hi)}]`.padEnd(25);
  console.log(`${r.component.padEnd(11)} ${m.padEnd(15)} ${ci(r.pearson)} ${ci(r.relL2)} ${ci(r.slope)}`);
}
for (const c of conservation) console.log(`conservation ${c.rules.join('+')}: Σ relevance at the input / LD = ${f(c.inputRatioMean)} (range ${f(c.inputRatioRange[0])} … ${f(c.inputRatioRange[1])}, 20 pairs)`);
writeFileAtomic(out, JSON.stringify({ model: modelPath, nPairs: N, task: taskText, accuracy: score, samples, seconds, results, conservation }, null, 2) + '\n');
await onnx.dispose();
model.dispose();

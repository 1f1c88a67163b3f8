import fs from 'node:fs';
import { STEER_OPTIONS, STEER_USAGE, steerEdits } from './steer-args.js';
import { BACKEND_OPTION, BACKEND_USAGE, onnxFor } from './backend.js';
import { fail } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { relevanceConservation } from '../patching/conservation.js';
import { DEFAULT_RELP_RULES, RELP_RULES, checkRelpRules, type RelpRule } from '../models/grad-rules.js';
import { loadModel } from '../models/load.js';
import { METRICS, type MetricKind } from '../patching/metrics.js';
import { readPairsFile, tokenizePairs, type TextPair } from '../patching/pairs.js';
import { writePatchingReport } from '../patching/report.js';
import { PatchingSession } from '../patching/session.js';
import { COMPONENT_NAMES } from '../patching/sites.js';
import { runSuiteAsync } from '../patching/suite.js';
import type { Component, Method } from '../patching/types.js';
import { IMAGE_OPTION, parseOptions, parseTokenList, printJson, requireString, type Command } from './args.js';
import { imagesFromFiles } from './images.js';
import { progressBar } from './progress.js';

const METHODS: Method[] = ['activation', 'atp', 'relp'];

export const patchCommand: Command = {
  name: 'patch',
  summary: 'activation patching, attribution patching (AtP, AtP*) and RelP grids',
  usage: `hooklens patch --model PATH
        (--clean-tokens IDS --corrupt-tokens IDS --answer-token ID --wrong-token ID
         | --clean S --corrupt S --answer S --wrong S | --pairs FILE.jsonl)
        --component C --method activation|atp|relp [--rules LN,Identity,Half[,AH|AttnHalf]]
        [--image FILE | --clean-image FILE --corrupt-image FILE]
        --out FILE.json [--report FILE.html] [--metric M] [--direction denoising|noising]
        [--qk-fix] [--grad-drop] [--json]

  --component     ${COMPONENT_NAMES.join(', ')}
                  block components give [n_layers, n_pos] grids, head_out / q / k / v / pattern
                  [n_layers, n_heads], head_out_pos [n_layers, n_pos, n_heads], mlp_post (one MLP
                  neuron at every position) [n_layers, d_mlp]; vision.* are the
                  vision tower's ([tower layers, patch positions] for vision.resid_pre etc.)
  --method        activation (real patched forwards), atp (gradient estimate), relp (LRP rules)
  --rules         RelP rules (default ${DEFAULT_RELP_RULES.join(',')}; optional for attention: AH
                  (pattern constant) or AttnHalf (AttnLRP: Half rule on Q·Kᵀ and pattern·V))
  --pairs FILE    JSONL lines {"clean","corrupt","answer","wrong"}: text or token ids; clean and
                  corrupt must tokenize to the same length (and all pairs to one length);
                  vision-language pairs add "image" or "clean_image" / "corrupt_image" (paths)
  --image FILE    vision-language models: the same image in clean and corrupt runs (repeatable)
  --clean-image FILE, --corrupt-image FILE
                  an image corruption: different images (same or different tokens)
  --answer S      answer text as it continues the prompt (e.g. " Mary"); multi-token answers use
                  their first token and say so on stderr
  --metric M      ${METRICS.join(', ')} (default logit_diff: mean over pairs of
                  logit(answer) − logit(wrong) at the final position)
  --direction     denoising (default: clean activations patched into the corrupted run) or noising
  --qk-fix        AtP*: exact attention softmax for q/k components
  --grad-drop     AtP*: GradDrop
  --report FILE   HTML report: heatmaps of activation, atp and relp for the component and their
                  agreement (Pearson, Spearman, top-k overlap with activation patching)
${BACKEND_USAGE}
                   (for patch: activation patching's patched forwards; AtP/RelP are tfjs)
  A probe's direction can be steered or ablated in every forward of the session:
${STEER_USAGE}

Output (--out, and stdout with --json):
  {"component","method","rules","ld_clean","ld_corrupt","shape":[..],"scores":[[..]..]}
  with --method relp also "conservation": {"input", "perCut"} (Σ relevance at a residual cut / LD)
  scores are normalised: (LD_patched − LD_corrupt) / (LD_clean − LD_corrupt).`,
  async run(argv) {
    const { values } = parseOptions('patch', argv, {
      model: { type: 'string' },
      'clean-tokens': { type: 'string' },
      'corrupt-tokens': { type: 'string' },
      'answer-token': { type: 'string' },
      'wrong-token': { type: 'string' },
      clean: { type: 'string' },
      corrupt: { type: 'string' },
      answer: { type: 'string' },
      wrong: { type: 'string' },
      pairs: { type: 'string' },
      component: { type: 'string' },
      method: { type: 'string' },
      rules: { type: 'string' },
      out: { type: 'string' },
      report: { type: 'string' },
      metric: { type: 'string' },
      direction: { type: 'string' },
      'qk-fix': { type: 'boolean' },
      'grad-drop': { type: 'boolean' },
      json: { type: 'boolean' },
      ...IMAGE_OPTION,
      'clean-image': { type: 'string', multiple: true },
      'corrupt-image': { type: 'string', multiple: true },
      ...STEER_OPTIONS,
      ...BACKEND_OPTION,
    });
    const modelPath = requireString('patch', values, 'model');
    const out = requireString('patch', values, 'out');
    const component = requireString('patch', values, 'component') as Component;
    if (!COMPONENT_NAMES.includes(component)) fail(`patch: unknown --component '${component}' (choose from ${COMPONENT_NAMES.join(', ')})`);
    const method = requireString('patch', values, 'method') as Method;
    if (!METHODS.includes(method)) fail(`patch: unknown --method '${method}' (choose from ${METHODS.join(', ')})`);
    const rules = parseRules(values.rules);
    if (values.rules !== undefined && method !== 'relp') fail('patch: --rules only applies to --method relp');
    if ((values['qk-fix'] || values['grad-drop']) && method !== 'atp') fail('patch: --qk-fix and --grad-drop are AtP* options (--method atp)');
    if (values['qk-fix'] && component !== 'q' && component !== 'k') fail(`patch: --qk-fix applies to the q and k components, not '${component}'`);
    const metric = (values.metric ?? 'logit_diff') as MetricKind;
    if (!METRICS.includes(metric)) fail(`patch: unknown --metric '${metric}' (choose from ${METRICS.join(', ')})`);
    const direction = values.direction ?? 'denoising';
    if (direction !== 'denoising' && direction !== 'noising') fail(`patch: --direction must be denoising or noising, got '${direction}'`);
    for (const f of [out, values.report]) if (f && fs.existsSync(f) && fs.statSync(f).isDirectory()) fail(`${f}: is a directory`);
    const textPairs = pairsFromArgs(values);

    const sideFiles = imageFilesFromArgs(values);
    const model = await loadModel(modelPath);
    if (model.graph.kind === 'vision-tower') fail(`patch: ${modelPath} is a ${model.graph.description}; patching needs a language model's logits`);
    for (const p of textPairs) {
      const files = { clean: p.imageFiles?.clean ? [p.imageFiles.clean] : sideFiles.clean, corrupt: p.imageFiles?.corrupt ? [p.imageFiles.corrupt] : sideFiles.corrupt };
      p.cleanImages = await imagesFromFiles(model, files.clean);
      p.corruptImages = await imagesFromFiles(model, files.corrupt);
    }
    const { pairs, warnings } = tokenizePairs(model, textPairs, values.pairs ?? 'patch');
    for (const w of warnings) console.error(`hooklens patch: note: ${w}`);
    const bar = progressBar(`patch ${component}`);
    // A probe intervention applies to every forward of the session (clean, corrupt and patched).
    const edits = steerEdits(model, values);
    // Activation patching's patched forwards run on onnxruntime where they can (probe edits are graph inputs there).
    const onnx = onnxFor(model, 'patch', values.backend, null);
    const session = new PatchingSession(model, pairs, { metric, direction, ...(edits.length ? { edits } : {}), ...(onnx ? { onnx } : {}), onProgress: (d, t) => bar.update(d, t) });
    try {
      const gridOpts = { rules, qkFix: values['qk-fix'], gradDrop: values['grad-drop'] };
      const methods = values.report ? [method, ...METHODS.filter((m) => m !== method)] : [method];
      const suite = await runSuiteAsync(session, [component], methods, gridOpts);
      bar.stop();
      const grid = suite.grids[0];
      const result = {
        component: grid.component,
        method: grid.method,
        rules: grid.rules,
        ...(grid.variant ? { variant: grid.variant } : {}),
        metric,
        direction,
        ld_clean: grid.ld_clean,
        ld_corrupt: grid.ld_corrupt,
        shape: grid.shape,
        axes: grid.axes,
        scores: grid.scores,
      };
      // RelP's conservation (Σ relevance at the input / output) for the rules used, on the first
      // clean prompt (text prompts: image inputs are not part of the residual stream's sum).
      const first = pairs[0];
      const conservation = methods.includes('relp') && !first.cleanImages && !edits.length ? [relevanceConservation(model, first.clean, first.answer, first.wrong, rules)] : [];
      if (conservation.length && method === 'relp') (result as Record<string, unknown>).conservation = { input: conservation[0].input, perCut: conservation[0].perCut };
      if (values.report) {
        const labels = model.tokenizer ? pairs[0].clean.map((t) => model.tokenizer!.decode([t], { skipSpecialTokens: false })) : [];
        await writePatchingReport(values.report, { model: model.source, tokenLabels: labels, grids: suite.grids, agreement: suite.agreement, timings: suite.timings, conservation });
      }
      writeFileAtomic(out, JSON.stringify(result) + '\n');
      if (values.json) printJson(result);
    } finally {
      bar.stop();
      session.dispose();
      await onnx?.dispose();
    }
  },
};

/** --image (both sides) or --clean-image / --corrupt-image (one each). */
function imageFilesFromArgs(v: Record<string, unknown>): { clean?: string[]; corrupt?: string[] } {
  const list = (k: string) => (Array.isArray(v[k]) && (v[k] as string[]).length ? (v[k] as string[]) : undefined);
  const both = list('image');
  const clean = list('clean-image');
  const corrupt = list('corrupt-image');
  if (both && (clean || corrupt)) fail('patch: give --image (both runs) or --clean-image and --corrupt-image, not both');
  if (!both && !!clean !== !!corrupt) fail(`patch: --${clean ? 'clean' : 'corrupt'}-image needs --${clean ? 'corrupt' : 'clean'}-image too`);
  return both ? { clean: both, corrupt: both } : { clean, corrupt };
}

function parseRules(s: string | undefined): RelpRule[] {
  if (s === undefined) return [...DEFAULT_RELP_RULES];
  const rules = s.split(',').map((r) => r.trim()).filter(Boolean);
  for (const r of rules) if (!RELP_RULES.includes(r as RelpRule)) fail(`patch: unknown RelP rule '${r}' (choose from ${RELP_RULES.join(', ')})`);
  checkRelpRules(rules as RelpRule[]);
  return rules as RelpRule[];
}

function pairsFromArgs(v: Record<string, string | string[] | boolean | undefined>): TextPair[] {
  const tokenForm = ['clean-tokens', 'corrupt-tokens', 'answer-token', 'wrong-token'];
  const textForm = ['clean', 'corrupt', 'answer', 'wrong'];
  const used = [tokenForm.some((k) => v[k] !== undefined), textForm.some((k) => v[k] !== undefined), v.pairs !== undefined].filter(Boolean).length;
  if (used !== 1) fail('patch: give exactly one of the token form (--clean-tokens ...), the text form (--clean ...) or --pairs FILE.jsonl');
  if (v.pairs !== undefined) return readPairsFile(String(v.pairs));
  const form = tokenForm.some((k) => v[k] !== undefined) ? tokenForm : textForm;
  for (const k of form) if (v[k] === undefined || v[k] === '') fail(`patch: missing --${k}`);
  if (form === textForm) return [{ clean: String(v.clean), corrupt: String(v.corrupt), answer: String(v.answer), wrong: String(v.wrong) }];
  const id = (k: string) => {
    const [x, ...rest] = parseTokenList(`--${k}`, String(v[k]));
    if (rest.length) fail(`--${k}: expected one token id`);
    return x;
  };
  return [{ clean: parseTokenList('--clean-tokens', String(v['clean-tokens'])), corrupt: parseTokenList('--corrupt-tokens', String(v['corrupt-tokens'])), answer: id('answer-token'), wrong: id('wrong-token') }];
}

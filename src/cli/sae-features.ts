/** `hooklens sae features`: per-feature statistics of an SAE over a corpus → SQLite feature store. */
import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../backend/index.js';
import { fail } from '../errors.js';
import { loadModel } from '../models/load.js';
import { computeFeatureStats, tokensUsed, vocabStrings } from '../sae/feature-stats.js';
import { writeFeatureStore, type FeatureRunMeta } from '../sae/feature-store.js';
import { loadSae, readSaeConfig } from '../sae/io.js';
import { saeHookLayout } from '../sae/splice.js';
import { BACKEND_OPTION, BACKEND_USAGE, onnxFor } from './backend.js';
import { parseOptions, parsePositiveInt, parseTokenList, printJson, readPromptsFile, requireString, type Command, type PromptSpec } from './args.js';
import { progressBar } from './progress.js';

const CMD = 'sae features';

function parseNonNegativeInt(flag: string, s: string | undefined, dflt: number): number {
  if (s === undefined) return dflt;
  if (!/^\d+$/.test(s)) fail(`${flag}: expected a non-negative integer, got '${s}'`);
  return Number(s);
}

export const saeFeaturesCommand: Command = {
  name: 'features',
  summary: 'feature statistics over a corpus (density, top/quantile examples, histograms, logits, correlations) → SQLite',
  usage: `hooklens sae features --model PATH --sae DIR (--prompts FILE.jsonl | --text S | --tokens 1,2,3)
                       --out FILE.sqlite [--top-k 20] [--max-prompts N] [--context 8]
                       [--quantile-examples 5] [--correlated 5] [--logit-top 10]
                       [--batch-tokens 512] [--seed 0] [--include-bos] [--json]

  --prompts FILE        JSONL, one prompt a line: {"tokens": [..]} (used when a line also has
                        "text"), {"text": "..."} or a JSON string
  --out FILE            SQLite feature store (schema-versioned, WAL); written to a temp file and
                        renamed when complete, so an interrupted run leaves nothing behind
  --top-k N             top-activating contexts kept per feature (default 20)
  --max-prompts N       use only the first N prompts
  --context N           tokens of context on each side of an example token (default 8)
  --quantile-examples N examples sampled per activation band (10 bands; default 5)
  --correlated N        most correlated features kept per feature (Pearson; default 5, 0 = off)
  --logit-top N         top/bottom tokens of each feature's logit effect (default 10, 0 = off)
  --batch-tokens N      padded tokens per forward pass (default 512)
  --include-bos         count a leading BOS token too (by default it is context only: its
                        activations are outliers that would fill every feature's top examples)
  --json                print {"out","features","prompts","tokens","dead","correlations","logits"}
${BACKEND_USAGE}`,
  async run(argv) {
    const { values } = parseOptions(CMD, argv, {
      model: { type: 'string' },
      sae: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      prompts: { type: 'string' },
      out: { type: 'string' },
      'top-k': { type: 'string' },
      'max-prompts': { type: 'string' },
      context: { type: 'string' },
      'quantile-examples': { type: 'string' },
      correlated: { type: 'string' },
      'logit-top': { type: 'string' },
      'batch-tokens': { type: 'string' },
      seed: { type: 'string' },
      'include-bos': { type: 'boolean' },
      ...BACKEND_OPTION,
      json: { type: 'boolean' },
    });
    const modelPath = requireString(CMD, values, 'model');
    const saeDir = requireString(CMD, values, 'sae');
    const out = requireString(CMD, values, 'out');
    const given = (['text', 'tokens', 'prompts'] as const).filter((k) => values[k] !== undefined);
    if (given.length !== 1) fail(`${CMD}: give exactly one of --prompts, --text or --tokens`);
    const topK = parsePositiveInt('--top-k', values['top-k'], 20);
    const maxPrompts = values['max-prompts'] === undefined ? Infinity : parsePositiveInt('--max-prompts', values['max-prompts'], 1);
    const context = parseNonNegativeInt('--context', values.context, 8);
    const quantileExamples = parsePositiveInt('--quantile-examples', values['quantile-examples'], 5);
    const correlationTopN = parseNonNegativeInt('--correlated', values.correlated, 5);
    const logitTopN = parseNonNegativeInt('--logit-top', values['logit-top'], 10);
    const batchTokens = parsePositiveInt('--batch-tokens', values['batch-tokens'], 512);
    const seed = parseNonNegativeInt('--seed', values.seed, 0);
    if (fs.existsSync(out) && fs.statSync(out).isDirectory()) fail(`${out}: is a directory`);
    if (!fs.existsSync(path.dirname(path.resolve(out)))) fail(`${out}: directory ${path.dirname(path.resolve(out))} does not exist`);
    let specs: PromptSpec[];
    if (values.prompts !== undefined) specs = readPromptsFile(String(values.prompts));
    else if (values.text !== undefined) specs = [{ text: String(values.text) }];
    else specs = [{ tokens: parseTokenList('--tokens', String(values.tokens)) }];
    specs = specs.slice(0, maxPrompts);
    // Fail fast on a bad --sae before loading anything heavy.
    const cfg = readSaeConfig(saeDir);
    await initBackend();
    const { sae } = loadSae(saeDir);
    const model = await loadModel(modelPath);
    saeHookLayout(model, sae);
    const prompts = specs.map((p) => ('text' in p ? model.encode(p.text) : p.tokens));
    prompts.forEach((p, i) => {
      if (p.length === 0) fail(`${CMD}: prompt ${i + 1} has no tokens`);
    });

    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const bar = progressBar('features');
    // The forwards only read the hook: onnxruntime where the model allows.
    const onnx = onnxFor(model, CMD, values.backend, null);
    try {
      let r;
      try {
        r = await computeFeatureStats(model, sae, prompts, {
          topK,
          context,
          quantileExamples,
          correlationTopN,
          logitTopN,
          batchTokens,
          seed,
          excludeBos: !values['include-bos'],
          signal: controller.signal,
          onProgress: (d, t) => bar.update(d, t),
          ...(onnx ? { onnx } : {}),
        });
      } catch (e) {
        if (controller.signal.aborted) fail(`interrupted: no feature store written to ${out}`);
        throw e;
      }
      bar.stop();
      const acc = r.accumulator;
      const meta: FeatureRunMeta = {
        model: modelPath,
        sae: saeDir,
        hook: cfg.hookName,
        hookLayer: cfg.hookLayer ?? null,
        architecture: cfg.architecture,
        dIn: cfg.dIn,
        dSae: cfg.dSae,
        corpus: values.prompts !== undefined ? String(values.prompts) : values.text !== undefined ? '--text' : '--tokens',
        nPrompts: r.nPrompts,
        nTokens: r.nTokens,
        maxPromptTokens: r.maxPromptTokens,
        topK: acc.topK,
        context: acc.context,
        quantileBands: acc.bands,
        quantileExamples: acc.reservoir,
        histBins: acc.histBins,
        correlationTopN: acc.correlationTopN,
        seed,
        excludeBos: !values['include-bos'],
        histogramConvention: `linear: ${acc.histBins} equal bins over [0, R), R the smallest power of two above the feature's max; active (act > 0) tokens only; reported up to the max's bin`,
        logitConvention: r.logitConvention,
        correlations: r.correlationSkipped ?? 'pearson over all tokens (zeros included); l1 field = cosine similarity',
        createdAt: new Date().toISOString(),
      };
      const vocab = vocabStrings(model.tokenizer, tokensUsed(r.features));
      if (controller.signal.aborted) fail(`interrupted: no feature store written to ${out}`);
      writeFeatureStore(out, { meta, features: r.features, vocab });
      const dead = r.features.filter((f) => f.nActive === 0).length;
      if (values.json) {
        printJson({ out, features: r.features.length, prompts: r.nPrompts, tokens: r.nTokens, dead, correlations: r.correlationSkipped ?? 'pearson', logits: r.logitSkipped ?? 'computed' });
      } else {
        console.error(`wrote ${r.features.length} features (${dead} dead) over ${r.nPrompts} prompts / ${r.nTokens} tokens to ${out}`);
        if (r.correlationSkipped) console.error(`correlations: ${r.correlationSkipped}`);
        if (r.logitSkipped) console.error(`logit effects: ${r.logitSkipped}`);
      }
    } finally {
      bar.stop();
      await onnx?.dispose();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

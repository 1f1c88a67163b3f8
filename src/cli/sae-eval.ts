/** `hooklens sae eval`: reconstruction and downstream metrics of an SAE at its hook. */
import { initBackend } from '../backend/index.js';
import { fail } from '../errors.js';
import { loadModel } from '../models/load.js';
import { evaluateSae, evaluateSaeOnnx, pickEvalMetrics } from '../sae/eval.js';
import { BACKEND_OPTION, BACKEND_USAGE, onnxFor } from './backend.js';
import { loadSae, readSaeConfig } from '../sae/io.js';
import { saeHookLayout } from '../sae/splice.js';
import { IMAGE_OPTION, parseOptions, parsePositiveInt, printJson, promptsFromArgs, requireString, type Command } from './args.js';
import { promptInputs } from './images.js';

const CMD = 'sae eval';

export const saeEvalCommand: Command = {
  name: 'eval',
  summary: 'evaluate an SAE: L0, explained variance, MSE, cosine, CE loss recovered, KL',
  usage: `hooklens sae eval --model PATH --sae DIR (--text S | --tokens 1,2,3 | --prompts FILE.jsonl)
                   [--image FILE ..] [--batch-tokens N] [--json]

  --model PATH       Hugging Face model directory, .gguf file, or hub id
  --sae DIR          SAELens directory: cfg.json + sae_weights.safetensors (hook from cfg.json)
  --prompts FILE     JSONL, one prompt a line: {"tokens": [..]} (used when a line also has
                     "text"), {"text": "..."} or a JSON string
  --image FILE       vision-language models: image(s) for the prompt (or for every --prompts line
                     naming none; lines may carry "image": path(s))
  --batch-tokens N   tokens per forward pass (default 512; prompts are never padded)
  --json             print {"l0","explained_variance","mse","cosine","ce_orig","ce_sae",
                     "ce_zero","ce_loss_score","kl_div"} over every position of the prompts
${BACKEND_USAGE}`,
  async run(argv) {
    const { values } = parseOptions(CMD, argv, {
      model: { type: 'string' },
      sae: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      prompts: { type: 'string' },
      'batch-tokens': { type: 'string' },
      json: { type: 'boolean' },
      ...IMAGE_OPTION,
      ...BACKEND_OPTION,
    });
    const modelPath = requireString(CMD, values, 'model');
    const saeDir = requireString(CMD, values, 'sae');
    const specs = promptsFromArgs(CMD, values, true);
    const batchTokens = parsePositiveInt('--batch-tokens', values['batch-tokens'], 512);
    // Fail fast on a bad --sae; the SAE's variables must then be made on the chosen backend.
    readSaeConfig(saeDir);
    await initBackend();
    const { sae } = loadSae(saeDir);
    const model = await loadModel(modelPath);
    saeHookLayout(model, sae);
    const inputs = await promptInputs(model, specs, CMD);
    const prompts = inputs.map((p) => p.ids);
    const images = inputs.some((p) => p.images) ? inputs.map((p) => p.images) : undefined;
    prompts.forEach((p, i) => {
      if (p.length === 0) fail(`${CMD}: prompt ${i + 1} tokenizes to no tokens`);
    });
    // The three forwards per batch run on onnxruntime where the model allows (the SAE stays on tfjs).
    const onnx = images ? null : onnxFor(model, CMD, values.backend, null, [sae.cfg.hookName]);
    const r = onnx ? await evaluateSaeOnnx(model, sae, prompts, onnx, { batchTokens }).finally(() => onnx.dispose()) : evaluateSae(model, sae, prompts, { batchTokens, images });
    if (values.json) return printJson(pickEvalMetrics(r));
    const rows: [string, number][] = [
      ['l0', r.l0],
      ['explained_variance', r.explained_variance],
      ['fvu', r.fvu],
      ['mse', r.mse],
      ['cosine', r.cosine],
      ['ce_orig', r.ce_orig],
      ['ce_sae', r.ce_sae],
      ['ce_zero', r.ce_zero],
      ['ce_loss_score', r.ce_loss_score],
      ['kl_div', r.kl_div],
      ['dead_fraction', r.dead_fraction],
      ['dense_fraction', r.dense_fraction],
    ];
    console.log(`SAE ${saeDir} (${sae.cfg.architecture}, d_sae ${sae.cfg.dSae}) at ${sae.cfg.hookName}: ${r.n_tokens} tokens, ${r.n_ce_positions} next-token positions`);
    for (const [k, v] of rows) console.log(`  ${k.padEnd(20)} ${Number.isFinite(v) ? v.toFixed(6) : String(v)}`);
  },
};

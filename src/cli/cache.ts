import fs from 'node:fs';
import { fail } from '../errors.js';
import { writeActivationCache } from '../hooks/cache-to-arrow.js';
import { loadModel } from '../models/load.js';
import { IMAGE_OPTION, parseOptions, parsePositiveInt, printJson, promptsFromArgs, requireString, type Command } from './args.js';
import { promptInputs } from './images.js';
import { progressBar } from './progress.js';
import { BACKEND_OPTION, BACKEND_USAGE, onnxFor } from './backend.js';

export const cacheCommand: Command = {
  name: 'cache',
  summary: 'write hook activations to an Arrow file (one row per prompt position)',
  usage: `hooklens cache --model PATH (--text S | --tokens 1,2,3 | --prompts FILE.jsonl)
                [--image FILE ..] --hooks PATTERN[,PATTERN..] [--logits] --out FILE.arrow
                [--batch-size N] [--json]

  --prompts FILE   JSONL, one prompt a line: {"tokens": [..]} (used when a line also has "text"),
                   {"text": "..."} or a JSON string; "image": path(s) for a vision-language model
  --image FILE     image(s) for --text/--tokens (or for every --prompts line naming none): PNG/JPEG
                   through the model's preprocessor_config.json, or .safetensors pixel_values
  --hooks          hook names or patterns, e.g. blocks.*.hook_resid_post,blocks.0.attn.hook_pattern
  --logits         also store the logits of every position (column "logits")
  --out FILE       Arrow IPC file; written to a temp file and renamed when complete
  --batch-size N   prompts per forward pass (default: as many as fit in 256 padded tokens)
  --json           print {"out","rows","bytes","hooks"} when done
${BACKEND_USAGE}

Columns: prompt:int32, pos:int32, token:int32, one float32 list column per hook (FixedSizeList,
or List for attention patterns whose key axis varies with prompt length). Schema metadata
"hooklens" = {"model", "hooks": {name: {"shape": [per-position shape]}}}.
Vision-language models: language-model hooks add a "modality" column (text / image).
Vision-tower hooks (vision.*) have one row per patch position of each image (CLS first where
the tower has one): columns prompt, pos, token (-1), image (index within the prompt). The two
kinds have different position axes, so one call caches one kind; asking for both is an error.
A standalone vision tower (clip_vision_model / siglip_vision_model) takes --image alone.`,
  async run(argv) {
    const { values } = parseOptions('cache', argv, {
      model: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      prompts: { type: 'string' },
      hooks: { type: 'string' },
      logits: { type: 'boolean' },
      out: { type: 'string' },
      'batch-size': { type: 'string' },
      json: { type: 'boolean' },
      ...IMAGE_OPTION,
      ...BACKEND_OPTION,
    });
    const modelPath = requireString('cache', values, 'model');
    const out = requireString('cache', values, 'out');
    const hooks = requireString('cache', values, 'hooks').split(',').map((s) => s.trim()).filter(Boolean);
    if (hooks.length === 0) fail('cache: --hooks names no hook');
    const batchSize = values['batch-size'] === undefined ? undefined : parsePositiveInt('--batch-size', values['batch-size'], 1);
    const towerOnly = values.text === undefined && values.tokens === undefined && values.prompts === undefined && Array.isArray(values.image);
    const specs = towerOnly ? [{ tokens: [], images: values.image as string[] }] : promptsFromArgs('cache', values, true);
    if (fs.existsSync(out) && fs.statSync(out).isDirectory()) fail(`${out}: is a directory`);
    const model = await loadModel(modelPath);
    if (towerOnly && model.graph.kind !== 'vision-tower') fail('cache: give exactly one of --text, --tokens or --prompts (--image alone is for a standalone vision tower)');
    const inputs = await promptInputs(model, specs, 'cache');
    const prompts = inputs.map((p) => p.ids);
    const images = inputs.some((p) => p.images) ? inputs.map((p) => p.images) : undefined;
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const bar = progressBar('cache');
    const onnx = onnxFor(model, 'cache', values.backend, null, hooks);
    try {
      const { rows, bytes } = await writeActivationCache(model, prompts, out, {
        hooks,
        images,
        logits: values.logits,
        batchSize,
        signal: controller.signal,
        onProgress: (d, t) => bar.update(d, t),
        ...(onnx ? { onnx } : {}),
      });
      bar.stop();
      if (values.json) printJson({ out, rows, bytes, hooks });
      else console.error(`wrote ${rows} rows (${(bytes / 1e6).toFixed(1)} MB) to ${out}`);
    } finally {
      bar.stop();
      await onnx?.dispose();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

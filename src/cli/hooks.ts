import { loadModel } from '../models/load.js';
import { parseOptions, parsePositiveInt, printJson, requireString, type Command } from './args.js';

export const hooksCommand: Command = {
  name: 'hooks',
  summary: "list the model's hook points and their shapes",
  usage: `hooklens hooks --model PATH [--filter PATTERN] [--seq-len T] [--json]

  --filter PATTERN   only hooks matching, e.g. 'blocks.*.attn.hook_pattern' or 'vision.blocks.*.hook_resid_post'
  --seq-len T        sequence length used for the shapes (default 8; batch 1, one image for
                     vision-language models: vision.* hooks are [images, patch positions, ...])`,
  async run(argv) {
    const { values } = parseOptions('hooks', argv, { model: { type: 'string' }, filter: { type: 'string' }, 'seq-len': { type: 'string' }, json: { type: 'boolean' } });
    const model = await loadModel(requireString('hooks', values, 'model'));
    const T = parsePositiveInt('--seq-len', values['seq-len'], 8);
    const names = values.filter ? model.resolveHooks(values.filter) : model.hookNames();
    const rows = names.map((name) => ({ name, shape: model.hookShape(name, { batch: 1, seqLen: T, images: 1 }) }));
    if (values.json) return printJson({ hooks: rows });
    for (const r of rows) console.log(`${r.name.padEnd(40)} [${r.shape.join(', ')}]`);
  },
};

import { hookShape, resolveHookNames } from '../hooks/hook-names.js';
import { loadModel } from '../models/load.js';
import { parseOptions, parsePositiveInt, printJson, requireString, type Command } from './args.js';

export const hooksCommand: Command = {
  name: 'hooks',
  summary: "list the model's hook points and their shapes",
  usage: `hooklens hooks --model PATH [--filter PATTERN] [--seq-len T] [--json]

  --filter PATTERN   only hooks matching, e.g. 'blocks.*.attn.hook_pattern'
  --seq-len T        sequence length used for the shapes (default 8; batch 1)`,
  async run(argv) {
    const { values } = parseOptions('hooks', argv, { model: { type: 'string' }, filter: { type: 'string' }, 'seq-len': { type: 'string' }, json: { type: 'boolean' } });
    const model = await loadModel(requireString('hooks', values, 'model'));
    const T = parsePositiveInt('--seq-len', values['seq-len'], 8);
    const names = values.filter ? resolveHookNames(model.cfg, values.filter) : model.hookNames();
    const rows = names.map((name) => ({ name, shape: hookShape(model.cfg, name, 1, T) }));
    if (values.json) return printJson({ hooks: rows });
    for (const r of rows) console.log(`${r.name.padEnd(40)} [${r.shape.join(', ')}]`);
  },
};

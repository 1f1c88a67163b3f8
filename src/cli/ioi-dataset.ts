import fs from 'node:fs';
import { generateIoiPrompts, toPairsJsonl, type IoiKind } from '../../datasets/ioi.js';
import { fail } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { loadModel } from '../models/load.js';
import { parseOptions, parsePositiveInt, printJson, requireString, type Command } from './args.js';

export const ioiDatasetCommand: Command = {
  name: 'ioi-dataset',
  summary: 'write Indirect Object Identification clean/corrupt pairs (JSONL) for a model',
  usage: `hooklens ioi-dataset --model PATH --out FILE.jsonl [--n 64] [--seed 0]
                      [--kind mixed|BABA|ABBA] [--simple] [--any-length] [--json]

  --model PATH     model whose tokenizer filters the prompts (HF directory, .gguf file, or hub id)
  --out FILE       JSONL, one {"clean","corrupt","answer","wrong"} a line (the input of patch --pairs);
                   written to a temp file and renamed when complete
  --n N            number of prompt pairs (default 64)
  --seed N         non-negative integer seed; the same seed gives the same prompts (default 0)
  --kind K         BABA ("Then, John and Mary ... John gave ... to"), ABBA, or mixed (default)
  --simple         TinyStories-style templates and names (for small story models) instead of the
                   Wang et al. 2022 lists
  --any-length     allow prompts of different token lengths (default: all pairs share one length)
  --json           print {"out","n","tokens","names"} when done

Prompts use only names that are a single token after a space; "corrupt" replaces the second
subject mention (S2) with a third name, and each pair's clean and corrupt have equal token length.
answer = " " + indirect object, wrong = " " + subject, both single tokens.`,
  async run(argv) {
    const { values } = parseOptions('ioi-dataset', argv, {
      model: { type: 'string' },
      out: { type: 'string' },
      n: { type: 'string' },
      seed: { type: 'string' },
      kind: { type: 'string' },
      simple: { type: 'boolean' },
      'any-length': { type: 'boolean' },
      json: { type: 'boolean' },
    });
    const modelPath = requireString('ioi-dataset', values, 'model');
    const out = requireString('ioi-dataset', values, 'out');
    const n = parsePositiveInt('--n', values.n, 64);
    const seedArg = values.seed ?? '0';
    if (!/^\d+$/.test(seedArg) || Number(seedArg) > 0xffffffff) fail(`--seed: expected a non-negative integer below 2^32, got '${seedArg}'`);
    const kind = values.kind ?? 'mixed';
    if (kind !== 'mixed' && kind !== 'BABA' && kind !== 'ABBA') fail(`--kind: expected mixed, BABA or ABBA, got '${kind}'`);
    if (fs.existsSync(out) && fs.statSync(out).isDirectory()) fail(`${out}: is a directory`);

    const model = await loadModel(modelPath);
    const tokenizer = model.tokenizer ?? fail(`${modelPath}: the model has no tokenizer; IOI prompts need one`);
    const prompts = generateIoiPrompts({
      n,
      seed: Number(seedArg),
      kind: kind as IoiKind | 'mixed',
      preset: values.simple ? 'simple' : 'classic',
      tokenizer,
      requireSameLength: !values['any-length'],
    });
    writeFileAtomic(out, toPairsJsonl(prompts));

    const lengths = [...new Set(prompts.map((p) => tokenizer.encode(p.clean).length))].sort((a, b) => a - b);
    const names = [...new Set(prompts.flatMap((p) => [p.io, p.s, p.corruptName]))].sort();
    if (values.json) printJson({ out, n: prompts.length, tokens: lengths.length === 1 ? lengths[0] : lengths, names });
    else console.error(`wrote ${prompts.length} IOI pairs (${lengths.join('/')} tokens; names: ${names.join(', ')}) to ${out}`);
  },
};

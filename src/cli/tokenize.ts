import { fail } from '../errors.js';
import { loadModel } from '../models/load.js';
import { parseOptions, printJson, requireString, type Command } from './args.js';

export const tokenizeCommand: Command = {
  name: 'tokenize',
  summary: "encode text with the model's tokenizer",
  usage: `hooklens tokenize --model PATH --text S [--json]

  --model PATH     Hugging Face model directory, .gguf file, or hub id
  --text S         text to encode (special tokens added as the tokenizer does by default)
  --json           print {"tokens":[..]}`,
  async run(argv) {
    const { values } = parseOptions('tokenize', argv, { model: { type: 'string' }, text: { type: 'string' }, json: { type: 'boolean' } });
    const modelPath = requireString('tokenize', values, 'model');
    if (values.text === undefined) fail('tokenize: missing --text');
    const model = await loadModel(modelPath);
    const tokens = model.encode(values.text);
    if (values.json) return printJson({ tokens });
    const tok = model.tokenizer!;
    for (const id of tokens) console.log(`${String(id).padStart(7)}  ${JSON.stringify(tok.decode([id], { skipSpecialTokens: false }))}`);
  },
};

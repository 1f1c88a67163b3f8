import { convertGgufToHf } from '../io/gguf-to-hf.js';
import { parseOptions, printJson, requireString, type Command } from './args.js';

export const convertCommand: Command = {
  name: 'convert',
  summary: 'convert a llama GGUF file into a Hugging Face model directory',
  usage: `hooklens convert --model FILE.gguf --out DIR [--json]

Writes config.json, model.safetensors (HF names, rotate-half q/k layout, float32) and
tokenizer.json / tokenizer_config.json built from the GGUF vocabulary. DIR must not exist or be empty.`,
  async run(argv) {
    const { values } = parseOptions('convert', argv, { model: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' } });
    const model = requireString('convert', values, 'model');
    const out = requireString('convert', values, 'out');
    convertGgufToHf(model, out);
    if (values.json) printJson({ out });
    else console.error(`wrote ${out}`);
  },
};

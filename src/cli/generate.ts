import { loadModel } from '../models/load.js';
import { decodeContinuation } from '../tokenizers/tokenizer.js';
import { parseOptions, parsePositiveInt, printJson, promptsFromArgs, requireString, type Command } from './args.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'greedy text generation',
  usage: `hooklens generate --model PATH (--text S | --tokens 1,2,3) --max-new-tokens N [--stop-at-eos] [--json]

  --model PATH          Hugging Face model directory, .gguf file, or hub id
  --text S              prompt text (tokenized as the model's tokenizer does by default)
  --tokens IDS          exact prompt token ids, comma-separated
  --max-new-tokens N    tokens to generate (default 32)
  --stop-at-eos         stop early when the model emits its end-of-sequence token
  --json                print {"prompt_tokens":[..], "tokens":[..], "text":"<new text only>"}`,
  async run(argv) {
    const { values } = parseOptions('generate', argv, {
      model: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      'stop-at-eos': { type: 'boolean' },
      json: { type: 'boolean' },
    });
    const modelPath = requireString('generate', values, 'model');
    const [prompt] = promptsFromArgs('generate', values, false);
    const n = parsePositiveInt('--max-new-tokens', values['max-new-tokens'], 32);
    const model = await loadModel(modelPath);
    const promptTokens = 'text' in prompt ? model.encode(prompt.text) : prompt.tokens;
    const tokens = model.generate(promptTokens, n, { stopAtEos: values['stop-at-eos'] });
    const text = model.tokenizer ? decodeContinuation(model.tokenizer, promptTokens, tokens) : '';
    if (values.json) return printJson({ prompt_tokens: promptTokens, tokens, text });
    const head = 'text' in prompt ? prompt.text : promptTokens.join(' ');
    console.log(model.tokenizer ? head + text : tokens.join(' '));
  },
};

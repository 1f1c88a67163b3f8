import { loadModel } from '../models/load.js';
import { STEER_OPTIONS, STEER_USAGE, steerEdits } from './steer-args.js';
import { editHook } from '../probing/steer.js';
import { BACKEND_OPTION, BACKEND_USAGE, onnxFor } from './backend.js';
import { decodeContinuation } from '../tokenizers/tokenizer.js';
import { fail } from '../errors.js';
import { IMAGE_OPTION, parseOptions, parsePositiveInt, printJson, promptsFromArgs, requireString, type Command } from './args.js';
import { promptInputs } from './images.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'greedy text generation',
  usage: `hooklens generate --model PATH (--text S | --tokens 1,2,3) [--image FILE ..] --max-new-tokens N [--stop-at-eos] [--json]

  --model PATH          Hugging Face model directory, .gguf file, or hub id
  --text S              prompt text (tokenized as the model's tokenizer does by default)
  --tokens IDS          exact prompt token ids, comma-separated
  --image FILE          vision-language models: the image(s) for the prompt's placeholder(s)
                        (PNG/JPEG through preprocessor_config.json, or .safetensors pixel_values);
                        prompt_tokens then holds the expanded ids
  --max-new-tokens N    tokens to generate (default 32)
  --stop-at-eos         stop early when the model emits its end-of-sequence token
  --json                print {"prompt_tokens":[..], "tokens":[..], "text":"<new text only>"}
${BACKEND_USAGE}
${STEER_USAGE}`,
  async run(argv) {
    const { values } = parseOptions('generate', argv, {
      model: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      'stop-at-eos': { type: 'boolean' },
      json: { type: 'boolean' },
      ...IMAGE_OPTION,
      ...STEER_OPTIONS,
      ...BACKEND_OPTION,
    });
    const modelPath = requireString('generate', values, 'model');
    const [prompt] = promptsFromArgs('generate', values, false);
    const n = parsePositiveInt('--max-new-tokens', values['max-new-tokens'], 32);
    const model = await loadModel(modelPath);
    if (model.graph.kind === 'vision-tower') fail(`generate: ${modelPath} is a ${model.graph.description}; it generates no text`);
    const [{ ids: promptTokens, images }] = await promptInputs(model, [prompt], 'generate');
    // Probe interventions are data: graph inputs on onnx, forward hooks on tfjs.
    const edits = steerEdits(model, values);
    const fwdHooks = edits.map(editHook);
    const onnx = onnxFor(model, 'generate', values.backend, null);
    let tokens: number[];
    if (onnx) {
      // Greedy with the KV cache on onnxruntime: the same tokens as tfjs (tested).
      [tokens] = await onnx.generateBatch([promptTokens], n, { stopAtEos: values['stop-at-eos'], edits, ...(images ? { images } : {}) });
      await onnx.dispose();
    } else tokens = model.generate(promptTokens, n, { stopAtEos: values['stop-at-eos'], images, ...(fwdHooks.length ? { fwdHooks } : {}) });
    const text = model.tokenizer ? decodeContinuation(model.tokenizer, promptTokens, tokens) : '';
    if (values.json) return printJson({ prompt_tokens: promptTokens, tokens, text });
    const head = 'text' in prompt ? prompt.text : promptTokens.join(' ');
    console.log(model.tokenizer ? head + text : tokens.join(' '));
  },
};

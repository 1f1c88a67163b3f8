import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../models/load.js';
import { parseOptions, parsePositiveInt, printJson, promptsFromArgs, requireString, type Command } from './args.js';
import { fail } from '../errors.js';

export const runCommand: Command = {
  name: 'run',
  summary: 'run a prompt and show the top next-token predictions at the final position',
  usage: `hooklens run --model PATH (--text S | --tokens 1,2,3) [--top-k N] [--json]

  --model PATH     Hugging Face model directory, .gguf file, or hub id (org/name)
  --text S         prompt text, tokenized as the model's tokenizer does by default
  --tokens IDS     exact input token ids, comma-separated (nothing is prepended)
  --top-k N        how many predictions to show (default 10)
  --json           print {"tokens":[..], "top":[{"token","text","logit","prob"}, ..]}`,
  async run(argv) {
    const { values } = parseOptions('run', argv, {
      model: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      'top-k': { type: 'string' },
      json: { type: 'boolean' },
    });
    const modelPath = requireString('run', values, 'model');
    const [prompt] = promptsFromArgs('run', values, false);
    const k = parsePositiveInt('--top-k', values['top-k'], 10);
    const model = await loadModel(modelPath);
    const tokens = 'text' in prompt ? model.encode(prompt.text) : prompt.tokens;
    if (tokens.length === 0) fail('run: the prompt tokenizes to no tokens');
    const logits = model.run([tokens]);
    const last = tf.tidy(() => logits.slice([0, tokens.length - 1, 0], [1, 1, -1]).reshape([-1]));
    const logitValues = last.dataSync();
    const probs = tf.tidy(() => tf.softmax(last)).dataSync();
    tf.dispose([logits, last]);
    const order = Array.from(logitValues.keys()).sort((a, b) => logitValues[b] - logitValues[a]).slice(0, Math.min(k, logitValues.length));
    const top = order.map((id) => ({
      token: id,
      text: model.tokenizer ? model.tokenizer.decode([id], { skipSpecialTokens: false }) : '',
      logit: logitValues[id],
      prob: probs[id],
    }));
    if (values.json) return printJson({ tokens, top });
    console.log(`tokens: ${tokens.join(' ')}`);
    for (const t of top) console.log(`${String(t.token).padStart(7)}  ${t.logit.toFixed(4).padStart(10)}  ${t.prob.toFixed(4)}  ${JSON.stringify(t.text)}`);
  },
};

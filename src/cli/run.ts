import * as tf from '@tensorflow/tfjs';
import { STEER_OPTIONS, STEER_USAGE, steerEdits } from './steer-args.js';
import { editHook } from '../probing/steer.js';
import { BACKEND_OPTION, BACKEND_USAGE, onnxFor } from './backend.js';
import { loadModel } from '../models/load.js';
import { IMAGE_OPTION, parseOptions, parsePositiveInt, printJson, promptsFromArgs, requireString, type Command } from './args.js';
import { promptInputs } from './images.js';
import { fail } from '../errors.js';

export const runCommand: Command = {
  name: 'run',
  summary: 'run a prompt and show the top next-token predictions at the final position',
  usage: `hooklens run --model PATH (--text S | --tokens 1,2,3) [--image FILE ..] [--top-k N] [--json]

  --model PATH     Hugging Face model directory, .gguf file, or hub id (org/name)
  --text S         prompt text, tokenized as the model's tokenizer does by default
  --tokens IDS     exact input token ids, comma-separated (nothing is prepended)
  --image FILE     vision-language models: the image for the prompt's placeholder (repeat for
                   several): PNG/JPEG through the model's preprocessor_config.json, or a
                   .safetensors file holding pixel_values [n, 3, H, W]. A single placeholder
                   token is expanded to the image's run of tokens ("tokens" shows the expanded ids)
  --top-k N        how many predictions to show (default 10)
  --json           print {"tokens":[..], "top":[{"token","text","logit","prob"}, ..]}
${BACKEND_USAGE}
${STEER_USAGE}`,
  async run(argv) {
    const { values } = parseOptions('run', argv, {
      model: { type: 'string' },
      text: { type: 'string' },
      tokens: { type: 'string' },
      'top-k': { type: 'string' },
      json: { type: 'boolean' },
      ...IMAGE_OPTION,
      ...STEER_OPTIONS,
      ...BACKEND_OPTION,
    });
    const modelPath = requireString('run', values, 'model');
    const [prompt] = promptsFromArgs('run', values, false);
    const k = parsePositiveInt('--top-k', values['top-k'], 10);
    const model = await loadModel(modelPath);
    if (model.graph.kind === 'vision-tower') fail(`run: ${modelPath} is a ${model.graph.description} with no next-token predictions; use 'hooklens cache --image' for its activations`);
    const [{ ids: tokens, images }] = await promptInputs(model, [prompt], 'run');
    if (tokens.length === 0) fail('run: the prompt tokenizes to no tokens');
    // Probe interventions are data: graph inputs on onnx, forward hooks on tfjs.
    const edits = steerEdits(model, values);
    const fwdHooks = edits.map(editHook);
    const onnx = onnxFor(model, 'run', values.backend, null);
    let last: tf.Tensor1D;
    if (onnx) {
      const r = await onnx.run(model.toTokens(images ? { prompts: [tokens], images } : [tokens]), { hooks: [], finalPositionOnly: true }, edits);
      last = tf.tensor1d(r.logits!.data);
      await onnx.dispose();
    } else {
      const logits = model.run(images ? { prompts: [tokens], images } : [tokens], fwdHooks.length ? { fwdHooks } : {});
      last = tf.tidy(() => logits.slice([0, tokens.length - 1, 0], [1, 1, -1]).reshape([-1]) as tf.Tensor1D);
      logits.dispose();
    }
    const logitValues = last.dataSync();
    const probs = tf.tidy(() => tf.softmax(last)).dataSync();
    last.dispose();
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

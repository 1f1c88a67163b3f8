/** `--backend tfjs|onnx|auto`: which runtime a forward-only command uses. */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { OnnxForward } from '../onnx/onnx-forward.js';

export const BACKEND_OPTION = { backend: { type: 'string' } } as const;

export const BACKEND_USAGE = `  --backend B      tfjs, onnx or auto (default): auto runs forward-only work of text language
                   models on onnxruntime (both cores) and everything else on tfjs`;

/**
 * The onnx runner when the command should use it, else null (tfjs). `jsHooks` names what forces
 * tfjs (e.g. '--steer'); asking for onnx then is an error.
 */
export function onnxFor(model: HookedModel, cmd: string, backend: string | undefined, jsHooks: string | null): OnnxForward | null {
  const b = backend ?? 'auto';
  if (b !== 'tfjs' && b !== 'onnx' && b !== 'auto') fail(`${cmd}: --backend must be tfjs, onnx or auto, got '${b}'`);
  if (b === 'tfjs') return null;
  const supported = model.graph.kind === 'causal-lm';
  if (b === 'onnx') {
    if (!supported) fail(`${cmd}: --backend onnx runs text language models only; ${model.source} is a ${model.graph.description} (use --backend tfjs)`);
    if (jsHooks) fail(`${cmd}: ${jsHooks} edits activations with a JS hook, which only the tfjs backend runs (use --backend tfjs or auto)`);
  }
  if (!supported || jsHooks) return null;
  return new OnnxForward(model);
}

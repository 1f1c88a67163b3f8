/** `--backend tfjs|onnx|auto`: which runtime a forward-only command uses. */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { OnnxForward } from '../onnx/onnx-forward.js';

/** Float32 weight bytes an in-memory ONNX model can carry (protobuf messages stop at 2 GiB). */
export const ONNX_MAX_WEIGHT_BYTES = 1.9 * 2 ** 30;

export const BACKEND_OPTION = { backend: { type: 'string' } } as const;

export const BACKEND_USAGE = `  --backend B      tfjs, onnx or auto (default): auto runs forward-only work of text language
                   models on onnxruntime (both cores) and everything else on tfjs`;

/**
 * The onnx runner when the command should use it, else null (tfjs). `jsHooks` names what forces
 * tfjs (e.g. '--steer'); asking for onnx then is an error.
 */
export function onnxFor(model: HookedModel, cmd: string, backend: string | undefined, jsHooks: string | null, hooks: readonly string[] = []): OnnxForward | null {
  const b = backend ?? 'auto';
  if (b !== 'tfjs' && b !== 'onnx' && b !== 'auto') fail(`${cmd}: --backend must be tfjs, onnx or auto, got '${b}'`);
  if (b === 'tfjs') return null;
  // One protobuf message holds the whole graph with its weights: 2 GiB at most.
  const bytes = model.weightNames().reduce((s, n) => s + 4 * model.weight(n).size, 0);
  // HOOKLENS_ONNX_MAX_BYTES lowers the limit (tests exercise the fallback with small models).
  const limit = Math.min(ONNX_MAX_WEIGHT_BYTES, Number(process.env.HOOKLENS_ONNX_MAX_BYTES) || Infinity);
  const fits = bytes < limit;
  // Per-head results are not graph outputs (yet): a cache asking for them runs on tfjs.
  const unexported = model.graph.kind === 'causal-lm' ? model.resolveHooks([...hooks]).find((h) => h.endsWith('attn.hook_result')) : undefined;
  const supported = model.graph.kind === 'causal-lm' && fits && !unexported;
  if (b === 'onnx') {
    if (model.graph.kind !== 'causal-lm') fail(`${cmd}: --backend onnx runs text language models only; ${model.source} is a ${model.graph.description} (use --backend tfjs)`);
    if (!fits) fail(`${cmd}: --backend onnx: ${model.source} has ${(bytes / 2 ** 30).toFixed(1)} GiB of float32 weights, over the ${(limit / 2 ** 30).toFixed(1)} GiB an in-memory ONNX graph can hold (use --backend tfjs)`);
    if (jsHooks) fail(`${cmd}: ${jsHooks} edits activations with a JS hook, which only the tfjs backend runs (use --backend tfjs or auto)`);
    if (unexported) fail(`${cmd}: --backend onnx does not export ${unexported} (use --backend tfjs or auto)`);
  }
  if (!supported || jsHooks) return null;
  return new OnnxForward(model);
}

/** `--backend tfjs|onnx|auto`: which runtime a forward-only command uses. */
import os from 'node:os';
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { OnnxForward } from '../onnx/onnx-forward.js';

/**
 * Float32 weight bytes auto sends to onnxruntime: it keeps its own (and packed) copies of the
 * weights next to tfjs's, so a model may use at most a quarter of the machine's memory there.
 * (Graphs past 1.5 GiB hand their weights over as external data, so protobuf's 2 GiB limit on
 * a message does not apply.)
 */
export function onnxMaxWeightBytes(): number {
  // HOOKLENS_ONNX_MAX_BYTES lowers the limit (tests exercise the fallback with small models).
  return Math.min(os.totalmem() / 4, Number(process.env.HOOKLENS_ONNX_MAX_BYTES) || Infinity);
}

export const BACKEND_OPTION = { backend: { type: 'string' } } as const;

export const BACKEND_USAGE = `  --backend B      tfjs, onnx or auto (default): auto runs forward-only work (text and
                   vision-language models, vision towers) on onnxruntime (both cores) and
                   everything that needs JS hooks or gradients on tfjs`;

/**
 * The onnx runner when the command should use it, else null (tfjs). `jsHooks` names what forces
 * tfjs (e.g. '--steer'); asking for onnx then is an error.
 */
export function onnxFor(model: HookedModel, cmd: string, backend: string | undefined, jsHooks: string | null, hooks: readonly string[] = []): OnnxForward | null {
  const b = backend ?? 'auto';
  if (b !== 'tfjs' && b !== 'onnx' && b !== 'auto') fail(`${cmd}: --backend must be tfjs, onnx or auto, got '${b}'`);
  if (b === 'tfjs') return null;
  const bytes = model.weightNames().reduce((s, n) => s + 4 * model.weight(n).size, 0);
  const limit = onnxMaxWeightBytes();
  const fits = bytes < limit;
  // Per-head results are not graph outputs (yet): a cache asking for them runs on tfjs.
  const unexported = model.resolveHooks([...hooks]).find((h) => h.endsWith('attn.hook_result'));
  const supported = fits && !unexported;
  if (b === 'onnx') {
    if (!fits) fail(`${cmd}: --backend onnx: ${model.source} has ${(bytes / 2 ** 30).toFixed(1)} GiB of float32 weights; onnxruntime's copy of them may take ${(limit / 2 ** 30).toFixed(1)} GiB here, a quarter of this machine's memory (use --backend tfjs)`);
    if (jsHooks) fail(`${cmd}: ${jsHooks} edits activations with a JS hook, which only the tfjs backend runs (use --backend tfjs or auto)`);
    if (unexported) fail(`${cmd}: --backend onnx does not export ${unexported} (use --backend tfjs or auto)`);
  }
  if (!supported || jsHooks) return null;
  return new OnnxForward(model);
}

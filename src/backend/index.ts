/**
 * tfjs set-up. Default: the wasm backend (pure npm, no native download). tfjs-node / tfjs-node-gpu
 * are used automatically when they happen to be installed; HOOKLENS_BACKEND=wasm|cpu|tensorflow
 * overrides the choice.
 */
import * as tf from '@tensorflow/tfjs';
import { registerCopyTransposeMatMulGradient } from './matmul-gradient.js';
import { createRequire } from 'node:module';
import { fail } from '../errors.js';

export { tf };

const require = createRequire(import.meta.url);
let ready: Promise<string> | null = null;

function tryRequire(name: string): boolean {
  try {
    require(name);
    return true;
  } catch {
    return false;
  }
}

async function pickBackend(): Promise<string> {
  const wanted = process.env.HOOKLENS_BACKEND?.trim();
  // Native bindings register the 'tensorflow' backend on import.
  const hasNative = wanted === undefined || wanted === 'tensorflow'
    ? tryRequire('@tensorflow/tfjs-node-gpu') || tryRequire('@tensorflow/tfjs-node')
    : false;
  if (!wanted || wanted === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
  const name = wanted || (hasNative ? 'tensorflow' : 'wasm');
  if (!tf.engine().registryFactory[name]) {
    fail(`HOOKLENS_BACKEND=${name}: backend not available (installed: ${Object.keys(tf.engine().registryFactory).join(', ')})`);
  }
  const ok = await tf.setBackend(name);
  if (!ok) fail(`backend '${name}' failed to initialise`);
  await tf.ready();
  if (name === 'wasm') registerCopyTransposeMatMulGradient();
  return name;
}

/** Initialise tfjs once; returns the backend name. Safe to call repeatedly. */
export function initBackend(): Promise<string> {
  ready ??= pickBackend();
  return ready;
}

/**
 * Past keys and values of a language model, per layer, so that generation runs each new token
 * through the blocks once instead of re-running the whole prefix.
 *
 * Stored in the layouts attention multiplies with (no transpose per step): keys [b·K, dh, T] and
 * values [b·K, T, dh], K = key-value heads, keys after RoPE. The cache owns its tensors (kept out
 * of tf.tidy) and frees the previous ones when a layer grows; dispose() frees the rest.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';

export class KvCache {
  private readonly layers: ({ k: tf.Tensor3D; v: tf.Tensor3D } | undefined)[];
  /** Positions held (the same for every layer once a forward has finished). */
  length = 0;

  constructor(readonly nLayers: number, readonly batch: number) {
    this.layers = new Array(nLayers).fill(undefined);
  }

  /** Append the new positions' keys [b·K, dh, Tn] and values [b·K, Tn, dh]; returns the full ones. */
  extend(layer: number, k: tf.Tensor3D, v: tf.Tensor3D): { k: tf.Tensor3D; v: tf.Tensor3D } {
    if (layer < 0 || layer >= this.nLayers) fail(`kv cache: layer ${layer} out of range (0..${this.nLayers - 1})`);
    const old = this.layers[layer];
    const past = old ? old.k.shape[2] : 0;
    if (past !== this.length) fail(`kv cache: layer ${layer} holds ${past} positions, the cache ${this.length}`);
    const full = old ? { k: tf.concat([old.k, k], 2), v: tf.concat([old.v, v], 1) } : { k: k.clone(), v: v.clone() };
    tf.keep(full.k);
    tf.keep(full.v);
    old?.k.dispose();
    old?.v.dispose();
    this.layers[layer] = full;
    return full;
  }

  /** Called by the forward once all layers have taken the new positions. */
  advance(n: number): void {
    this.length += n;
  }

  dispose(): void {
    for (const e of this.layers) {
      e?.k.dispose();
      e?.v.dispose();
    }
    this.layers.fill(undefined);
    this.length = 0;
  }
}

/**
 * Cached activations of one forward pass, keyed by hook name, with the TransformerLens-style
 * views researchers reach for: per-layer stacks, per-head results, the accumulated residual
 * stream and the logit lens. Owns its tensors: call dispose() when done.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { headResults } from '../models/components.js';
import type { TokenBatch } from '../models/transformer.js';
import type { HookedModel } from './hooked-model.js';

export class ActivationCache {
  constructor(
    private readonly model: HookedModel,
    private readonly store: Map<string, tf.Tensor>,
    readonly tokens: TokenBatch,
  ) {}

  get names(): string[] {
    return [...this.store.keys()];
  }

  has(name: string): boolean {
    return this.store.has(name);
  }

  get(name: string): tf.Tensor {
    const t = this.store.get(name);
    if (!t) fail(`hook '${name}' is not in the cache (${this.store.size} hooks cached; cache it with names: ['${name}'])`);
    return t;
  }

  private layerName(l: number, suffix: string): string {
    return `blocks.${l}.${suffix}`;
  }

  private layers(layers?: number): number[] {
    const n = layers ?? this.model.cfg.nLayers;
    return Array.from({ length: n }, (_, l) => l);
  }

  /** Stack one per-layer hook (e.g. 'hook_resid_post', 'attn.hook_pattern') over layers: [L, ...]. */
  stack(suffix: string, layers?: number): tf.Tensor {
    return tf.tidy(() => tf.stack(this.layers(layers).map((l) => this.get(this.layerName(l, suffix)))));
  }

  /**
   * Residual stream before each layer and after the last: [n, batch, pos, d] with labels
   * ('0_pre', '0_mid', …, 'final_post'). `layer` stops before that layer (exclusive), as in
   * TransformerLens's accumulated_resid.
   */
  accumulatedResid(opts: { layer?: number; inclMid?: boolean } = {}): { resid: tf.Tensor; labels: string[] } {
    const L = this.model.cfg.nLayers;
    const upTo = opts.layer ?? L;
    const parts: tf.Tensor[] = [];
    const labels: string[] = [];
    for (let l = 0; l < Math.min(upTo, L); l++) {
      parts.push(this.residPre(l));
      labels.push(`${l}_pre`);
      if (opts.inclMid) {
        parts.push(this.get(this.layerName(l, 'hook_resid_mid')));
        labels.push(`${l}_mid`);
      }
    }
    if (upTo >= L) {
      parts.push(this.get(this.layerName(L - 1, 'hook_resid_post')));
      labels.push('final_post');
    }
    return { resid: tf.tidy(() => tf.stack(parts)), labels };
  }

  /** Residual stream entering layer l; the previous layer's resid_post is the same value. */
  private residPre(l: number): tf.Tensor {
    const pre = this.layerName(l, 'hook_resid_pre');
    if (l > 0 && !this.store.has(pre) && this.store.has(this.layerName(l - 1, 'hook_resid_post'))) {
      return this.get(this.layerName(l - 1, 'hook_resid_post'));
    }
    return this.get(pre);
  }

  /**
   * Apply the final norm to a stack of residual-stream vectors [..., d]. By default each vector is
   * normalised afresh (logit lens); with useCachedScale the cached ln_final.hook_scale is used, so
   * the map stays linear (direct logit attribution), as TransformerLens's apply_ln_to_stack.
   */
  applyLnToStack(stack: tf.Tensor, opts: { useCachedScale?: boolean } = {}): tf.Tensor {
    if (!opts.useCachedScale) return this.model.applyFinalNorm(stack);
    const cfg = this.model.cfg;
    const scale = this.get('ln_final.hook_scale');
    return tf.tidy(() => {
      const centred = cfg.norm === 'layernorm' ? tf.sub(stack, tf.mean(stack, -1, true)) : stack;
      const w = this.model.weight('ln_final.w');
      const out = tf.mul(tf.div(centred, scale), w);
      return this.model.hasWeight('ln_final.b') && cfg.norm === 'layernorm' ? tf.add(out, this.model.weight('ln_final.b')) : out;
    });
  }

  /** Logit lens: unembed the final-normed accumulated residual. [n, batch, pos, vocab]. */
  logitLens(opts: { layer?: number; inclMid?: boolean } = {}): { logits: tf.Tensor; labels: string[] } {
    const { resid, labels } = this.accumulatedResid(opts);
    const logits = tf.tidy(() => this.model.unembed(this.applyLnToStack(resid)));
    resid.dispose();
    return { logits, labels };
  }

  /**
   * Each head's write into the residual stream, [batch, pos, head, d_model] (without b_O).
   * Uses cached attn.hook_result when present, else recomputes it from hook_z and W_O.
   */
  headResults(layer: number): tf.Tensor {
    const cached = this.store.get(this.layerName(layer, 'attn.hook_result'));
    if (cached) return cached.clone();
    const z = this.get(this.layerName(layer, 'attn.hook_z'));
    return tf.tidy(() => headResults(z, this.model.weight(`blocks.${layer}.attn.W_O`)));
  }

  /** All heads' results stacked: [L·H, batch, pos, d_model] with labels 'L{l}H{h}'. */
  stackHeadResults(layers?: number): { results: tf.Tensor; labels: string[] } {
    const ls = this.layers(layers);
    const H = this.model.cfg.nHeads;
    const results = tf.tidy(() =>
      tf.concat(
        ls.map((l) => {
          const r = this.headResults(l);
          return tf.transpose(r, [2, 0, 1, 3]);
        }),
        0,
      ),
    );
    return { results, labels: ls.flatMap((l) => Array.from({ length: H }, (_, h) => `L${l}H${h}`)) };
  }

  /** Dispose every cached tensor. */
  dispose(): void {
    for (const t of new Set(this.store.values())) t.dispose();
    this.store.clear();
  }
}

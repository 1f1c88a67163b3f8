/**
 * Training a causal LM with the runtime's own forward pass (tfjs autodiff + Adam). Weights are
 * tf.variables in our canonical layout; the same transformerForward that serves interpretability
 * computes the loss, so a trained model behaves identically when loaded back.
 *
 * wasm has no kernel for gather's gradient, so token embeddings are one-hot·W_E here (same values).
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { BlockContext } from '../models/components.js';
import type { ModelConfig } from '../models/config.js';
import { transformerForward, type TokenBatch } from '../models/transformer.js';
import type { RawTensor } from '../io/raw-tensor.js';
import { mulberry32 } from '../util/random.js';

/** Canonical GPT-2-style parameter shapes for a config (tied unembedding). */
export function gpt2ParamShapes(cfg: ModelConfig): Map<string, number[]> {
  const { dModel: d, dMlp: m, dVocab: V, nCtx } = cfg;
  const s = new Map<string, number[]>([
    ['embed.W_E', [V, d]],
    ['pos_embed.W_pos', [nCtx, d]],
    ['ln_final.w', [d]],
    ['ln_final.b', [d]],
  ]);
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = `blocks.${l}.`;
    for (const n of ['ln1', 'ln2']) (s.set(b + n + '.w', [d]), s.set(b + n + '.b', [d]));
    for (const n of ['Q', 'K', 'V']) (s.set(b + `attn.W_${n}`, [d, d]), s.set(b + `attn.b_${n}`, [d]));
    s.set(b + 'attn.W_O', [d, d]);
    s.set(b + 'attn.b_O', [d]);
    s.set(b + 'mlp.W_in', [d, m]);
    s.set(b + 'mlp.b_in', [m]);
    s.set(b + 'mlp.W_out', [m, d]);
    s.set(b + 'mlp.b_out', [d]);
  }
  return s;
}

/** GPT-2 initialisation, seeded: N(0, 0.02) matrices (output projections scaled by 1/√(2L)), LN 1/0, biases 0. */
export function initGpt2Weights(cfg: ModelConfig, seed: number): Map<string, RawTensor> {
  const rand = mulberry32(seed);
  const normal = () => {
    // Box–Muller from two uniforms in (0, 1].
    const u = 1 - rand();
    const v = rand();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  const out = new Map<string, RawTensor>();
  for (const [name, shape] of gpt2ParamShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (shape.length === 2) {
      const std = /W_O|W_out/.test(name) ? 0.02 / Math.sqrt(2 * cfg.nLayers) : 0.02;
      for (let i = 0; i < n; i++) data[i] = std * normal();
    } else if (/\.w$/.test(name)) data.fill(1);
    out.set(name, { shape, data });
  }
  return out;
}

/** One learning-rate phase: `total` steps counted from its first step `from` (default 0). */
export interface LrPhase {
  peak: number;
  warmup: number;
  total: number;
  min?: number;
  from?: number;
}

export class CausalLmTrainer {
  readonly vars = new Map<string, tf.Variable>();
  private readonly optimizer: tf.AdamOptimizer;

  constructor(
    readonly cfg: ModelConfig,
    weights: Map<string, RawTensor>,
    private readonly lr: LrPhase | LrPhase[],
  ) {
    if (cfg.architecture !== 'gpt2') fail('CausalLmTrainer trains GPT-2-style models (tied embeddings)');
    for (const [name, t] of weights) this.vars.set(name, tf.variable(tf.tensor(t.data, t.shape, 'float32'), true, name));
    this.optimizer = tf.train.adam(this.learningRate(0), 0.9, 0.98, 1e-8);
  }

  /**
   * Linear warm-up, then cosine decay to `min` (default peak/10). Several phases (each `from` its
   * first step) restart the schedule, e.g. for a second training phase on another corpus.
   */
  learningRate(step: number): number {
    const phases = Array.isArray(this.lr) ? this.lr : [this.lr];
    const phase = phases.filter((p) => (p.from ?? 0) <= step).at(-1) ?? phases[0];
    const { peak, warmup, total } = phase;
    const min = phase.min ?? peak / 10;
    const local = step - (phase.from ?? 0);
    if (local < warmup) return (peak * (local + 1)) / warmup;
    const p = Math.min(1, (local - warmup) / Math.max(1, total - warmup));
    return min + 0.5 * (peak - min) * (1 + Math.cos(Math.PI * p));
  }

  private context(): BlockContext {
    return {
      cfg: this.cfg,
      rules: new Set(),
      wants: () => false,
      hook: (_n, x) => x,
      param: (n) => {
        if (n === 'unembed.W_U') return tf.transpose(this.vars.get('embed.W_E')!);
        const v = this.vars.get(n);
        if (!v) fail(`no trainable weight '${n}'`);
        return v;
      },
      maybeParam: (n) => this.vars.get(n),
    };
  }

  /** Mean next-token cross-entropy over all positions of a [batch, T] id matrix (no padding). */
  loss(ids: Int32Array, batch: number, T: number): tf.Scalar {
    return tf.tidy(() => {
      const tokens: TokenBatch = { ids, mask: new Int32Array(ids.length).fill(1), batch, seqLen: T };
      const V = this.cfg.dVocab;
      const oneHot = tf.oneHot(tf.tensor1d(ids, 'int32'), V).toFloat();
      const embeds = tf.matMul(oneHot, this.vars.get('embed.W_E')!).reshape([batch, T, this.cfg.dModel]);
      const logits = transformerForward(this.context(), tokens, { inputsEmbeds: embeds });
      const logp = tf.logSoftmax(logits.slice([0, 0, 0], [batch, T - 1, V]));
      const next = new Int32Array(batch * (T - 1));
      for (let b = 0; b < batch; b++) for (let t = 0; t < T - 1; t++) next[b * (T - 1) + t] = ids[b * T + t + 1];
      const target = tf.oneHot(tf.tensor1d(next, 'int32'), V).toFloat().reshape([batch, T - 1, V]);
      return tf.neg(tf.mean(tf.sum(tf.mul(logp, target), -1))).asScalar();
    });
  }

  /** One Adam step; returns the loss. */
  step(step: number, ids: Int32Array, batch: number, T: number): number {
    (this.optimizer as unknown as { learningRate: number }).learningRate = this.learningRate(step);
    const loss = this.optimizer.minimize(() => this.loss(ids, batch, T), true, [...this.vars.values()]);
    const v = loss!.dataSync()[0];
    loss!.dispose();
    return v;
  }

  /** Current weights as host tensors (canonical names). */
  weights(): Map<string, RawTensor> {
    const out = new Map<string, RawTensor>();
    for (const [n, v] of this.vars) out.set(n, { shape: [...v.shape], data: v.dataSync() as Float32Array });
    return out;
  }

  /** Adam moments and step count, for resumable checkpoints. */
  async optimizerState(): Promise<Map<string, RawTensor>> {
    const out = new Map<string, RawTensor>();
    for (const { name, tensor } of await this.optimizer.getWeights()) out.set(name, { shape: [...tensor.shape], data: Float32Array.from(tensor.dataSync()) });
    return out;
  }

  async restore(weights: Map<string, RawTensor>, optimizer: Map<string, RawTensor>): Promise<void> {
    for (const [n, v] of this.vars) {
      const t = weights.get(n);
      if (!t) fail(`checkpoint lacks weight '${n}'`);
      v.assign(tf.tensor(t.data, t.shape, 'float32'));
    }
    await this.optimizer.setWeights([...optimizer].map(([name, t]) => ({ name, tensor: tf.tensor(t.data, t.shape, 'float32') })));
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.optimizer.dispose();
  }
}

/**
 * Sparse autoencoders with SAELens semantics (standard, topk, batchtopk, jumprelu, gated).
 *
 * Weights are tf.Variables named as in SAELens (W_enc [d_in,d_sae], b_enc, W_dec [d_sae,d_in],
 * b_dec, threshold, b_gate, r_mag, b_mag). Every method takes rows x [n, d_in] and is
 * differentiable with respect to the variables, so a trainer can wrap them in tf optimizers.
 * Masks (top-k selection, thresholds, gates) are constants in the backward pass, as in SAELens.
 * Methods return new tensors the caller disposes; intermediates are freed inside.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { numel, type RawTensor } from '../io/raw-tensor.js';
import { mulberry32 } from '../util/random.js';
import type { SaeArchitecture, SaeConfig } from './config.js';

export type SaeParamName = 'W_enc' | 'b_enc' | 'W_dec' | 'b_dec' | 'threshold' | 'b_gate' | 'r_mag' | 'b_mag';

/** Tensors each architecture needs; batchtopk may also carry a threshold (see activate). */
const REQUIRED: Record<SaeArchitecture, SaeParamName[]> = {
  standard: ['W_enc', 'b_enc', 'W_dec', 'b_dec'],
  topk: ['W_enc', 'b_enc', 'W_dec', 'b_dec'],
  batchtopk: ['W_enc', 'b_enc', 'W_dec', 'b_dec'],
  jumprelu: ['W_enc', 'b_enc', 'W_dec', 'b_dec', 'threshold'],
  gated: ['W_enc', 'W_dec', 'b_dec', 'b_gate', 'r_mag', 'b_mag'],
};
const OPTIONAL: Partial<Record<SaeArchitecture, SaeParamName[]>> = { batchtopk: ['threshold'] };

/** SAELens JumpReLU training default for the initial threshold (jumprelu_init_threshold). */
const JUMPRELU_INIT_THRESHOLD = 0.001;
/** SAELens layer_norm mode adds this to the std before dividing. */
const LN_EPS = 1e-5;

export interface EncodeOptions {
  /**
   * BatchTopK training activation: keep the largest floor(k·n) ReLU'd pre-activations over the
   * whole batch of n rows (SAELens BatchTopK). Off: per-row top-k, or the threshold when present.
   */
  batchTopK?: boolean;
}

export function expectedShape(cfg: Pick<SaeConfig, 'dIn' | 'dSae'>, name: SaeParamName): number[] {
  if (name === 'W_enc') return [cfg.dIn, cfg.dSae];
  if (name === 'W_dec') return [cfg.dSae, cfg.dIn];
  if (name === 'b_dec') return [cfg.dIn];
  return [cfg.dSae];
}

// tfjs types customGrad's inputs loosely; ours know their arity.
type CustomFn = (...args: never[]) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor) => tf.Tensor | tf.Tensor[] };
const custom = (f: CustomFn) => tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (...xs: tf.Tensor[]) => tf.Tensor;

/** fn(...xs) as a constant of the backward pass (masks from comparisons/top-k have no gradient). */
function constant(fn: (...xs: tf.Tensor[]) => tf.Tensor, ...xs: tf.Tensor[]): tf.Tensor {
  return custom(((...args: tf.Tensor[]) => {
    const ins = args.slice(0, xs.length);
    return { value: fn(...ins), gradFunc: () => ins.map((t) => tf.zerosLike(t)) };
  }) as CustomFn)(...xs);
}

/** 1 where pre is among the k largest of its row (ties with the k-th value are kept too). */
function rowTopKMask(pre: tf.Tensor2D, k: number): tf.Tensor {
  return constant((p) => {
    const kk = Math.min(k, p.shape[1]!);
    const kth = tf.topk(p, kk).values.slice([0, kk - 1], [-1, 1]);
    // p ≥ kth as 1 − step(kth − p): the same mask, ~10× faster than a broadcasting greaterEqual on wasm.
    return tf.sub(1, tf.step(tf.sub(kth, p)));
  }, pre);
}

/** 1 where a (≥ 0) is positive and among the `count` largest entries of the whole batch. */
function batchTopKMask(acts: tf.Tensor2D, count: number): tf.Tensor {
  return constant((a) => {
    if (count <= 0) return tf.zerosLike(a);
    const flat = a.reshape([-1]) as tf.Tensor1D;
    const kk = Math.min(count, flat.size);
    const kth = tf.topk(flat, kk).values.slice([kk - 1], [1]);
    return tf.cast(tf.logicalAnd(tf.greaterEqual(a, kth), tf.greater(a, 0)), 'float32');
  }, acts);
}

export class Sae {
  private readonly vars = new Map<SaeParamName, tf.Variable>();
  private disposed = false;

  /**
   * @param tensors weights by SAELens name, validated against cfg (names and shapes)
   * @param source what to name in error messages (e.g. the weights file)
   */
  constructor(
    readonly cfg: SaeConfig,
    tensors: Record<string, RawTensor>,
    source = 'SAE',
  ) {
    const arch = cfg.architecture;
    if ((arch === 'topk' || arch === 'batchtopk') && !(cfg.k! > 0)) fail(`${source}: a ${arch} SAE needs k > 0`);
    const allowed = new Set<string>([...REQUIRED[arch], ...(OPTIONAL[arch] ?? [])]);
    for (const name of REQUIRED[arch]) if (!tensors[name]) fail(`${source}: missing tensor "${name}" (needed by a ${arch} SAE)`);
    for (const [name, t] of Object.entries(tensors)) {
      if (!allowed.has(name)) fail(`${source}: unexpected tensor "${name}" for a ${arch} SAE (expected ${[...allowed].join(', ')})`);
      const want = expectedShape(cfg, name as SaeParamName);
      if (!tf.util.arraysEqual(t.shape, want)) {
        fail(`${source}: tensor "${name}" has shape [${t.shape.join(', ')}], expected [${want.join(', ')}] (d_in ${cfg.dIn}, d_sae ${cfg.dSae})`);
      }
      if (t.data.length !== numel(t.shape)) fail(`${source}: tensor "${name}" has ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    }
    for (const name of allowed) {
      const t = tensors[name];
      if (t) this.vars.set(name as SaeParamName, toVariable(tf.tensor(t.data, t.shape, 'float32')));
    }
  }

  /**
   * A fresh SAE, SAELens-style: W_dec rows drawn uniformly (kaiming bound sqrt(6/d_in)) then
   * scaled to unit norm, W_enc = W_decᵀ, zero biases (jumprelu threshold 0.001, SAELens'
   * jumprelu_init_threshold). Deterministic for a given seed.
   */
  static init(cfg: SaeConfig, seed = 0): Sae {
    const { dIn, dSae } = cfg;
    const rand = mulberry32(seed);
    const bound = Math.sqrt(6 / dIn);
    const wDec = new Float32Array(dSae * dIn);
    for (let i = 0; i < wDec.length; i++) wDec[i] = (2 * rand() - 1) * bound;
    for (let r = 0; r < dSae; r++) {
      let s = 0;
      for (let c = 0; c < dIn; c++) s += wDec[r * dIn + c] ** 2;
      const norm = Math.sqrt(s) || 1;
      for (let c = 0; c < dIn; c++) wDec[r * dIn + c] /= norm;
    }
    const wEnc = new Float32Array(dIn * dSae);
    for (let r = 0; r < dSae; r++) for (let c = 0; c < dIn; c++) wEnc[c * dSae + r] = wDec[r * dIn + c];
    const t: Record<string, RawTensor> = {};
    const zeros = (name: SaeParamName) => ({ shape: expectedShape(cfg, name), data: new Float32Array(numel(expectedShape(cfg, name))) });
    for (const name of REQUIRED[cfg.architecture]) t[name] = zeros(name);
    t.W_dec = { shape: [dSae, dIn], data: wDec };
    t.W_enc = { shape: [dIn, dSae], data: wEnc };
    if (cfg.architecture === 'jumprelu') {
      const init = typeof cfg.raw.jumprelu_init_threshold === 'number' ? cfg.raw.jumprelu_init_threshold : JUMPRELU_INIT_THRESHOLD;
      t.threshold.data.fill(init);
    }
    return new Sae(cfg, t, 'Sae.init');
  }

  private v(name: SaeParamName): tf.Variable {
    if (this.disposed) fail('SAE was disposed');
    const t = this.vars.get(name);
    if (!t) fail(`this ${this.cfg.architecture} SAE has no "${name}"`);
    return t;
  }

  get W_enc(): tf.Variable { return this.v('W_enc'); }
  get b_enc(): tf.Variable { return this.v('b_enc'); }
  get W_dec(): tf.Variable { return this.v('W_dec'); }
  get b_dec(): tf.Variable { return this.v('b_dec'); }
  get threshold(): tf.Variable { return this.v('threshold'); }
  get b_gate(): tf.Variable { return this.v('b_gate'); }
  get r_mag(): tf.Variable { return this.v('r_mag'); }
  get b_mag(): tf.Variable { return this.v('b_mag'); }

  has(name: SaeParamName): boolean {
    return this.vars.has(name);
  }

  /** The trainable variables by SAELens name (for optimizer.minimize varList). */
  variables(): Record<string, tf.Variable> {
    return Object.fromEntries(this.vars);
  }

  /** Set (or create, for batchtopk) the per-latent threshold: one value for all latents or d_sae values. */
  setThreshold(values: number | Float32Array): void {
    const arch = this.cfg.architecture;
    if (arch !== 'jumprelu' && arch !== 'batchtopk') fail(`a ${arch} SAE has no threshold`);
    const data = typeof values === 'number' ? new Float32Array(this.cfg.dSae).fill(values) : values;
    if (data.length !== this.cfg.dSae) fail(`threshold needs ${this.cfg.dSae} values, got ${data.length}`);
    const t = tf.tensor1d(data, 'float32');
    const cur = this.vars.get('threshold');
    if (!cur) return void this.vars.set('threshold', toVariable(t));
    cur.assign(t);
    t.dispose();
  }

  /** Input normalisation per normalize_activations (SAELens run_time_activation_norm_fn_in). */
  normalizeIn(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      switch (this.cfg.normalizeActivations) {
        case 'none':
          return x.clone();
        case 'expected_average_only_in':
          return tf.mul(x, this.cfg.scalingFactor ?? 1);
        case 'constant_norm_rescale':
          return tf.mul(x, tf.div(Math.sqrt(this.cfg.dIn), tf.norm(x, 'euclidean', -1, true)));
        case 'layer_norm': {
          const { mu, std } = rowStats(x);
          return tf.div(tf.sub(x, mu), tf.add(std, LN_EPS));
        }
      }
    }) as tf.Tensor2D;
  }

  /**
   * Undo normalizeIn on a reconstruction. `x` is the un-normalised input the reconstruction is
   * of: constant_norm_rescale and layer_norm need its per-row statistics (SAELens keeps them from
   * the forward pass; recomputing them keeps this stateless).
   */
  denormalizeOut(xhat: tf.Tensor2D, x?: tf.Tensor2D): tf.Tensor2D {
    const mode = this.cfg.normalizeActivations;
    if ((mode === 'constant_norm_rescale' || mode === 'layer_norm') && !x) {
      fail(`normalize_activations=${mode} needs the SAE input to undo the per-row normalisation`);
    }
    return tf.tidy(() => {
      switch (mode) {
        case 'none':
          return xhat.clone();
        case 'expected_average_only_in':
          return tf.div(xhat, this.cfg.scalingFactor ?? 1);
        case 'constant_norm_rescale':
          return tf.mul(xhat, tf.div(tf.norm(x!, 'euclidean', -1, true), Math.sqrt(this.cfg.dIn)));
        case 'layer_norm': {
          const { mu, std } = rowStats(x!);
          return tf.add(tf.mul(xhat, std), mu);
        }
      }
    }) as tf.Tensor2D;
  }

  /** Normalised input minus b_dec when apply_b_dec_to_input. */
  private centred(xn: tf.Tensor2D): tf.Tensor2D {
    return (this.cfg.applyBDecToInput ? tf.sub(xn, this.b_dec) : xn) as tf.Tensor2D;
  }

  /**
   * hidden_pre from an already normalised input (SAELens hook_sae_acts_pre): (x − b_dec)·W_enc +
   * b_enc; for gated the magnitude path (x − b_dec)·(W_enc ⊙ exp(r_mag)) + b_mag.
   */
  preActivation(xn: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const c = this.centred(xn);
      if (this.cfg.architecture === 'gated') return tf.add(tf.matMul(c, tf.mul(this.W_enc, tf.exp(this.r_mag))), this.b_mag);
      return tf.add(tf.matMul(c, this.W_enc), this.b_enc);
    }) as tf.Tensor2D;
  }

  /**
   * Latent activations from hidden_pre (and the normalised input, which the gated gate uses).
   * batchtopk at inference: JumpReLU with the stored threshold when there is one (SAELens saves
   * BatchTopK SAEs that way), else per-row top-round(k).
   */
  activate(pre: tf.Tensor2D, xn: tf.Tensor2D, opts: EncodeOptions = {}): tf.Tensor2D {
    return tf.tidy(() => {
      const relu = tf.relu(pre);
      switch (this.cfg.architecture) {
        case 'standard':
          return relu;
        case 'topk':
          return tf.mul(relu, rowTopKMask(pre, this.cfg.k!));
        case 'batchtopk':
          if (opts.batchTopK) return tf.mul(relu, batchTopKMask(relu, Math.floor(this.cfg.k! * pre.shape[0])));
          if (this.has('threshold')) return tf.mul(relu, constant((p, t) => tf.cast(tf.greater(p, t), 'float32'), pre, this.threshold));
          return tf.mul(relu, rowTopKMask(pre, Math.max(1, Math.round(this.cfg.k!))));
        case 'jumprelu':
          return tf.mul(relu, constant((p, t) => tf.cast(tf.greater(p, t), 'float32'), pre, this.threshold));
        case 'gated': {
          const gatePre = tf.add(tf.matMul(this.centred(xn), this.W_enc), this.b_gate);
          return tf.mul(constant((g) => tf.cast(tf.greater(g, 0), 'float32'), gatePre), relu);
        }
      }
    }) as tf.Tensor2D;
  }

  /** hidden_pre for raw inputs x [n, d_in] (normalisation applied first). */
  encodePre(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => this.preActivation(this.normalizeIn(x)));
  }

  /** Latent activations [n, d_sae]. */
  encode(x: tf.Tensor2D, opts: EncodeOptions = {}): tf.Tensor2D {
    return tf.tidy(() => {
      const xn = this.normalizeIn(x);
      return this.activate(this.preActivation(xn), xn, opts);
    });
  }

  /** acts·W_dec + b_dec, still in the normalised space (SAELens hook_sae_recons). */
  decodeNormalized(acts: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => tf.add(tf.matMul(acts, this.W_dec), this.b_dec)) as tf.Tensor2D;
  }

  /** Reconstruction in activation space; `x` (the input) is needed for per-row normalisation modes. */
  decode(acts: tf.Tensor2D, x?: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => this.denormalizeOut(this.decodeNormalized(acts), x));
  }

  forward(x: tf.Tensor2D, opts: EncodeOptions = {}): { acts: tf.Tensor2D; recons: tf.Tensor2D } {
    const acts = this.encode(x, opts);
    const recons = this.decode(acts, x);
    return { acts, recons };
  }

  /** ‖W_dec[i]‖ per latent, [d_sae]. */
  decoderNorms(): tf.Tensor1D {
    return tf.tidy(() => tf.norm(this.W_dec, 'euclidean', 1)) as tf.Tensor1D;
  }

  /** Scale W_dec rows to unit norm in place (rows of norm 0 are left alone). */
  normalizeDecoder(): void {
    tf.tidy(() => {
      const n = tf.norm(this.W_dec, 'euclidean', 1, true);
      const safe = tf.where(tf.greater(n, 0), n, tf.onesLike(n));
      this.W_dec.assign(tf.div(this.W_dec, safe));
    });
  }

  /** Host copies of every weight by SAELens name, in name order (as Python safetensors writes them). */
  tensors(): Record<string, RawTensor> {
    if (this.disposed) fail('SAE was disposed');
    const out: Record<string, RawTensor> = {};
    for (const name of [...this.vars.keys()].sort()) {
      const v = this.vars.get(name)!;
      out[name] = { shape: [...v.shape], data: new Float32Array(v.dataSync()) };
    }
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
    this.disposed = true;
  }
}

/** A trainable variable holding t's values; t itself is released. */
function toVariable(t: tf.Tensor): tf.Variable {
  const v = tf.variable(t, true);
  t.dispose();
  return v;
}

/** Row mean and unbiased std (torch.std's default), as SAELens' layer_norm mode uses. */
function rowStats(x: tf.Tensor2D): { mu: tf.Tensor; std: tf.Tensor } {
  const d = x.shape[1];
  const mu = tf.mean(x, -1, true);
  const ss = tf.sum(tf.square(tf.sub(x, mu)), -1, true);
  return { mu, std: tf.sqrt(tf.div(ss, Math.max(d - 1, 1))) };
}

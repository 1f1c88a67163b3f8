/**
 * HookedModel: the runtime every analysis sits on. Loads weights onto the tfjs backend once and
 * runs the generic transformer with TransformerLens-named hook points that can be read, replaced,
 * cached or differentiated.
 *
 * Tensor ownership: `run*` return tensors the caller disposes (logits, cache, grads); everything
 * created inside a call is freed before it returns.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { ModelConfig } from '../models/config.js';
import { applyNorm, type BlockContext } from '../models/components.js';
import { transformerForward, validateTokens, type ForwardExtras, type TokenBatch } from '../models/transformer.js';
import type { WeightMap } from '../models/weights.js';
import type { RelpRule } from '../models/grad-rules.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { ActivationCache } from './activation-cache.js';
import { allHookNames, hookShape, isOptInHook, positionAxis, resolveHookNames, type HookSelector } from './hook-names.js';
import { isTokenBatch, lastPositions, padBatch, type PaddingSide } from './token-batch.js';

export type HookFn = (activation: tf.Tensor, info: { name: string }) => tf.Tensor | void;
export type FwdHook = [HookSelector, HookFn];

/** Text(s), token ids (one prompt or several), or a ready batch with its mask. */
export type ModelInput = string | string[] | number[] | number[][] | TokenBatch;

/** Keep a subset of positions in the cache: one index (negative counts from the end) or [start, end). */
export type PosSlice = number | [number, number];

export interface RunOptions extends ForwardExtras {
  fwdHooks?: FwdHook[];
  /** RelP rules: change only the backward pass (gradients), never forward values. */
  rules?: readonly RelpRule[];
  /** How ragged prompts are padded (default right). */
  padding?: PaddingSide;
}

export interface CacheOptions extends RunOptions {
  /** Hooks to cache; default every hook except opt-in ones (hook_result). */
  names?: HookSelector[] | HookSelector;
  posSlice?: PosSlice;
}

interface ForwardPlan {
  hooks: Map<string, HookFn[]>;
  cacheNames: Set<string>;
  store: Map<string, tf.Tensor>;
  posSlice?: PosSlice;
  deltas: Map<string, tf.Tensor>;
  rules: ReadonlySet<RelpRule>;
  /** Only activation gradients are taken (weights constant): use cached Wᵀ in backward passes. */
  constantWeights?: boolean;
}

export class HookedModel {
  private readonly params = new Map<string, tf.Tensor>();
  /** Wᵀ per weight, made on the first backward pass that needs it. */
  private readonly transposed = new Map<string, tf.Tensor>();
  private readonly hookList: string[];
  private disposed = false;

  constructor(
    readonly cfg: ModelConfig,
    weights: WeightMap,
    readonly tokenizer: Tokenizer | null,
    /** Where the model came from (path), for messages and cache metadata. */
    readonly source: string,
  ) {
    for (const [name, t] of weights) this.params.set(name, tf.tensor(t.data, t.shape, 'float32'));
    this.hookList = allHookNames(cfg);
  }

  /** Every hook name in forward order. */
  hookNames(): string[] {
    return [...this.hookList];
  }

  /** Weight tensor by canonical name (e.g. 'blocks.0.attn.W_O'); owned by the model. */
  weight(name: string): tf.Tensor {
    const t = this.params.get(name);
    if (!t) fail(`model has no weight '${name}'`);
    return t;
  }

  private transposedWeight(name: string): tf.Tensor {
    let t = this.transposed.get(name);
    if (!t) {
      t = tf.keep(tf.transpose(this.weight(name)));
      this.transposed.set(name, t);
    }
    return t;
  }

  hasWeight(name: string): boolean {
    return this.params.has(name);
  }

  /** Tokenize and pad. Text uses the tokenizer's default special tokens (BOS where it adds one). */
  toTokens(input: ModelInput, padding: PaddingSide = 'right'): TokenBatch {
    if (isTokenBatch(input)) return input;
    if (typeof input === 'string') return padBatch([this.encode(input)], padding, this.padId());
    if (input.length === 0) fail('empty input: no prompts given');
    if (typeof input[0] === 'string') return padBatch((input as string[]).map((s) => this.encode(s)), padding, this.padId());
    if (typeof input[0] === 'number') return padBatch([input as number[]], padding, this.padId());
    return padBatch(input as number[][], padding, this.padId());
  }

  encode(text: string): number[] {
    if (!this.tokenizer) fail(`${this.source}: the model has no tokenizer; pass token ids instead of text`);
    return this.tokenizer.encode(text);
  }

  private padId(): number {
    return this.cfg.padTokenId ?? this.tokenizer?.padTokenId ?? 0;
  }

  /** Logits [batch, pos, vocab]. */
  run(input: ModelInput, opts: RunOptions = {}): tf.Tensor3D {
    const tokens = this.toTokens(input, opts.padding);
    return tf.tidy(() => this.forward(tokens, this.plan(tokens, opts.fwdHooks, undefined, undefined, opts.rules), opts)) as tf.Tensor3D;
  }

  runWithHooks(input: ModelInput, fwdHooks: FwdHook[], opts: RunOptions = {}): tf.Tensor3D {
    return this.run(input, { ...opts, fwdHooks });
  }

  runWithCache(input: ModelInput, opts: CacheOptions = {}): { logits: tf.Tensor3D; cache: ActivationCache } {
    const tokens = this.toTokens(input, opts.padding);
    const plan = this.plan(tokens, opts.fwdHooks, opts.names ?? defaultCacheNames, opts.posSlice, opts.rules);
    try {
      const logits = tf.tidy(() => this.forward(tokens, plan, opts)) as tf.Tensor3D;
      return { logits, cache: new ActivationCache(this, plan.store, tokens) };
    } catch (e) {
      for (const t of plan.store.values()) t.dispose();
      throw e;
    }
  }

  /**
   * Value of a scalar metric and its gradient with respect to each named hook activation, from one
   * forward and one backward pass. Optionally caches activations from that same forward.
   */
  gradients(
    input: ModelInput,
    names: HookSelector[] | HookSelector,
    metric: (logits: tf.Tensor3D, tokens: TokenBatch) => tf.Scalar,
    opts: CacheOptions & { cacheNames?: HookSelector[] | HookSelector } = {},
  ): { value: number; grads: Map<string, tf.Tensor>; cache: ActivationCache | null } {
    const tokens = this.toTokens(input, opts.padding);
    const gradNames = resolveHookNames(this.cfg, names);
    const plan = this.plan(tokens, opts.fwdHooks, opts.cacheNames, opts.posSlice, opts.rules);
    // d(metric)/d(act) = d(metric)/d(delta) for act' = act + delta at delta = 0.
    plan.constantWeights = true;
    const deltas = gradNames.map((n) => tf.zeros(hookShape(this.cfg, n, tokens.batch, tokens.seqLen)));
    try {
      const { value, grads } = tf.tidy(() =>
        tf.valueAndGrads((...ds: tf.Tensor[]) => {
          plan.deltas = new Map(gradNames.map((n, i) => [n, ds[i]]));
          return metric(this.forward(tokens, plan, opts) as tf.Tensor3D, tokens);
        })(deltas),
      );
      const v = value.dataSync()[0];
      value.dispose();
      return {
        value: v,
        grads: new Map(gradNames.map((n, i) => [n, grads[i]])),
        cache: opts.cacheNames ? new ActivationCache(this, plan.store, tokens) : null,
      };
    } catch (e) {
      for (const t of plan.store.values()) t.dispose();
      throw e;
    } finally {
      deltas.forEach((d) => d.dispose());
    }
  }

  /** Greedy decoding; returns prompt and new token ids. Stops early at EOS when stopAtEos. */
  generate(prompt: string | number[], maxNewTokens: number, opts: { stopAtEos?: boolean } = {}): number[] {
    const ids = typeof prompt === 'string' ? this.encode(prompt) : [...prompt];
    const eos = this.cfg.eosTokenId ?? this.tokenizer?.eosTokenId ?? null;
    // Check the prompt itself even when no new token fits (it may already exceed the context).
    validateTokens(this.cfg, padBatch([ids]));
    for (let i = 0; i < maxNewTokens; i++) {
      if (ids.length >= this.cfg.nCtx) break;
      // Only the final position is unembedded: full logits would be wasted work.
      const next = tf.tidy(() => this.run([ids], { finalPositionOnly: true }).reshape([-1]).argMax());
      const id = next.dataSync()[0];
      next.dispose();
      ids.push(id);
      if (opts.stopAtEos && id === eos) break;
    }
    return ids;
  }

  /** Final norm without hooks, for logit lens and direct logit attribution. x: [..., d]. */
  applyFinalNorm(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => applyNorm(this.silentContext(), x, 'ln_final'));
  }

  /** x [..., d] → logits [..., vocab]. */
  unembed(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1) as number[];
      const y = tf.matMul(x.reshape([-1, this.cfg.dModel]) as tf.Tensor2D, this.weight('unembed.W_U') as tf.Tensor2D);
      const b = this.params.get('unembed.b_U');
      return (b ? tf.add(y, b) : y).reshape([...lead, this.cfg.dVocab]);
    });
  }

  /** Final-position logits per prompt (last real token, whatever the padding). [batch, vocab] */
  finalLogits(logits: tf.Tensor3D, tokens: TokenBatch): tf.Tensor2D {
    return tf.tidy(() => {
      const idx = lastPositions(tokens).map((t, b) => b * tokens.seqLen + t);
      return tf.gather(logits.reshape([-1, this.cfg.dVocab]), idx) as tf.Tensor2D;
    });
  }

  dispose(): void {
    if (this.disposed) return;
    for (const t of this.params.values()) t.dispose();
    for (const t of this.transposed.values()) t.dispose();
    this.disposed = true;
  }

  private plan(
    tokens: TokenBatch,
    fwdHooks: FwdHook[] = [],
    cache?: HookSelector[] | HookSelector,
    posSlice?: PosSlice,
    rules: readonly RelpRule[] = [],
  ): ForwardPlan {
    if (this.disposed) fail(`${this.source}: model was disposed`);
    validateTokens(this.cfg, tokens);
    const hooks = new Map<string, HookFn[]>();
    for (const [sel, fn] of fwdHooks) {
      for (const name of resolveHookNames(this.cfg, sel)) {
        if (!hooks.has(name)) hooks.set(name, []);
        hooks.get(name)!.push(fn);
      }
    }
    const cacheNames = new Set(cache ? resolveHookNames(this.cfg, cache) : []);
    return { hooks, cacheNames, store: new Map(), posSlice, deltas: new Map(), rules: new Set(rules) };
  }

  private forward(tokens: TokenBatch, plan: ForwardPlan, extras: ForwardExtras): tf.Tensor {
    const ctx = this.context(plan, tokens);
    return transformerForward(ctx, tokens, extras);
  }

  private context(plan: ForwardPlan, tokens: TokenBatch): BlockContext {
    const { hooks, cacheNames, store, deltas, posSlice, rules } = plan;
    return {
      cfg: this.cfg,
      rules,
      transposedParam: plan.constantWeights ? (n) => this.transposedWeight(n) : undefined,
      param: (n) => this.weight(n),
      maybeParam: (n) => this.params.get(n),
      wants: (n) => hooks.has(n) || cacheNames.has(n) || deltas.has(n),
      hook: <T extends tf.Tensor>(name: string, x: T): T => {
        let y: tf.Tensor = x;
        const fns = hooks.get(name);
        if (fns) {
          for (const fn of fns) {
            const r = fn(y, { name });
            if (r) {
              if (!tf.util.arraysEqual(r.shape, y.shape)) {
                fail(`hook '${name}' returned shape [${r.shape}], expected [${y.shape}]`);
              }
              y = r;
            }
          }
        }
        if (cacheNames.has(name)) store.set(name, tf.keep(slicePositions(y, name, posSlice, tokens)));
        const d = deltas.get(name);
        if (d) y = tf.add(y, d);
        return y as T;
      },
    };
  }

  private silentContext(): BlockContext {
    return {
      cfg: this.cfg,
      param: (n) => this.weight(n),
      maybeParam: (n) => this.params.get(n),
      wants: () => false,
      hook: (_n, x) => x,
      rules: new Set(),
    };
  }
}

function defaultCacheNames(name: string): boolean {
  return !isOptInHook(name);
}

function slicePositions(x: tf.Tensor, name: string, posSlice: PosSlice | undefined, tokens: TokenBatch): tf.Tensor {
  // A clone (shares the data): the forward may return this very tensor (e.g. the residual with
  // stopAtLayer), and disposing that result must not dispose the cached entry.
  if (posSlice === undefined) return x.clone();
  const axis = positionAxis(name);
  const T = tokens.seqLen;
  let [start, end] = typeof posSlice === 'number' ? [posSlice, posSlice + 1] : posSlice;
  if (start < 0) start += T;
  if (end <= 0 && typeof posSlice === 'number') end += T;
  else if (end < 0) end += T;
  if (start < 0 || end > T || start >= end) fail(`position slice [${posSlice}] is outside the sequence (length ${T})`);
  const begin = x.shape.map(() => 0);
  const size = x.shape.map(() => -1);
  begin[axis] = start;
  size[axis] = end - start;
  return tf.slice(x, begin, size);
}

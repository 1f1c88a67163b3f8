/**
 * The runtime behind HookedModel: loads weights onto the tfjs backend once and runs a model
 * graph (models/graph.ts) with hook points that can be read, replaced, cached or differentiated
 * at every stage in one pass. The graph decides what runs; this class decides what happens at
 * each hook: registered hook functions, then caching, then (for gradients) a zero delta whose
 * gradient is ∂metric/∂activation.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { applyNorm, type StageContext } from '../models/components.js';
import type { ModelConfig, VisionConfig } from '../models/config.js';
import type { GraphExtras, GraphRun, InputDims, ModelGraph, Stage } from '../models/graph.js';
import { imageCount, type ImageBatch } from '../models/image-batch.js';
import { checkRelpRules, type RelpRule } from '../models/grad-rules.js';
import { expandImagePlaceholders } from '../models/stages/splice.js';
import { validateTokens, type TokenBatch } from '../models/transformer.js';
import type { WeightMap } from '../models/weights.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { ActivationCache } from './activation-cache.js';
import { isOptInHook, positionAxis, resolveHookNames, type HookSelector } from './hook-names.js';
import { KvCache } from '../models/kv-cache.js';
import type { CacheOptions, FwdHook, GenerateOptions, GradientResult, HookFn, HookedModel, ModelInput, MultimodalInput, PosSlice, RunOptions } from './hooked-model.js';
import { appendColumn, decodingRows, isTokenBatch, recordNextTokens, lastPositions, padBatch, type PaddingSide } from './token-batch.js';

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

function isMultimodal(x: unknown): x is MultimodalInput {
  return typeof x === 'object' && x !== null && 'prompts' in x && 'images' in x;
}



export class StagedModel implements HookedModel {
  private readonly params = new Map<string, tf.Tensor>();
  /** Wᵀ per weight, made on the first backward pass that needs it. */
  private readonly transposed = new Map<string, tf.Tensor>();
  private readonly hookList: string[];
  private disposed = false;

  constructor(
    readonly graph: ModelGraph,
    weights: WeightMap,
    readonly tokenizer: Tokenizer | null,
    readonly source: string,
  ) {
    for (const [name, t] of weights) this.params.set(name, tf.tensor(t.data, t.shape, 'float32'));
    this.hookList = graph.hookNames();
  }

  get cfg(): ModelConfig {
    if (!this.graph.lm) fail(`${this.source}: this ${this.graph.description} has no language model`);
    return this.graph.lm;
  }

  get visionCfg(): VisionConfig | null {
    return this.graph.vision;
  }

  get description(): string {
    return this.graph.description;
  }

  hookNames(): string[] {
    return [...this.hookList];
  }

  unknownHookMessage(name: string): string {
    return this.graph.unknownHookMessage(name);
  }

  hookShape(name: string, dims: InputDims): number[] {
    return this.graph.hookShape(name, dims);
  }

  resolveHooks(selectors: HookSelector[] | HookSelector): string[] {
    return resolveHookNames(this, selectors);
  }

  weight(name: string): tf.Tensor {
    const t = this.params.get(name);
    if (!t) fail(`model has no weight '${name}'`);
    return t;
  }

  hasWeight(name: string): boolean {
    return this.params.has(name);
  }

  weightNames(): string[] {
    return [...this.params.keys()];
  }

  private transposedWeight(name: string): tf.Tensor {
    let t = this.transposed.get(name);
    if (!t) {
      t = tf.keep(tf.transpose(this.weight(name)));
      this.transposed.set(name, t);
    }
    return t;
  }

  toTokens(input: ModelInput, padding: PaddingSide = 'right'): TokenBatch {
    if (isTokenBatch(input)) return input;
    if (isMultimodal(input)) return this.withImages(this.graph.kind === 'vision-tower' ? [] : this.promptIds(input.prompts), input.images, padding);
    return this.withImages(this.promptIds(input), undefined, padding);
  }

  private promptIds(input: Exclude<ModelInput, TokenBatch | MultimodalInput>): number[][] {
    if (typeof input === 'string') return [this.encode(input)];
    if (input.length === 0) fail('empty input: no prompts given');
    if (typeof input[0] === 'string') return (input as string[]).map((s) => this.encode(s));
    if (typeof input[0] === 'number') return [input as number[]];
    return input as number[][];
  }

  /** Expand image placeholders (VLMs) and pad; a standalone tower's batch is one row per image. */
  private withImages(prompts: number[][], images: ImageBatch | undefined, padding: PaddingSide): TokenBatch {
    const { graph } = this;
    if (graph.kind === 'vision-tower') {
      if (!images) fail(`${this.source}: a vision tower runs on images, not on token ids`);
      const n = imageCount(images);
      const P = graph.vision!.nPositions;
      return { ids: new Int32Array(n * P), mask: new Int32Array(n * P).fill(1), batch: n, seqLen: P, images };
    }
    let seqs = prompts;
    if (graph.llava) {
      seqs = prompts.map((p, i) => this.expandPrompt(p, prompts.length > 1 ? `prompt ${i + 1}` : 'prompt'));
    }
    const batch = padBatch(seqs, padding, this.padId());
    return images && imageCount(images) > 0 ? { ...batch, images } : batch;
  }

  expandPrompt(ids: readonly number[], where = 'prompt'): number[] {
    const w = this.graph.llava;
    return w ? expandImagePlaceholders(ids, w.imageTokenIndex, w.nImageTokens, where).ids : [...ids];
  }

  encode(text: string): number[] {
    if (!this.tokenizer) fail(`${this.source}: the model has no tokenizer; pass token ids instead of text`);
    return this.tokenizer.encode(text);
  }

  private padId(): number {
    return this.graph.lm?.padTokenId ?? this.tokenizer?.padTokenId ?? 0;
  }

  run(input: ModelInput, opts: RunOptions = {}): tf.Tensor3D {
    const tokens = this.toTokens(input, opts.padding);
    return tf.tidy(() => this.forward(tokens, this.plan(tokens, opts.fwdHooks, undefined, undefined, opts.rules, opts.kvCache?.length ?? 0), opts)) as tf.Tensor3D;
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

  gradients(
    input: ModelInput,
    names: HookSelector[] | HookSelector,
    metric: (logits: tf.Tensor3D, tokens: TokenBatch) => tf.Scalar,
    opts: CacheOptions & { cacheNames?: HookSelector[] | HookSelector } = {},
  ): GradientResult {
    const tokens = this.toTokens(input, opts.padding);
    const gradNames = this.resolveHooks(names);
    const plan = this.plan(tokens, opts.fwdHooks, opts.cacheNames, opts.posSlice, opts.rules);
    // d(metric)/d(act) = d(metric)/d(delta) for act' = act + delta at delta = 0.
    plan.constantWeights = true;
    const dims = inputDims(tokens);
    const deltas = gradNames.map((n) => tf.zeros(this.graph.hookShape(n, dims)));
    try {
      const { value, grads } = tf.tidy(() =>
        tf.valueAndGrads((...ds: tf.Tensor[]) => {
          plan.deltas = new Map(gradNames.map((n, i) => [n, ds[i]]));
          let m = metric(this.forward(tokens, plan, opts) as tf.Tensor3D, tokens);
          // A hook the pass never reaches (a skipped stage) or whose value feeds nothing (a tower
          // block past the feature layer) has gradient 0; tfjs wants every input on a path.
          for (const d of ds) m = tf.add(m, tf.mul(tf.sum(d), 0));
          return m;
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

  generate(prompt: string | number[], maxNewTokens: number, opts: GenerateOptions = {}): number[] {
    return this.generateBatch([prompt], maxNewTokens, opts)[0];
  }

  /**
   * Greedy decoding of several prompts at once (left-padded, so every row's next token is the
   * last column). With the KV cache (default) each step runs only the new tokens through the
   * blocks; forward hooks fire on every pass — the prompt pass, then each new position. Returns
   * each prompt's ids (placeholders expanded) followed by its new tokens, up to its EOS with
   * stopAtEos.
   */
  generateBatch(prompts: readonly (string | number[])[], maxNewTokens: number, opts: GenerateOptions = {}): number[][] {
    if (prompts.length === 0) fail('generate: no prompts');
    const seqs = prompts.map((p) => (typeof p === 'string' ? this.encode(p) : p));
    const start = this.toTokens(opts.images ? { prompts: seqs, images: opts.images } : seqs, 'left');
    const cfg = this.cfg;
    const eos = cfg.eosTokenId ?? this.tokenizer?.eosTokenId ?? null;
    // Check the prompts themselves even when no new token fits (they may already exceed the context).
    this.graph.validate(start, 'prompt');
    const b = start.batch;
    let T = start.seqLen;
    let ids = start.ids;
    let mask = start.mask;
    const { out, longest, done } = decodingRows(start);
    const hooks = opts.fwdHooks?.length ? { fwdHooks: opts.fwdHooks } : {};
    const kvCache = opts.kvCache === false ? undefined : new KvCache(cfg.nLayers, b);
    // Without a cache every step reruns the prompt: embed its images once (unless hooks may edit the tower).
    const imageEmbeds = !kvCache && start.images && !opts.fwdHooks?.length ? this.imageEmbeddings(start) : undefined;
    try {
      for (let i = 0; i < maxNewTokens && longest + i < cfg.nCtx; i++) {
        const batch: TokenBatch = { ids, mask, batch: b, seqLen: T, ...(start.images ? { images: start.images } : {}) };
        // Only the final position is unembedded: full logits would be wasted work.
        const next = tf.tidy(() => this.run(batch, { finalPositionOnly: true, ...(kvCache ? { kvCache } : {}), ...(imageEmbeds ? { imageEmbeds } : {}), ...hooks }).reshape([b, -1]).argMax(-1));
        const nextIds = next.dataSync();
        next.dispose();
        ({ ids, mask } = appendColumn(ids, mask, b, T, nextIds));
        T++;
        if (recordNextTokens(out, done, nextIds, eos, opts.stopAtEos)) break;
      }
    } finally {
      kvCache?.dispose();
      imageEmbeds?.dispose();
    }
    return out;
  }

  /** Projector output for a batch's images (no hooks fire). */
  private imageEmbeddings(tokens: TokenBatch): tf.Tensor {
    const { logits, cache } = this.runWithCache(tokens, { names: ['hook_image_embeds'], stopAtLayer: 0 });
    logits.dispose();
    const e = tf.keep(cache.get('hook_image_embeds').clone());
    cache.dispose();
    return e;
  }

  applyFinalNorm(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => applyNorm(this.silentContext(), x, 'ln_final'));
  }

  unembed(x: tf.Tensor): tf.Tensor {
    const cfg = this.cfg;
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1) as number[];
      const y = tf.matMul(x.reshape([-1, cfg.dModel]) as tf.Tensor2D, this.weight('unembed.W_U') as tf.Tensor2D);
      const b = this.params.get('unembed.b_U');
      return (b ? tf.add(y, b) : y).reshape([...lead, cfg.dVocab]);
    });
  }

  finalLogits(logits: tf.Tensor3D, tokens: TokenBatch): tf.Tensor2D {
    return tf.tidy(() => {
      const idx = lastPositions(tokens).map((t, b) => b * tokens.seqLen + t);
      return tf.gather(logits.reshape([-1, logits.shape[2]]), idx) as tf.Tensor2D;
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
    past = 0,
  ): ForwardPlan {
    if (this.disposed) fail(`${this.source}: model was disposed`);
    // With a KV cache the prefix was checked when it went in: check the new positions as tokens.
    if (past >= tokens.seqLen) fail(`kv cache holds ${past} positions: the batch of ${tokens.seqLen} has no new ones`);
    if (past > 0) validateTokens(this.graph.lm!, { ...tokens, ids: tokens.ids.filter((_, i) => i % tokens.seqLen >= past), mask: tokens.mask.filter((_, i) => i % tokens.seqLen >= past), seqLen: tokens.seqLen - past });
    else this.graph.validate(tokens, 'input');
    const hooks = new Map<string, HookFn[]>();
    for (const [sel, fn] of fwdHooks) {
      for (const name of this.resolveHooks(sel)) {
        if (!hooks.has(name)) hooks.set(name, []);
        hooks.get(name)!.push(fn);
      }
    }
    const cacheNames = new Set(cache ? this.resolveHooks(cache) : []);
    checkRelpRules(rules);
    return { hooks, cacheNames, store: new Map(), posSlice, deltas: new Map(), rules: new Set(rules) };
  }

  private forward(tokens: TokenBatch, plan: ForwardPlan, extras: GraphExtras): tf.Tensor {
    const requested = new Set([...plan.hooks.keys(), ...plan.cacheNames, ...plan.deltas.keys()]);
    const run: GraphRun = { scope: (stage) => this.context(stage, plan, tokens), requested };
    return this.graph.forward(run, tokens, extras);
  }

  /** A stage's view: local names, prefixed with its hook prefix and weight namespace. */
  private context(stage: Stage, plan: ForwardPlan, tokens: TokenBatch): StageContext {
    const { hooks, cacheNames, store, deltas, posSlice, rules } = plan;
    const hp = stage.hookPrefix;
    const wp = stage.weightPrefix;
    return {
      cfg: stage.cfg,
      rules,
      transposedParam: plan.constantWeights ? (n) => this.transposedWeight(wp + n) : undefined,
      param: (n) => this.weight(wp + n),
      maybeParam: (n) => this.params.get(wp + n),
      wants: (n) => hooks.has(hp + n) || cacheNames.has(hp + n) || deltas.has(hp + n),
      hook: <T extends tf.Tensor>(local: string, x: T): T => {
        const name = hp + local;
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
        if (cacheNames.has(name)) store.set(name, tf.keep(slicePositions(y, name, posSlice)));
        const d = deltas.get(name);
        if (d) y = tf.add(y, d);
        return y as T;
      },
    };
  }

  private silentContext(): StageContext {
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

/** Batch sizes hook shapes depend on. */
export function inputDims(tokens: TokenBatch): InputDims {
  return { batch: tokens.batch, seqLen: tokens.seqLen, images: imageCount(tokens.images) };
}

function defaultCacheNames(name: string): boolean {
  return !isOptInHook(name);
}

function slicePositions(x: tf.Tensor, name: string, posSlice: PosSlice | undefined): tf.Tensor {
  // A clone (shares the data): the forward may return this very tensor (e.g. the residual with
  // stopAtLayer), and disposing that result must not dispose the cached entry.
  if (posSlice === undefined) return x.clone();
  const axis = positionAxis(name);
  const T = x.shape[axis]!;
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

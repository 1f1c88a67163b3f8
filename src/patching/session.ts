/**
 * One place that runs every patching method over the same prompt pairs, so the grids share their
 * baselines and scale: score = (M_patched − M_base) / (M_source − M_base). Denoising (default)
 * patches clean activations into the corrupted run (base = corrupt, source = clean), so 1 means
 * the site alone restores clean behaviour; noising is the reverse.
 *
 *  - activation: real patched forwards, many sites per batched forward;
 *  - atp:  (a_source − a_base) · ∂M/∂a on the base run — 2 forwards + 1 backward for every site;
 *  - relp: the same with LRP-modified gradients (rules LN, Identity, Half[, AH]).
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { padBatch } from '../hooks/token-batch.js';
import { DEFAULT_RELP_RULES, stopGradient, type RelpRule } from '../models/grad-rules.js';
import { repeatKvHeads } from '../models/components.js';
import { maskBias, type TokenBatch } from '../models/transformer.js';
import { finalRow, metricPerPrompt, type MetricKind, type MetricTargets } from './metrics.js';
import { commonLength, type PromptPair } from './pairs.js';
import { CALL_COST_TOKENS, positionGroups } from './position-groups.js';
import { componentStack, componentHook, gridShape, isPositionResolved, nest, perPromptShape, POSITION_RESOLVED_SUFFIXES, type ComponentStack } from './sites.js';
import { concatImages, repeatImages, type ImageBatch } from '../models/image-batch.js';
import type { Component, Method, PatchingGrid } from './types.js';
import type { OnnxForward, PatchedRun } from '../onnx/onnx-forward.js';
import { editHook, type DirectionEdit } from '../probing/steer.js';

export type Direction = 'denoising' | 'noising';

/**
 * Suffix patching fills each forward up to the batch budget with neighbouring positions: fewer
 * positions per chunk recompute less, but on short prompts per-run overhead dominates (measured on
 * GPT-2-small, 15 tokens: 3 positions per chunk 7.1 s, 8: 6.0 s, all 15: 5.9 s), so the budget decides.
 */

export interface SessionOptions {
  metric?: MetricKind;
  direction?: Direction;
  /** Hooks applied in every run of the session (e.g. a fixed ablation the patching happens under). */
  fwdHooks?: FwdHook[];
  /**
   * Probe edits applied in every run of the session (steering, direction ablation): forward
   * hooks on tfjs (after fwdHooks), graph inputs on onnxruntime — unlike JS hooks they keep
   * activation patching on onnx.
   */
  edits?: readonly DirectionEdit[];
  /** Upper bound on tokens per batched forward in activation patching (default 1024; bounds peak wasm memory). */
  maxBatchTokens?: number;
  /**
   * Run activation patching's patched forwards on onnxruntime (gridAsync only; no JS session
   * hooks): the patch and any probe edits are graph inputs, the rest of the pass unchanged.
   */
  onnx?: OnnxForward;
  onProgress?: (done: number, total: number) => void;
}

export interface GridOptions {
  /** RelP rules (default LN, Identity, Half). */
  rules?: readonly RelpRule[];
  /** AtP*: recompute attention softmax exactly for q/k components. */
  qkFix?: boolean;
  /** AtP*: GradDrop (magnitudes averaged over per-layer gradient cuts). */
  gradDrop?: boolean;
}

export class PatchingSession {
  readonly T: number;
  readonly metric: MetricKind;
  readonly direction: Direction;
  readonly base: TokenBatch;
  readonly source: TokenBatch;
  private readonly targets: MetricTargets;
  /** Every tfjs run's session hooks: the JS hooks, then the probe edits as hooks. */
  private readonly hooks: FwdHook[];
  private baseline: { base: number; source: number } | null = null;
  /** The base run on onnxruntime (suffix patching), on first use. */
  private baseStreams: ReturnType<OnnxForward['blockStreams']> | null = null;

  constructor(
    readonly model: HookedModel,
    readonly pairs: PromptPair[],
    private readonly opts: SessionOptions = {},
  ) {
    if (pairs.length === 0) fail('patching needs at least one prompt pair');
    this.hooks = [...(opts.fwdHooks ?? []), ...(opts.edits ?? []).map(editHook)];
    this.T = commonLength(pairs);
    const V = model.cfg.dVocab;
    pairs.forEach((p, i) => {
      for (const [k, id] of [['answer', p.answer], ['wrong', p.wrong]] as const) {
        if (!Number.isInteger(id) || id < 0 || id >= V) fail(`pair ${i + 1}: ${k} token ${id} is outside the vocabulary (0..${V - 1})`);
      }
    });
    this.metric = opts.metric ?? 'logit_diff';
    this.direction = opts.direction ?? 'denoising';
    const clean = withImages(padBatch(pairs.map((p) => p.clean)), pairs.map((p) => p.cleanImages));
    const corrupt = withImages(padBatch(pairs.map((p) => p.corrupt)), pairs.map((p) => p.corruptImages));
    [this.base, this.source] = this.direction === 'denoising' ? [corrupt, clean] : [clean, corrupt];
    this.targets = { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) };
    if (this.metric === 'kl') {
      this.targets.cleanLogProbs = tf.tidy(() => tf.logSoftmax(finalRow(model.run(clean, { finalPositionOnly: true })))) as tf.Tensor2D;
    }
  }

  /** Batch metric (mean over pairs) of a final-position forward. */
  private metricOf(tokens: TokenBatch): number {
    return tf.tidy(() =>
      tf.mean(metricPerPrompt(this.metric, finalRow(this.model.run(tokens, { finalPositionOnly: true, fwdHooks: this.hooks })), this.targets)).dataSync()[0],
    );
  }

  /** Metric on the base and source runs (LD_corrupt and LD_clean when denoising). */
  baselines(): { base: number; source: number; clean: number; corrupt: number } {
    this.baseline ??= { base: this.metricOf(this.base), source: this.metricOf(this.source) };
    const { base, source } = this.baseline;
    return this.direction === 'denoising' ? { base, source, clean: source, corrupt: base } : { base, source, clean: base, corrupt: source };
  }

  grid(component: Component, method: Method, opts: GridOptions = {}): PatchingGrid {
    const { stack, rules, variant } = this.prepare(component, method, opts);
    const { base } = this.baselines();
    let raw: number[];
    if (method === 'activation') raw = this.activationScores(stack).map((v) => v - base);
    else if (opts.gradDrop) raw = this.gradDropScores(stack, !!opts.qkFix);
    else raw = this.attributionScores(stack, rules, !!opts.qkFix);
    return this.finish(component, method, stack, rules, variant, raw, !!opts.gradDrop);
  }

  /**
   * grid(), with activation patching on onnxruntime when the session has an `onnx` runner, the
   * component is the language model's (a VLM's included) and no session hooks are set (else
   * exactly grid()).
   */
  async gridAsync(component: Component, method: Method, opts: GridOptions = {}): Promise<PatchingGrid> {
    const onnx = this.opts.onnx;
    const stack = componentStack(this.model, component);
    // With images the patched blocks still run on onnx: the base run's residual already holds them.
    if (method !== 'activation' || !onnx || stack.prefix || this.opts.fwdHooks?.length || !this.onnxEdits()) return this.grid(component, method, opts);
    const prepared = this.prepare(component, method, opts);
    const { base } = this.baselines();
    const raw = (await this.activationScoresOnnx(prepared.stack, onnx)).map((v) => v - base);
    return this.finish(component, method, prepared.stack, prepared.rules, prepared.variant, raw, false);
  }

  private prepare(component: Component, method: Method, opts: GridOptions): { stack: ComponentStack; rules: RelpRule[]; variant: string[] } {
    const stack = componentStack(this.model, component);
    if (stack.prefix && this.base.images && this.base.images.shape[0] !== this.pairs.length) {
      fail(`component '${component}': tower sites need exactly one image per prompt pair (${this.base.images.shape[0]} images for ${this.pairs.length} pairs)`);
    }
    const rules = method === 'relp' ? [...(opts.rules ?? DEFAULT_RELP_RULES)] : [];
    const variant: string[] = [];
    if (method === 'atp' && opts.qkFix) {
      if (stack.base !== 'q' && stack.base !== 'k') fail(`the AtP* QK fix applies to the q and k components, not '${component}'`);
      if (stack.prefix) fail(`the AtP* QK fix is implemented for the language model's q and k, not '${component}'`);
      variant.push('qk-fix');
    }
    if (method === 'atp' && opts.gradDrop) {
      if (stack.prefix) fail(`GradDrop is implemented for language-model components, not '${component}'`);
      variant.push('graddrop');
    }
    if (method !== 'atp' && (opts.qkFix || opts.gradDrop)) fail('QK fix and GradDrop are AtP* options (method atp)');
    const { base, source } = this.baselines();
    if (base === source) fail(`the metric is the same on clean and corrupt runs (${base}); nothing to attribute`);
    return { stack, rules, variant };
  }

  private finish(component: Component, method: Method, stack: ComponentStack, rules: RelpRule[], variant: string[], raw: number[], gradDrop: boolean): PatchingGrid {
    const { base, source, clean, corrupt } = this.baselines();
    // GradDrop scores are magnitudes, so they are scaled by |M_source − M_base|.
    const scale = 1 / (gradDrop ? Math.abs(source - base) : source - base);
    const shape = gridShape(stack, this.T);
    return {
      component,
      method,
      rules,
      ...(variant.length ? { variant } : {}),
      ld_clean: clean,
      ld_corrupt: corrupt,
      shape,
      axes: ['layer', ...stack.def.axisNames],
      scores: nest(raw.map((v) => v * scale), shape),
    };
  }

  /** Source-run activations of the component at every layer, [N, ...per-prompt shape] each. */
  private sourceActivations(stack: ComponentStack): tf.Tensor[] {
    const names = this.layers(stack).map((l) => componentHook(stack, l));
    const { logits, cache } = this.model.runWithCache(this.source, { names, finalPositionOnly: true, fwdHooks: this.hooks });
    logits.dispose();
    return names.map((n) => cache.get(n));
  }

  /**
   * The base run's residual stream entering each block of the component's stack, [N, T, d] each,
   * with the session hooks applied — before any hook on hook_resid_pre itself, which the resumed
   * run fires again: block l's input is block l−1's hook_resid_post; block 0's comes from a run
   * without hooks on blocks.0.hook_resid_pre.
   */
  private baseResidPre(stack: ComponentStack): tf.Tensor[] {
    const L = this.layers(stack).length;
    const post = Array.from({ length: L - 1 }, (_, l) => `${stack.prefix}blocks.${l}.hook_resid_post`);
    const later = post.length ? this.model.runWithCache(this.base, { names: post, finalPositionOnly: true, fwdHooks: this.hooks }) : null;
    later?.logits.dispose();
    return [this.blockZeroInput(stack.prefix), ...post.map((n) => later!.cache.get(n))];
  }

  /**
   * The base run's residual entering block 0 of a stack ('' or 'vision.'), session hooks applied
   * except those on blocks.0.hook_resid_pre itself (the block fires them when it runs): a run
   * that stops after block 0.
   */
  private blockZeroInput(prefix: string): tf.Tensor {
    const first = `${prefix}blocks.0.hook_resid_pre`;
    const { logits, cache } = this.model.runWithCache(this.base, { names: [first], ...this.model.graph.stopFor([first]), fwdHooks: this.hooks.filter(([name]) => name !== first) });
    logits.dispose();
    return cache.get(first);
  }

  private layers(stack: ComponentStack = componentStack(this.model, 'resid_pre')): number[] {
    return Array.from({ length: stack.cfg.nLayers }, (_, l) => l);
  }

  /**
   * Metric after patching each site, in grid order. Sites are packed into batched forwards: row
   * s·N + n is pair n with site s patched; a site's value is the mean over its N rows.
   */
  private activationScores(stack: ComponentStack): number[] {
    const { cfg, def } = stack;
    const { N, shape, siteDims, perLayer, total, maskShape, maskSize, sitesPerForward } = this.siteGeometry(stack);
    const src = this.sourceActivations(stack);
    // Every patched forward resumes from the base run's residual stream at the patched layer (or
    // the latest earlier layer the graph can resume at exactly, for tower blocks past its feature layer).
    const baseResid = this.baseResidPre(stack);
    const resumeStage = stack.prefix ? ('vision_tower' as const) : ('language_model' as const);
    const repeated = new Map<number, MetricTargets>();
    const out: number[] = [];
    try {
      for (let start = 0; start < total; ) {
        // Chunks stay within one layer so the whole chunk can resume at that layer.
        const layer = Math.floor(start / perLayer);
        const S = Math.min(sitesPerForward, (layer + 1) * perLayer - start);
        const values = tf.tidy(() => {
          // One mask per layer touched by this chunk; row block s patches its site.
          const masks = new Map<number, Uint8Array>();
          for (let s = 0; s < S; s++) {
            const site = start + s;
            const l = Math.floor(site / perLayer);
            if (!masks.has(l)) masks.set(l, new Uint8Array(S * N * maskSize));
            const offset = maskOffset(site % perLayer, siteDims, def.siteAxes, maskShape);
            for (let n = 0; n < N; n++) masks.get(l)![(s * N + n) * maskSize + offset] = 1;
          }
          const rows = withRepeatedImages(padBatch(Array.from({ length: S * N }, (_, r) => this.basePrompt(r % N))), this.base.images, S);
          const hooks: [string, (x: tf.Tensor) => tf.Tensor][] = [...masks].map(([l, m]) => [
            componentHook(stack, l),
            (x: tf.Tensor) => {
              const cond = tf.broadcastTo(tf.tensor(m, [S * N, ...maskShape], 'bool'), x.shape);
              const patched = tf.tile(src[l], [S, ...shape.map(() => 1)]);
              return tf.where(cond, patched, x);
            },
          ]);
          const targets = this.repeatTargets(S, repeated);
          const from = this.model.graph.resumeLayer(stack.prefix, layer);
          const residPre = tf.tile(baseResid[from], [S, 1, 1]);
          const logits = this.model.run(rows, { fwdHooks: [...this.hooks, ...hooks], finalPositionOnly: true, resume: { layer: from, residPre }, resumeStage });
          return tf.mean(metricPerPrompt(this.metric, finalRow(logits), targets).reshape([S, N]), 1);
        });
        out.push(...values.dataSync());
        values.dispose();
        start += S;
        this.opts.onProgress?.(start, total);
      }
    } finally {
      tf.dispose(src);
      tf.dispose(baseResid);
      for (const t of repeated.values()) t.cleanLogProbs?.dispose();
    }
    return out;
  }

  /** activationScores on onnxruntime: the same sites, chunks, resume points and metric. */
  private async activationScoresOnnx(stack: ComponentStack, onnx: OnnxForward): Promise<number[]> {
    const { cfg, def } = stack;
    // Sites at one position (resid_*, attn_out, mlp_out, head_out_pos): positions before it need no recomputing.
    if (isPositionResolved(def)) return this.activationScoresOnnxSuffix(stack, onnx);
    const { N, shape, siteDims, perLayer, total, maskShape, maskSize, sitesPerForward } = this.siteGeometry(stack);
    const src = hostArrays(this.sourceActivations(stack));
    const baseResid = hostArrays(this.baseResidPre(stack));
    const head = this.onnxHead();
    const edits = this.onnxEdits()!;
    const d = cfg.dModel;
    const tile = (x: Float32Array, times: number) => {
      const out = new Float32Array(x.length * times);
      for (let s = 0; s < times; s++) out.set(x, s * x.length);
      return out;
    };
    const repeated = new Map<number, MetricTargets>();
    const out: number[] = [];
    try {
      for (let start = 0; start < total; ) {
        const layer = Math.floor(start / perLayer);
        const S = Math.min(sitesPerForward, (layer + 1) * perLayer - start);
        const mask = new Float32Array(S * N * maskSize);
        for (let s = 0; s < S; s++) {
          const offset = maskOffset((start + s) % perLayer, siteDims, def.siteAxes, maskShape);
          for (let n = 0; n < N; n++) mask[(s * N + n) * maskSize + offset] = 1;
        }
        const rows = padBatch(Array.from({ length: S * N }, (_, r) => this.basePrompt(r % N)));
        const logits = await onnx.runPatched(rows, layer, { data: tile(baseResid[layer], S), shape: [S * N, this.T, d] }, {
          hook: componentHook(stack, layer),
          mask: { data: mask, shape: [S * N, ...maskShape] },
          src: { data: tile(src[layer], S), shape: [S * N, ...shape] },
        }, head.columns, edits);
        const targets = this.repeatTargets(S, repeated, head.targets);
        const values = tf.tidy(() => tf.mean(metricPerPrompt(this.metric, tf.tensor2d(logits.data, [S * N, logits.shape[2]]), targets).reshape([S, N]), 1));
        out.push(...values.dataSync());
        values.dispose();
        start += S;
        this.opts.onProgress?.(start, total);
      }
    } finally {
      for (const t of repeated.values()) t.cleanLogProbs?.dispose();
    }
    return out;
  }

  /**
   * Position-resolved sites on onnxruntime: a chunk holds the sites of a group of neighbouring
   * positions (positionGroups weighs fewer tokens against fewer calls) at every layer, and runs
   * only positions from the first of them on, with the base run's keys/values for the earlier
   * ones (unchanged by causality). The runs patched at layer ℓ join the batch at block ℓ, so a
   * group costs one session call per block.
   */
  private async activationScoresOnnxSuffix(stack: ComponentStack, onnx: OnnxForward): Promise<number[]> {
    const { cfg, def } = stack;
    const N = this.pairs.length;
    const T = this.T;
    const shape = perPromptShape(cfg, stack.base, stack.seqLen(T));
    const siteDims = def.siteAxes.map((a) => shape[a]);
    const perLayer = siteDims.reduce((a, b) => a * b, 1);
    const perPos = perLayer / T;
    const inner = shape.slice(1).reduce((a, b) => a * b, 1);
    const maskShapeFull = shape.map((dd, i) => (def.siteAxes.includes(i) ? dd : 1));
    const maskInner = maskShapeFull.slice(1).reduce((a, b) => a * b, 1);
    const { dModel: d, nKvHeads: K, dHead: dh, nLayers: L } = cfg;
    // The base run block by block through the sessions the patched runs use; the source's
    // activations from one tfjs forward (a stream session per block would cost more to build).
    const src = hostArrays(this.sourceActivations(stack));
    const base = await this.onnxBaseStreams(onnx);
    const head = this.onnxHead();
    const edits = this.onnxEdits()!;
    /** Rows [N, T, ...] → positions a..b of every row, tiled S times (site-major). */
    const cut = (x: Float32Array, per: number, a: number, b: number, S: number) => {
      const out = new Float32Array(S * N * (b - a) * per);
      for (let s2 = 0; s2 < S; s2++) for (let n = 0; n < N; n++) out.set(x.subarray((n * T + a) * per, (n * T + b) * per), ((s2 * N + n) * (b - a)) * per);
      return out;
    };
    /** Keys [N, K, dh, T] or values [N, K, T, dh] → positions < p as [S·N, K, dh, p] / [S·N, K, p, dh]. */
    const pastOf = (x: Float32Array, p: number, S: number, keys: boolean) => {
      const out = new Float32Array(S * N * K * dh * p);
      for (let n = 0; n < N; n++)
        for (let kh = 0; kh < K; kh++) {
          const r = n * K + kh;
          if (keys) for (let j = 0; j < dh; j++) out.set(x.subarray((r * dh + j) * T, (r * dh + j) * T + p), (r * dh + j) * p);
          else out.set(x.subarray(r * T * dh, (r * T + p) * dh), r * p * dh);
        }
      const one = N * K * dh * p;
      for (let s2 = 1; s2 < S; s2++) out.copyWithin(s2 * one, 0, one);
      return out;
    };
    // One call per block serves a position group at every layer (runs join at their layer), so a
    // group's fixed cost is ~L + 1 calls against L(L+1)/2 blocks of row work: per block of work,
    // 2/L of a call. Forward-only batches carry no autodiff tape: 8× the tfjs token budget.
    const budget = 8 * (this.opts.maxBatchTokens ?? 1024);
    const groups = positionGroups(T, perPos * N, budget, (2 * CALL_COST_TOKENS) / L);
    const repeated = new Map<number, MetricTargets>();
    const out = new Array<number>(L * perLayer);
    let done = 0;
    try {
      for (const { from: p0, to: p1 } of groups) {
        const S = (p1 - p0) * perPos;
        const Tn = T - p0;
        const rows = padBatch(Array.from({ length: S * N }, (_, r) => this.basePrompt(r % N)));
        const past = Array.from({ length: L }, (_, l) => ({
          k: { data: pastOf(base.keys[l].data, p0, S, true), shape: [S * N, K, dh, p0] },
          v: { data: pastOf(base.values[l].data, p0, S, false), shape: [S * N, K, p0, dh] },
        }));
        const mask = new Float32Array(S * N * Tn * maskInner);
        for (let s2 = 0; s2 < S; s2++) {
          const site = p0 * perPos + s2;
          const pos = Math.floor(site / perPos);
          const offset = maskOffset(site, siteDims, def.siteAxes, maskShapeFull) - pos * maskInner + (pos - p0) * maskInner;
          for (let n = 0; n < N; n++) mask[(s2 * N + n) * Tn * maskInner + offset] = 1;
        }
        const run = (layer: number): PatchedRun => ({
          layer,
          residPre: { data: cut(base.residPre[layer].data, d, p0, T, S), shape: [S * N, Tn, d] },
          patch: { hook: componentHook(stack, layer), mask: { data: mask, shape: [S * N, Tn, ...maskShapeFull.slice(1)] }, src: { data: cut(src[layer], inner, p0, T, S), shape: [S * N, Tn, ...shape.slice(1)] } },
        });
        // Layers in chunks that keep the merged batch within the budget.
        const chunk = Math.max(1, Math.floor(budget / (S * N * Tn)));
        for (let l0 = 0; l0 < L; l0 += chunk) {
          const layers = Array.from({ length: Math.min(chunk, L - l0) }, (_, i) => l0 + i);
          const logits = await onnx.runPatchedSuffix(rows, p0, layers.map(run), past, POSITION_RESOLVED_SUFFIXES, head.columns, edits);
          const targets = this.repeatTargets(S, repeated, head.targets);
          layers.forEach((layer, i) => {
            const values = tf.tidy(() => tf.mean(metricPerPrompt(this.metric, tf.tensor2d(logits[i].data, [S * N, logits[i].shape[2]]), targets).reshape([S, N]), 1));
            const v = values.dataSync();
            for (let s2 = 0; s2 < S; s2++) out[layer * perLayer + p0 * perPos + s2] = v[s2];
            values.dispose();
          });
          done += layers.length * S;
          this.opts.onProgress?.(done, L * perLayer);
        }
      }
    } finally {
      for (const t of repeated.values()) t.cleanLogProbs?.dispose();
    }
    return out;
  }

  /**
   * The session's probe edits inside blocks, for onnxruntime's block sessions (graph inputs);
   * edits on the embeddings apply in the tfjs run that gives block 0 its input. null when an edit
   * sits elsewhere (the final norm), which keeps the session on tfjs.
   */
  private onnxEdits(): DirectionEdit[] | null {
    const edits = this.opts.edits ?? [];
    const isEmbed = (h: string) => h === 'hook_embed' || h === 'hook_pos_embed';
    if (edits.some((e) => !isEmbed(e.hook) && !e.hook.startsWith('blocks.'))) return null;
    return edits.filter((e) => !isEmbed(e.hook));
  }

  /** The base run on onnxruntime, block by block from its embeddings (tfjs: a gather), once per session. */
  private onnxBaseStreams(onnx: OnnxForward): ReturnType<OnnxForward['blockStreams']> {
    if (!this.baseStreams) {
      // Embedding edits apply in this tfjs run; the block edits are graph inputs of the sessions.
      const embeds = this.blockZeroInput('');
      const host = { data: embeds.dataSync() as Float32Array, shape: embeds.shape };
      embeds.dispose();
      const streams = onnx.blockStreams(this.base, host, POSITION_RESOLVED_SUFFIXES, this.onnxEdits()!);
      this.baseStreams = streams;
      streams.catch(() => (this.baseStreams = null));
    }
    return this.baseStreams;
  }

  /** Sites of a component: per-prompt shape, site axes, mask layout and sites per batched forward. */
  private siteGeometry(stack: ComponentStack) {
    const { cfg, def } = stack;
    const N = this.pairs.length;
    const shape = perPromptShape(cfg, stack.base, stack.seqLen(this.T));
    const siteDims = def.siteAxes.map((a) => shape[a]);
    const perLayer = siteDims.reduce((a, b) => a * b, 1);
    const maskShape = shape.map((d, i) => (def.siteAxes.includes(i) ? d : 1));
    return {
      N,
      shape,
      siteDims,
      perLayer,
      total: cfg.nLayers * perLayer,
      maskShape,
      maskSize: maskShape.reduce((a, b) => a * b, 1),
      sitesPerForward: Math.max(1, Math.floor((this.opts.maxBatchTokens ?? 1024) / (this.T * N))),
    };
  }

  /** Targets for S copies of the pairs (site-major rows), cached per S in `cache`. */
  private repeatTargets(S: number, cache: Map<number, MetricTargets>, targets: MetricTargets = this.targets): MetricTargets {
    let t = cache.get(S);
    if (!t) {
      const rep = <T>(xs: T[]) => Array.from({ length: S }, () => xs).flat();
      t = { answer: rep(targets.answer), wrong: rep(targets.wrong) };
      if (targets.cleanLogProbs) t.cleanLogProbs = tf.keep(tf.tile(targets.cleanLogProbs, [S, 1]) as tf.Tensor2D);
      cache.set(S, t);
    }
    return t;
  }

  /**
   * What the onnx head computes: for the logit difference only the answer and wrong tokens'
   * logits (targets re-indexed into those columns), else the whole vocabulary.
   */
  private onnxHead(): { columns?: number[]; targets: MetricTargets } {
    if (this.metric !== 'logit_diff') return { targets: this.targets };
    const columns = [...new Set([...this.targets.answer, ...this.targets.wrong])];
    const at = new Map(columns.map((c, i) => [c, i]));
    return { columns, targets: { answer: this.targets.answer.map((a) => at.get(a)!), wrong: this.targets.wrong.map((w) => at.get(w)!) } };
  }

  private basePrompt(n: number): number[] {
    const T = this.T;
    return Array.from(this.base.ids.subarray(n * T, (n + 1) * T));
  }

  /**
   * Σ over pairs and non-site axes of (a_source − a_base) · ∂M/∂a, with ∂M/∂a from one backward
   * pass on the base run (plain for AtP, rule-modified for RelP). M is the batch mean, so the sum
   * over pairs is the mean attribution. `extraHooks` lets GradDrop cut gradient paths.
   */
  private attributionScores(stack: ComponentStack, rules: readonly RelpRule[], qkFix: boolean, extraHooks: FwdHook[] = []): number[] {
    if (qkFix) return this.qkFixScores(stack.base as 'q' | 'k', extraHooks);
    const names = this.layers(stack).map((l) => componentHook(stack, l));
    const src = this.sourceActivations(stack);
    const { grads, cache } = this.model.gradients(this.base, names, (logits) => this.batchMetric(logits), {
      cacheNames: names,
      rules,
      finalPositionOnly: true,
      fwdHooks: [...this.hooks, ...extraHooks],
    });
    const { def } = stack;
    try {
      return this.layers(stack).flatMap((l) => {
        const perSite = tf.tidy(() => {
          const prod = tf.mul(tf.sub(src[l], cache!.get(names[l])), grads.get(names[l])!);
          return tf.sum(prod, nonSiteAxes(prod.rank, def.siteAxes));
        });
        const values = Array.from(perSite.dataSync());
        perSite.dispose();
        return values;
      });
    } finally {
      tf.dispose(src);
      tf.dispose([...grads.values()]);
      cache?.dispose();
    }
  }

  private batchMetric(logits: tf.Tensor3D): tf.Scalar {
    return tf.mean(metricPerPrompt(this.metric, finalRow(logits), this.targets)).asScalar();
  }

  /**
   * AtP* QK fix (Kramár et al. 2024): a query or key change moves attention through a softmax,
   * which a linear estimate gets badly wrong. Recompute the patched pattern of each head exactly,
   * softmax(q'·k'ᵀ/√d + mask), and attribute Σ (pattern' − pattern) · ∂M/∂pattern.
   */
  private qkFixScores(component: 'q' | 'k', extraHooks: FwdHook[]): number[] {
    const { cfg } = this.model;
    const rope = cfg.positional === 'rope';
    const qName = (l: number) => `blocks.${l}.attn.${rope ? 'hook_rot_q' : 'hook_q'}`;
    const kName = (l: number) => `blocks.${l}.attn.${rope ? 'hook_rot_k' : 'hook_k'}`;
    const pName = (l: number) => `blocks.${l}.attn.hook_pattern`;
    const patched = component === 'q' ? qName : kName;
    const srcRun = this.model.runWithCache(this.source, { names: this.layers().map(patched), finalPositionOnly: true, fwdHooks: this.hooks });
    srcRun.logits.dispose();
    const cacheNames = this.layers().flatMap((l) => [qName(l), kName(l), pName(l)]);
    const { grads, cache } = this.model.gradients(this.base, this.layers().map(pName), (logits) => this.batchMetric(logits), {
      cacheNames,
      finalPositionOnly: true,
      fwdHooks: [...this.hooks, ...extraHooks],
    });
    const { nHeads: H, nKvHeads: K, dHead: dh } = cfg;
    const T = this.T;
    const N = this.pairs.length;
    try {
      return this.layers().flatMap((l) => {
        const perHead = tf.tidy(() => {
          const bias = maskBias(this.base, cfg.causal);
          const toHeads = (x: tf.Tensor, n: number) => tf.transpose(x, [0, 2, 1, 3]).reshape([N, n, T, dh]);
          const repeatKv = (x: tf.Tensor) => repeatKvHeads(x, H);
          const q = toHeads(cache!.get(qName(l)), H);
          const k = repeatKv(toHeads(cache!.get(kName(l)), K));
          const src = component === 'q' ? toHeads(srcRun.cache.get(qName(l)), H) : repeatKv(toHeads(srcRun.cache.get(kName(l)), K));
          const [qNew, kNew] = component === 'q' ? [src, k] : [q, src];
          const scores = tf.add(tf.mul(tf.matMul(qNew.reshape([N * H, T, dh]), kNew.reshape([N * H, T, dh]), false, true).reshape([N, H, T, T]), 1 / Math.sqrt(dh)), bias);
          const delta = tf.sub(tf.softmax(scores, -1), cache!.get(pName(l)));
          const perQueryHead = tf.sum(tf.mul(delta, grads.get(pName(l))!), [0, 2, 3]); // [H]
          // A key/value head feeds H/K query heads: its score is the sum over its group.
          return component === 'k' && K !== H ? tf.sum(perQueryHead.reshape([K, H / K]), 1) : perQueryHead;
        });
        const values = Array.from(perHead.dataSync());
        perHead.dispose();
        return values;
      });
    } finally {
      srcRun.cache.dispose();
      tf.dispose([...grads.values()]);
      cache?.dispose();
    }
  }

  /**
   * AtP* GradDrop: for each layer ℓ, AtP with the gradient through layer ℓ's attention and MLP
   * outputs cut (residual path kept); score = Σ_ℓ |AtP_ℓ| / (L − 1). Magnitudes only: it is a
   * ranking aid against cancellation, not a signed effect estimate.
   */
  private gradDropScores(stack: ComponentStack, qkFix: boolean): number[] {
    const { cfg } = this.model;
    const L = cfg.nLayers;
    let acc: number[] | null = null;
    for (let l = 0; l < L; l++) {
      const drop: FwdHook[] = ['hook_attn_out', 'hook_mlp_out'].map((s) => [`blocks.${l}.${s}`, (x: tf.Tensor) => stopGradient(x)]);
      const scores = this.attributionScores(stack, [], qkFix, drop);
      acc = acc ? acc.map((v, i) => v + Math.abs(scores[i])) : scores.map(Math.abs);
    }
    return acc!.map((v) => v / Math.max(1, L - 1));
  }

  dispose(): void {
    this.targets.cleanLogProbs?.dispose();
  }
}

/** Batch axis plus every activation axis that is not a site axis (activation axes start at 1). */
function nonSiteAxes(rank: number, siteAxes: number[]): number[] {
  return [0, ...Array.from({ length: rank - 1 }, (_, i) => i).filter((i) => !siteAxes.includes(i)).map((i) => i + 1)];
}

/** Flat offset, within one prompt's mask of shape maskShape, of site number `siteIndex`. */
function maskOffset(siteIndex: number, siteDims: number[], siteAxes: number[], maskShape: number[]): number {
  const idx = maskShape.map(() => 0);
  let rest = siteIndex;
  for (let i = siteDims.length - 1; i >= 0; i--) {
    idx[siteAxes[i]] = rest % siteDims[i];
    rest = Math.floor(rest / siteDims[i]);
  }
  let off = 0;
  for (let i = 0; i < maskShape.length; i++) off = off * maskShape[i] + idx[i];
  return off;
}

/** Tensors to host arrays; the tensors are freed. */
function hostArrays(ts: tf.Tensor[]): Float32Array[] {
  const h = ts.map((t) => t.dataSync() as Float32Array);
  tf.dispose(ts);
  return h;
}

/** A padded batch with the pairs' images (in pair order), when they have any. */
function withImages(tokens: TokenBatch, images: (ImageBatch | undefined)[]): TokenBatch {
  const given = images.filter((i): i is ImageBatch => !!i);
  if (given.length === 0) return tokens;
  if (given.length !== images.length) fail(`${images.length - given.length} of ${images.length} prompt pairs have no image where the others have one`);
  return { ...tokens, images: concatImages(given) };
}

/** S site-major copies of the base images, matching S copies of the base prompts. */
function withRepeatedImages(tokens: TokenBatch, images: ImageBatch | undefined, S: number): TokenBatch {
  return images ? { ...tokens, images: S === 1 ? images : repeatImages(images, S) } : tokens;
}

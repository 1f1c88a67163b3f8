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
import type { HookedModel } from '../hooks/hooked-model.js';
import { padBatch } from '../hooks/token-batch.js';
import { DEFAULT_RELP_RULES, type RelpRule } from '../models/grad-rules.js';
import type { TokenBatch } from '../models/transformer.js';
import { finalRow, metricPerPrompt, type MetricKind, type MetricTargets } from './metrics.js';
import { commonLength, type PromptPair } from './pairs.js';
import { COMPONENTS, componentHook, gridShape, nest, perPromptShape } from './sites.js';
import type { Component, Method, PatchingGrid } from './types.js';

export type Direction = 'denoising' | 'noising';

export interface SessionOptions {
  metric?: MetricKind;
  direction?: Direction;
  /** Upper bound on tokens per batched forward in activation patching (default 4096). */
  maxBatchTokens?: number;
  onProgress?: (done: number, total: number) => void;
}

export class PatchingSession {
  readonly T: number;
  readonly metric: MetricKind;
  readonly direction: Direction;
  readonly base: TokenBatch;
  readonly source: TokenBatch;
  private readonly targets: MetricTargets;
  private baseline: { base: number; source: number } | null = null;

  constructor(
    readonly model: HookedModel,
    readonly pairs: PromptPair[],
    private readonly opts: SessionOptions = {},
  ) {
    if (pairs.length === 0) fail('patching needs at least one prompt pair');
    this.T = commonLength(pairs);
    this.metric = opts.metric ?? 'logit_diff';
    this.direction = opts.direction ?? 'denoising';
    const clean = padBatch(pairs.map((p) => p.clean));
    const corrupt = padBatch(pairs.map((p) => p.corrupt));
    [this.base, this.source] = this.direction === 'denoising' ? [corrupt, clean] : [clean, corrupt];
    this.targets = { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) };
    if (this.metric === 'kl') {
      this.targets.cleanLogProbs = tf.tidy(() => tf.logSoftmax(finalRow(model.run(clean, { finalPositionOnly: true })))) as tf.Tensor2D;
    }
  }

  /** Batch metric (mean over pairs) of a final-position forward. */
  private metricOf(tokens: TokenBatch): number {
    return tf.tidy(() => tf.mean(metricPerPrompt(this.metric, finalRow(this.model.run(tokens, { finalPositionOnly: true })), this.targets)).dataSync()[0]);
  }

  /** Metric on the base and source runs (LD_corrupt and LD_clean when denoising). */
  baselines(): { base: number; source: number; clean: number; corrupt: number } {
    this.baseline ??= { base: this.metricOf(this.base), source: this.metricOf(this.source) };
    const { base, source } = this.baseline;
    return this.direction === 'denoising' ? { base, source, clean: source, corrupt: base } : { base, source, clean: base, corrupt: source };
  }

  grid(component: Component, method: Method, rules: readonly RelpRule[] = DEFAULT_RELP_RULES): PatchingGrid {
    if (!COMPONENTS[component]) fail(`unknown component '${component}'`);
    const { base, source, clean, corrupt } = this.baselines();
    if (base === source) fail(`the metric is the same on clean and corrupt runs (${base}); nothing to attribute`);
    const raw = method === 'activation' ? this.activationScores(component) : this.attributionScores(component, method === 'relp' ? rules : []);
    const scale = 1 / (source - base);
    const flat = raw.map((v) => (method === 'activation' ? (v - base) * scale : v * scale));
    const shape = gridShape(this.model.cfg, component, this.T);
    return {
      component,
      method,
      rules: method === 'relp' ? [...rules] : [],
      ld_clean: clean,
      ld_corrupt: corrupt,
      shape,
      axes: ['layer', ...COMPONENTS[component].axisNames],
      scores: nest(flat, shape),
    };
  }

  /** Source-run activations of the component at every layer, [N, ...per-prompt shape] each. */
  private sourceActivations(component: Component): tf.Tensor[] {
    const names = this.layers().map((l) => componentHook(this.model.cfg, component, l));
    const { logits, cache } = this.model.runWithCache(this.source, { names, finalPositionOnly: true });
    logits.dispose();
    return names.map((n) => cache.get(n));
  }

  private layers(): number[] {
    return Array.from({ length: this.model.cfg.nLayers }, (_, l) => l);
  }

  /**
   * Metric after patching each site, in grid order. Sites are packed into batched forwards: row
   * s·N + n is pair n with site s patched; a site's value is the mean over its N rows.
   */
  private activationScores(component: Component): number[] {
    const { cfg } = this.model;
    const N = this.pairs.length;
    const def = COMPONENTS[component];
    const shape = perPromptShape(cfg, component, this.T);
    const siteDims = def.siteAxes.map((a) => shape[a]);
    const perLayer = siteDims.reduce((a, b) => a * b, 1);
    const total = cfg.nLayers * perLayer;
    const maskShape = shape.map((d, i) => (def.siteAxes.includes(i) ? d : 1));
    const maskSize = maskShape.reduce((a, b) => a * b, 1);
    const sitesPerForward = Math.max(1, Math.floor((this.opts.maxBatchTokens ?? 4096) / (this.T * N)));
    const src = this.sourceActivations(component);
    const out: number[] = [];
    try {
      for (let start = 0; start < total; start += sitesPerForward) {
        const S = Math.min(sitesPerForward, total - start);
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
          const rows = padBatch(Array.from({ length: S * N }, (_, r) => this.basePrompt(r % N)));
          const hooks: [string, (x: tf.Tensor) => tf.Tensor][] = [...masks].map(([l, m]) => [
            componentHook(cfg, component, l),
            (x: tf.Tensor) => {
              const cond = tf.broadcastTo(tf.tensor(m, [S * N, ...maskShape], 'bool'), x.shape);
              const patched = tf.tile(src[l], [S, ...shape.map(() => 1)]);
              return tf.where(cond, patched, x);
            },
          ]);
          const targets = this.repeatTargets(S);
          const logits = this.model.run(rows, { fwdHooks: hooks, finalPositionOnly: true });
          return tf.mean(metricPerPrompt(this.metric, finalRow(logits), targets).reshape([S, N]), 1);
        });
        out.push(...values.dataSync());
        values.dispose();
        this.opts.onProgress?.(start + S, total);
      }
    } finally {
      tf.dispose(src);
      for (const [, t] of Object.entries(this.repeatCache)) tf.dispose(t.cleanLogProbs ?? []);
      this.repeatCache = {};
    }
    return out;
  }

  private repeatCache: Record<number, MetricTargets> = {};

  private repeatTargets(S: number): MetricTargets {
    if (!this.repeatCache[S]) {
      const rep = <T>(xs: T[]) => Array.from({ length: S }, () => xs).flat();
      const t: MetricTargets = { answer: rep(this.targets.answer), wrong: rep(this.targets.wrong) };
      if (this.targets.cleanLogProbs) t.cleanLogProbs = tf.keep(tf.tile(this.targets.cleanLogProbs, [S, 1]) as tf.Tensor2D);
      this.repeatCache[S] = t;
    }
    return this.repeatCache[S];
  }

  private basePrompt(n: number): number[] {
    const T = this.T;
    return Array.from(this.base.ids.subarray(n * T, (n + 1) * T));
  }

  /**
   * Σ over pairs and non-site axes of (a_source − a_base) · ∂M/∂a, with ∂M/∂a from one backward
   * pass on the base run (plain for AtP, rule-modified for RelP). M is the batch mean, so the sum
   * over pairs is the mean attribution.
   */
  private attributionScores(component: Component, rules: readonly RelpRule[]): number[] {
    const names = this.layers().map((l) => componentHook(this.model.cfg, component, l));
    const src = this.sourceActivations(component);
    const { grads, cache } = this.model.gradients(
      this.base,
      names,
      (logits) => tf.mean(metricPerPrompt(this.metric, finalRow(logits), this.targets)).asScalar(),
      { cacheNames: names, rules, finalPositionOnly: true },
    );
    const def = COMPONENTS[component];
    try {
      return this.layers().flatMap((l) => {
        const perSite = tf.tidy(() => {
          const prod = tf.mul(tf.sub(src[l], cache!.get(names[l])), grads.get(names[l])!);
          const sumAxes = [0, ...prod.shape.slice(1).map((_, i) => i).filter((i) => !def.siteAxes.includes(i)).map((i) => i + 1)];
          return tf.sum(prod, sumAxes);
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

  dispose(): void {
    this.targets.cleanLogProbs?.dispose();
  }
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

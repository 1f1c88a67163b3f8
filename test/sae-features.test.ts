/**
 * SAE feature analysis: the streaming accumulator against plain-JS recomputation (hand-made and
 * random activations), logit effects against W_dec·(ln_final.w)·W_U by hand on stories260K, the
 * corpus run against hook_sae_acts_post of the spliced SAE, the SQLite store (round trip,
 * user_version, WAL, refusal of newer schemas), and `hooklens sae features`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index.js';
import { saeCommand } from '../src/cli/sae.js';
import { saeFeaturesCommand } from '../src/cli/sae-features.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { loadModel } from '../src/models/load.js';
import {
  computeFeatureStats,
  computeLogitEffects,
  FeatureStatsAccumulator,
  powerOfTwoAbove,
  tokensUsed,
  vocabStrings,
  type Example,
  type FeatureRecord,
} from '../src/sae/feature-stats.js';
import { FEATURE_STORE_SCHEMA_VERSION, FeatureStore, writeFeatureStore, type FeatureRunMeta } from '../src/sae/feature-store.js';
import { makeSaeConfig, runWithSaeCache, Sae, saveSae } from '../src/sae/index.js';
import { mulberry32 } from '../src/util/random.js';
import { cliSuite, stderrLines, type CliResult } from './helpers/cli-run.js';
import { storiesGguf } from './helpers/fixtures.js';

const HOOK = 'blocks.2.hook_resid_post';

// ---------------------------------------------------------------------------------------------
// Plain-JS reference

interface Prompt {
  tokens: number[];
  /** [T][D] */
  acts: number[][];
}

function feed(acc: FeatureStatsAccumulator, prompts: Prompt[], order?: number[]): void {
  for (const i of order ?? prompts.map((_, j) => j)) {
    const p = prompts[i];
    acc.addPrompt(i, p.tokens, Float32Array.from(p.acts.flat()));
  }
}

/** Every (prompt, pos, act) of feature f with act > 0. */
function activeOf(prompts: Prompt[], f: number): { prompt: number; pos: number; act: number }[] {
  const out: { prompt: number; pos: number; act: number }[] = [];
  prompts.forEach((p, i) => p.acts.forEach((row, t) => {
    const a = Math.fround(row[f]);
    if (a > 0) out.push({ prompt: i, pos: t, act: a });
  }));
  return out;
}

function windowOf(prompts: Prompt[], f: number, prompt: number, pos: number, C: number): Example {
  const p = prompts[prompt];
  const start = Math.max(0, pos - C);
  const end = Math.min(p.tokens.length, pos + C + 1);
  return {
    prompt,
    pos,
    act: Math.fround(p.acts[pos][f]),
    start,
    tokens: p.tokens.slice(start, end),
    acts: p.acts.slice(start, end).map((r) => Math.fround(r[f])),
  };
}

function smallestPow2Above(a: number): number {
  let r = 1;
  while (r <= a) r *= 2;
  while (r / 2 > a) r /= 2;
  return r;
}

/** Counts in n equal bins over [0, R), trimmed after the max's bin. */
function refHistogram(acts: number[], n: number): { edges: number[]; counts: number[] } {
  if (acts.length === 0) return { edges: [], counts: [] };
  const max = Math.max(...acts);
  const R = smallestPow2Above(max);
  const counts = new Array(n).fill(0);
  for (const a of acts) counts[Math.min(n - 1, Math.floor((a * n) / R))]++;
  const last = Math.min(n - 1, Math.floor((max * n) / R));
  return { edges: Array.from({ length: last + 2 }, (_, i) => (i * R) / n), counts: counts.slice(0, last + 1) };
}

function pearsonRef(prompts: Prompt[], i: number, j: number): number {
  const xs: number[] = [];
  const ys: number[] = [];
  for (const p of prompts) for (const row of p.acts) {
    xs.push(Math.max(0, Math.fround(row[i])));
    ys.push(Math.max(0, Math.fround(row[j])));
  }
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let k = 0; k < n; k++) {
    sxy += (xs[k] - mx) * (ys[k] - my);
    sxx += (xs[k] - mx) ** 2;
    syy += (ys[k] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}

// ---------------------------------------------------------------------------------------------
// Hand-made case

/**
 * 4 features over 2 prompts: f1 is a copy of f0, f2 fires exactly where f0 does not (anti-
 * correlated), f3 fires once. f0 has a three-way tie at 0.5 for the last top-3 slot.
 */
const HAND: Prompt[] = [
  {
    tokens: [10, 11, 12, 13],
    acts: [
      [0.5, 0.5, 0, 0],
      [0, 0, 1.5, 0],
      [2.0, 2.0, 0, 0.25],
      [0.5, 0.5, 0, 0],
    ],
  },
  {
    tokens: [20, 21, 22],
    acts: [
      [0, 0, 3.0, 0],
      [1.0, 1.0, 0, 0],
      [0.5, 0.5, 0, 0],
    ],
  },
];

describe('FeatureStatsAccumulator on a hand-made case', () => {
  const acc = new FeatureStatsAccumulator(4, { topK: 3, context: 1, histBins: 8, quantileBands: 4, quantileExamples: 2, correlationTopN: 3 });
  feed(acc, HAND);
  const recs = acc.finalize();

  it('density, max and means match a plain-JS count', () => {
    expect(acc.nTokens).toBe(7);
    expect(acc.nPrompts).toBe(2);
    expect(acc.maxPromptTokens).toBe(4);
    const f0 = recs[0];
    expect(f0.nActive).toBe(5);
    expect(f0.density).toBe(5 / 7);
    expect(f0.maxAct).toBe(2);
    expect(f0.meanAct).toBeCloseTo(4.5 / 7, 15);
    expect(f0.meanActive).toBeCloseTo(4.5 / 5, 15);
    expect(recs[2]).toMatchObject({ nActive: 2, density: 2 / 7, maxAct: 3 });
    expect(recs[3]).toMatchObject({ nActive: 1, density: 1 / 7, maxAct: 0.25, meanActive: 0.25 });
  });

  it('top-k: highest first, ties broken by earlier prompt then position, with ±context windows', () => {
    const top = recs[0].top;
    expect(top.map((e) => [e.prompt, e.pos, e.act])).toEqual([
      [0, 2, 2],
      [1, 1, 1],
      [0, 0, 0.5],
    ]);
    expect(top[0]).toEqual({ prompt: 0, pos: 2, act: 2, start: 1, tokens: [11, 12, 13], acts: [0, 2, 0.5] });
    // Clipped at the prompt start.
    expect(top[2]).toEqual({ prompt: 0, pos: 0, act: 0.5, start: 0, tokens: [10, 11], acts: [0.5, 0] });
    expect(recs[2].top).toEqual([windowOf(HAND, 2, 1, 0, 1), windowOf(HAND, 2, 0, 1, 1)]);
  });

  it('histogram: linear bins over [0, next power of two), counts sum to active tokens', () => {
    for (let f = 0; f < 4; f++) {
      const acts = activeOf(HAND, f).map((a) => a.act);
      expect(recs[f].actHist).toEqual(refHistogram(acts, 8));
      expect(recs[f].actHist.counts.reduce((a, b) => a + b, 0)).toBe(recs[f].nActive);
    }
    // f0: max 2 → R 4, bins of 0.5: 0.5,0.5,0.5 → bin 1; 1.0 → bin 2; 2.0 → bin 4 (the last reported).
    expect(recs[0].actHist).toEqual({ edges: [0, 0.5, 1, 1.5, 2, 2.5], counts: [0, 3, 1, 0, 1] });
  });

  it('quantile bands hold every example when a band has no more than r of them', () => {
    // f0, R 4, 4 bands of width 1: [0,1) holds 0.5 ×3, [1,2) holds 1.0, [2,3) holds 2.0.
    expect(recs[0].bands).toEqual([
      { band: 2, lo: 2, hi: 3, count: 1 },
      { band: 1, lo: 1, hi: 2, count: 1 },
      { band: 0, lo: 0, hi: 1, count: 3 },
    ]);
    const q = recs[0].quantiles;
    expect(q.map((e) => [e.band, e.act])).toEqual([
      [2, 2],
      [1, 1],
      [0, 0.5],
      [0, 0.5],
    ]);
    expect(q[0]).toEqual({ band: 2, ...windowOf(HAND, 0, 0, 2, 1) });
  });

  it('correlations: a copy has Pearson 1, the complement is negative (and not listed)', () => {
    expect(acc.pearson(0, 1)).toBeCloseTo(1, 12);
    expect(acc.cosine(0, 1)).toBeCloseTo(1, 12);
    expect(acc.pearson(0, 2)).toBeCloseTo(pearsonRef(HAND, 0, 2), 12);
    expect(acc.pearson(0, 2)).toBeLessThan(-0.5);
    expect(acc.cosine(0, 2)).toBe(0);
    expect(acc.pearson(0, 3)).toBeCloseTo(pearsonRef(HAND, 0, 3), 12);
    expect(recs[0].correlations.map((c) => c.feature)).toEqual([1, 3]);
    expect(recs[0].correlations[0].pearson).toBeCloseTo(1, 12);
    expect(recs[2].correlations).toEqual([]);
    expect(acc.correlationSkipped).toBeNull();
  });

  it('rejects odd bin counts and too-short activation buffers', () => {
    expect(() => new FeatureStatsAccumulator(4, { histBins: 7 })).toThrow(/even/);
    expect(() => acc.addPrompt(5, [1, 2], new Float32Array(4))).toThrow(/needs 8 activations/);
  });

  it('skips correlations past the memory cap and says why', () => {
    const big = new FeatureStatsAccumulator(3000, { maxCorrelationBytes: 1024 });
    expect(big.correlationSkipped).toMatch(/skipped: d_sae 3000 needs 34 MiB/);
  });
});

// ---------------------------------------------------------------------------------------------
// Random case: growing ranges (many doublings), order independence, brute-force correlations

function randomPrompts(seed: number, n: number, D: number): Prompt[] {
  const rand = mulberry32(seed);
  const out: Prompt[] = [];
  for (let i = 0; i < n; i++) {
    const T = 1 + Math.floor(rand() * 12);
    const tokens = Array.from({ length: T }, () => Math.floor(rand() * 500));
    // Scales grow with the prompt index so ranges double while streaming.
    const acts = Array.from({ length: T }, () => Array.from({ length: D }, (_, f) => (rand() < 0.15 + 0.05 * (f % 4) ? rand() * (1 + f) * (1 + i / 4) : 0)));
    // f1 copies f0 on half the tokens: a strong but imperfect correlation.
    for (const row of acts) if (rand() < 0.5) row[1] = row[0];
    out.push({ tokens, acts });
  }
  return out;
}

describe('FeatureStatsAccumulator on random activations', () => {
  const D = 10;
  const prompts = randomPrompts(7, 40, D);
  const opts = { topK: 6, context: 2, histBins: 10, quantileBands: 6, quantileExamples: 3, correlationTopN: 4, seed: 3 };
  const acc = new FeatureStatsAccumulator(D, opts);
  feed(acc, prompts);
  const recs = acc.finalize();

  it('histograms, band counts, top-k and windows equal the plain-JS computation', () => {
    for (let f = 0; f < D; f++) {
      const act = activeOf(prompts, f);
      const values = act.map((a) => a.act);
      expect(recs[f].nActive).toBe(act.length);
      expect(recs[f].maxAct).toBe(Math.max(...values));
      expect(recs[f].actHist).toEqual(refHistogram(values, 10));
      const R = smallestPow2Above(Math.max(...values));
      expect(powerOfTwoAbove(Math.max(...values))).toBe(R);
      const bandCounts = new Array(6).fill(0);
      for (const a of values) bandCounts[Math.min(5, Math.floor((a * 6) / R))]++;
      expect(recs[f].bands.map((b) => [b.band, b.count])).toEqual(bandCounts.map((c, b) => [b, c]).filter(([, c]) => c > 0).reverse());
      const want = [...act].sort((a, b) => b.act - a.act || a.prompt - b.prompt || a.pos - b.pos).slice(0, 6);
      expect(recs[f].top).toEqual(want.map((a) => windowOf(prompts, f, a.prompt, a.pos, 2)));
      // Quantile samples: min(r, count) distinct real examples inside their band.
      for (const b of recs[f].bands) {
        const inBand = recs[f].quantiles.filter((q) => q.band === b.band);
        expect(inBand).toHaveLength(Math.min(3, b.count));
        expect(new Set(inBand.map((q) => `${q.prompt}:${q.pos}`)).size).toBe(inBand.length);
        for (const q of inBand) {
          expect(q.act).toBeGreaterThanOrEqual(b.lo);
          expect(q.act).toBeLessThan(b.hi);
          expect(q).toEqual({ band: b.band, ...windowOf(prompts, f, q.prompt, q.pos, 2) });
        }
      }
    }
  });

  it('correlated features are the brute-force top Pearson partners', () => {
    for (let f = 0; f < D; f++) {
      const ref = Array.from({ length: D }, (_, j) => ({ feature: j, r: j === f ? NaN : pearsonRef(prompts, f, j) }))
        .filter((x) => x.r > 0)
        .sort((a, b) => b.r - a.r || a.feature - b.feature)
        .slice(0, 4);
      expect(recs[f].correlations.map((c) => c.feature)).toEqual(ref.map((x) => x.feature));
      recs[f].correlations.forEach((c, i) => expect(c.pearson).toBeCloseTo(ref[i].r, 10));
    }
    expect(recs[0].correlations[0].feature).toBe(1);
  });

  it('the order prompts arrive in does not change counts, histograms, top-k or correlations', () => {
    const other = new FeatureStatsAccumulator(D, opts);
    feed(other, prompts, prompts.map((_, i) => prompts.length - 1 - i));
    const recs2 = other.finalize();
    for (let f = 0; f < D; f++) {
      const { quantiles: _q, correlations: c1, meanAct: m1, meanActive: ma1, ...rest1 } = recs[f];
      const { quantiles: _q2, correlations: c2, meanAct: m2, meanActive: ma2, ...rest2 } = recs2[f];
      expect(rest2).toEqual(rest1);
      expect(m2).toBeCloseTo(m1, 12);
      expect(ma2).toBeCloseTo(ma1, 12);
      expect(c2.map((c) => c.feature)).toEqual(c1.map((c) => c.feature));
    }
  });

  it('reservoirs stay uniform across range doublings', () => {
    // One feature: 40 small values, then one large value that doubles the range 3 times, merging
    // all 40 into band 0. Each of the 40 should be kept with probability 2/40.
    const trials = 1500;
    const hits = new Array(40).fill(0);
    for (let s = 0; s < trials; s++) {
      const a = new FeatureStatsAccumulator(1, { quantileBands: 4, quantileExamples: 2, histBins: 4, seed: s, correlationTopN: 0 });
      const values = Array.from({ length: 40 }, (_, i) => 0.1 + (0.85 * i) / 40);
      a.addPrompt(0, values.map((_, i) => i), Float32Array.from(values));
      a.addPrompt(1, [0], Float32Array.from([7.5]));
      const rec = a.finalize()[0];
      const band0 = rec.quantiles.filter((q) => q.band === 0);
      expect(band0).toHaveLength(2);
      for (const q of band0) hits[q.pos]++;
    }
    const expected = (trials * 2) / 40;
    for (const h of hits) {
      expect(h).toBeGreaterThan(expected * 0.5);
      expect(h).toBeLessThan(expected * 1.5);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// stories260K

let model: HookedModel;
let prompts: number[][];
let sae: Sae;
beforeAll(async () => {
  await initBackend();
  model = await loadModel(storiesGguf());
  prompts = [
    'Once upon a time, there was a little girl named Lily.',
    'The cat sat on the mat and looked at the sun.',
    'Tom had a big red ball. He liked to play with it every day.',
    'One day',
  ].map((s) => model.encode(s));
  sae = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 64, dSae: 48, hookName: HOOK }), 11);
  sae.b_enc.assign(tf.fill([48], -0.25));
});
afterAll(() => {
  sae?.dispose();
  model?.dispose();
});

describe('feature statistics on stories260K', () => {
  it('logit effects are (W_dec[f] ⊙ ln_final.w) · W_U computed by hand (and W_dec · W_U raw)', () => {
    const Wdec = sae.tensors().W_dec.data;
    const lnw = model.weight('ln_final.w').dataSync();
    const WU = model.weight('unembed.W_U').dataSync();
    const d = 64;
    const V = model.cfg.dVocab;
    for (const fold of [true, false]) {
      const r = computeLogitEffects(model, sae, { topN: 8, foldFinalNorm: fold, chunk: 5 });
      if ('reason' in r) throw new Error(r.reason);
      expect(r.logits).toHaveLength(48);
      for (const f of [0, 7, 47]) {
        const ref = new Float64Array(V);
        for (let v = 0; v < V; v++) {
          let s = 0;
          for (let k = 0; k < d; k++) s += Wdec[f * d + k] * (fold ? lnw[k] : 1) * WU[k * V + v];
          ref[v] = s;
        }
        const sorted = Array.from(ref.keys()).sort((a, b) => ref[b] - ref[a]);
        const lg = r.logits[f];
        expect(lg.pos).toHaveLength(8);
        lg.pos.forEach((e, i) => {
          expect(e.value).toBeCloseTo(ref[e.token], 4);
          expect(e.value).toBeCloseTo(ref[sorted[i]], 4);
        });
        lg.neg.forEach((e, i) => {
          expect(e.value).toBeCloseTo(ref[e.token], 4);
          expect(e.value).toBeCloseTo(ref[sorted[V - 1 - i]], 4);
        });
        expect(lg.hist.counts).toHaveLength(40);
        expect(lg.hist.counts.reduce((a, b) => a + b, 0)).toBe(V);
        expect(lg.hist.edges[0]).toBeCloseTo(ref[sorted[V - 1]], 4);
        expect(lg.hist.edges[40]).toBeCloseTo(ref[sorted[0]], 4);
      }
    }
  });

  it('a corpus run matches hook_sae_acts_post of the spliced SAE, prompt by prompt', async () => {
    const r = await computeFeatureStats(model, sae, prompts, { topK: 4, context: 3, batchTokens: 40 });
    const D = 48;
    const ref: Prompt[] = prompts.map((p) => {
      const { logits, cache } = runWithSaeCache(model, [p], sae, { names: `${HOOK}.hook_sae_acts_post` });
      const a = cache.get(`${HOOK}.hook_sae_acts_post`).dataSync();
      logits.dispose();
      cache.dispose();
      return { tokens: p, acts: Array.from({ length: p.length }, (_, t) => Array.from(a.subarray(t * D, (t + 1) * D))) };
    });
    expect(r.nTokens).toBe(prompts.reduce((s, p) => s + p.length, 0));
    expect(r.nPrompts).toBe(4);
    for (let f = 0; f < D; f++) {
      const act = activeOf(ref, f);
      expect(Math.abs(r.features[f].nActive - act.length), `feature ${f}`).toBeLessThanOrEqual(1);
      if (act.length) expect(r.features[f].maxAct).toBeCloseTo(Math.max(...act.map((a) => a.act)), 5);
      const top = r.features[f].top[0];
      if (top) {
        expect(top.tokens).toEqual(prompts[top.prompt].slice(top.start, top.pos + 4));
        expect(top.acts[top.pos - top.start]).toBe(top.act);
      }
    }
    expect(r.logitSkipped).toBeNull();
    expect(r.logitConvention).toMatch(/RMSNorm/);
    expect(r.features.every((f) => f.logits && f.logits.pos.length === 10)).toBe(true);
  });

  it('excludeBos: position 0 (BOS) counts in no statistic but stays in example windows', async () => {
    expect(prompts.every((p) => p[0] === model.cfg.bosTokenId)).toBe(true);
    const all = await computeFeatureStats(model, sae, prompts, { topK: 50, context: 3 });
    const noBos = await computeFeatureStats(model, sae, prompts, { topK: 50, context: 3, excludeBos: true });
    expect(noBos.nTokens).toBe(all.nTokens - prompts.length);
    const D = 48;
    let bosActive = 0;
    for (let f = 0; f < D; f++) {
      const fromBos = all.features[f].top.filter((e) => e.pos === 0).length;
      bosActive += fromBos;
      expect(noBos.features[f].top.some((e) => e.pos === 0)).toBe(false);
      // With topK above every count, the top lists are the complete active sets.
      expect(noBos.features[f].nActive).toBe(all.features[f].nActive - fromBos);
    }
    expect(bosActive).toBeGreaterThan(0);
  });

  it('token strings keep their leading spaces', () => {
    const v = vocabStrings(model.tokenizer, model.encode('Once upon a time'));
    expect([...v.values()]).toEqual(['<s>', ' Once', ' upon', ' a', ' time']);
  });

  it('does not leak tensors', async () => {
    await computeFeatureStats(model, sae, prompts.slice(0, 2), { logitTopN: 3 });
    const n = tf.memory().numTensors;
    await computeFeatureStats(model, sae, prompts.slice(0, 2), { logitTopN: 3 });
    expect(tf.memory().numTensors).toBe(n);
  });

  it('stops with "interrupted" when the signal is aborted', async () => {
    const c = new AbortController();
    c.abort();
    await expect(computeFeatureStats(model, sae, prompts, { signal: c.signal })).rejects.toThrow(/interrupted/);
  });
});

// ---------------------------------------------------------------------------------------------
// SQLite store

function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

function metaFor(nPrompts: number, nTokens: number): FeatureRunMeta {
  return {
    model: 'stories260K.gguf',
    sae: 'random-sae',
    hook: HOOK,
    hookLayer: 2,
    architecture: 'standard',
    dIn: 64,
    dSae: 48,
    corpus: 'inline',
    nPrompts,
    nTokens,
    maxPromptTokens: 17,
    topK: 4,
    context: 3,
    quantileBands: 10,
    quantileExamples: 5,
    histBins: 40,
    correlationTopN: 5,
    seed: 0,
    histogramConvention: 'linear',
    logitConvention: 'rms',
    correlations: 'pearson',
    createdAt: '2025-01-01T00:00:00.000Z',
  };
}

describe('feature store (SQLite)', () => {
  let records: FeatureRecord[];
  let nTokens = 0;
  beforeAll(async () => {
    const r = await computeFeatureStats(model, sae, prompts, { topK: 4, context: 3 });
    records = r.features;
    nTokens = r.nTokens;
  });

  it('round-trips every record exactly; user_version and WAL are set; no temp files remain', () => {
    const dir = tmpDir('hooklens-store-');
    const file = path.join(dir, 'f.sqlite');
    const vocab = vocabStrings(model.tokenizer, tokensUsed(records));
    const meta = metaFor(4, nTokens);
    writeFeatureStore(file, { meta, features: records, vocab });
    expect(fs.readdirSync(dir)).toEqual(['f.sqlite']);
    const store = FeatureStore.open(file);
    try {
      expect(store.schemaVersion()).toBe(FEATURE_STORE_SCHEMA_VERSION);
      expect(store.journalMode()).toBe('wal');
      expect(store.meta()).toEqual(meta);
      expect(store.featureCount()).toBe(48);
      for (const rec of records) expect(store.getFeature(rec.id)).toEqual(rec);
      expect(store.getFeature(48)).toBeNull();
      expect(store.vocab()).toEqual(vocab);
      const byDensity = store.topFeaturesBy('density', { limit: 5 });
      const want = records.filter((r) => r.nActive > 0).sort((a, b) => b.density - a.density || a.id - b.id).slice(0, 5);
      expect(byDensity.map((s) => s.id)).toEqual(want.map((r) => r.id));
      const byMax = store.topFeaturesBy('max', { limit: 3 });
      expect(byMax.map((s) => s.maxAct)).toEqual([...records].map((r) => r.maxAct).sort((a, b) => b - a).slice(0, 3));
      // Search: features whose top examples contain " ball".
      const hits = store.search(' ball');
      const expected = records.filter((r) => r.top.some((e) => e.tokens.map((t) => vocab.get(t)).join('').includes(' ball'))).map((r) => r.id);
      expect(hits.map((h) => h.feature).sort((a, b) => a - b)).toEqual(expected.sort((a, b) => a - b));
      expect(expected.length).toBeGreaterThan(0);
      expect(hits.every((h) => h.text.includes(' ball'))).toBe(true);
      expect(store.search('100%_no_such')).toEqual([]);
    } finally {
      store.close();
    }
    // Readers leave no -wal/-shm files behind.
    expect(fs.readdirSync(dir)).toEqual(['f.sqlite']);
    // Rewriting replaces the store atomically.
    writeFeatureStore(file, { meta: { ...meta, corpus: 'second' }, features: records.slice(0, 3), vocab });
    const again = FeatureStore.open(file);
    expect(again.meta().corpus).toBe('second');
    expect(again.featureCount()).toBe(3);
    again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a newer schema version and files that are not stores, in one line', () => {
    const dir = tmpDir('hooklens-store-');
    const file = path.join(dir, 'f.sqlite');
    writeFeatureStore(file, { meta: metaFor(1, 1), features: records.slice(0, 2), vocab: new Map() });
    const db = new Database(file);
    db.pragma(`user_version = ${FEATURE_STORE_SCHEMA_VERSION + 1}`);
    db.close();
    expect(() => FeatureStore.open(file)).toThrow(new RegExp(`f\\.sqlite: feature store schema v${FEATURE_STORE_SCHEMA_VERSION + 1} is newer than this hooklens supports \\(v${FEATURE_STORE_SCHEMA_VERSION}\\); upgrade hooklens$`));
    const other = path.join(dir, 'other.sqlite');
    const o = new Database(other);
    o.exec('CREATE TABLE t (x)');
    o.close();
    expect(() => FeatureStore.open(other)).toThrow(/other\.sqlite: not a hooklens feature store/);
    const text = path.join(dir, 'text.sqlite');
    fs.writeFileSync(text, 'hello, this is not a database at all, just some text that is long enough to matter');
    expect(() => FeatureStore.open(text)).toThrow(/text\.sqlite: not a hooklens feature store/);
    expect(() => FeatureStore.open(path.join(dir, 'missing.sqlite'))).toThrow(/missing\.sqlite: feature store does not exist/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a failed write leaves no file and no temp files', () => {
    const dir = tmpDir('hooklens-store-');
    const bad = { ...records[0], top: [{ ...records[0].top[0], prompt: Number.NaN as unknown as number }] };
    expect(() => writeFeatureStore(path.join(dir, 'f.sqlite'), { meta: metaFor(1, 1), features: [records[1], bad], vocab: new Map() })).toThrow(/cannot write feature store/);
    expect(fs.readdirSync(dir)).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

// ---------------------------------------------------------------------------------------------
// CLI

const { caseDir, cli } = cliSuite('hooklens-sae-features-');

function info(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 2000)}\n--- stderr ---\n${r.stderr.slice(0, 2000)}`;
}

describe.concurrent('hooklens sae features', () => {
  it('writes a store from a JSONL corpus (tokens preferred over text) and prints --json', async () => {
    const dir = caseDir('ok');
    const saeDir = path.join(dir, 'sae');
    const s = Sae.init(makeSaeConfig({ architecture: 'topk', k: 8, dIn: 64, dSae: 32, hookName: HOOK }), 4);
    saveSae(s, saeDir);
    s.dispose();
    const corpus = path.join(dir, 'corpus.jsonl');
    fs.writeFileSync(corpus, [
      JSON.stringify({ text: 'ignored because tokens are given', tokens: prompts[0] }),
      JSON.stringify({ text: 'The cat sat on the mat.' }),
      JSON.stringify('Tom had a big red ball.'),
      JSON.stringify({ tokens: prompts[3] }),
    ].join('\n') + '\n');
    const out = path.join(dir, 'f.sqlite');
    const r = await cli(['sae', 'features', '--model', storiesGguf(), '--sae', saeDir, '--prompts', corpus, '--out', out, '--top-k', '3', '--context', '2', '--max-prompts', '3', '--json']);
    expect(r.code, info(r)).toBe(0);
    const res = JSON.parse(r.stdout.trim());
    // Each prompt starts with BOS, which the CLI leaves out of the statistics by default (--include-bos keeps it).
    const nTokens = prompts[0].length + model.encode('The cat sat on the mat.').length + model.encode('Tom had a big red ball.').length - 3;
    expect(res).toMatchObject({ out, features: 32, prompts: 3, tokens: nTokens, correlations: 'pearson', logits: 'computed' });
    expect(fs.readdirSync(dir).sort()).toEqual(['corpus.jsonl', 'f.sqlite', 'sae']);
    const store = FeatureStore.open(out);
    expect(store.meta()).toMatchObject({ hook: HOOK, dSae: 32, topK: 3, context: 2, nPrompts: 3, architecture: 'topk', corpus });
    // TopK 8: every token has exactly 8 active latents.
    const total = store.summaries().reduce((sum, f) => sum + f.nActive, 0);
    expect(total).toBe(8 * nTokens);
    const f = store.topFeaturesBy('max', { limit: 1 })[0];
    expect(store.getFeature(f.id)!.top).toHaveLength(3);
    store.close();
  });

  it('bad input fails in one line and writes nothing', async () => {
    const dir = caseDir('bad');
    const corpus = path.join(dir, 'corpus.jsonl');
    fs.writeFileSync(corpus, '{"text": "fine"}\n{"tokens": [1, -2]}\n');
    const out = path.join(dir, 'f.sqlite');
    const r = await cli(['sae', 'features', '--model', storiesGguf(), '--sae', path.join(dir, 'nope'), '--prompts', corpus, '--out', out]);
    expect(r.code, info(r)).toBe(1);
    const lines = stderrLines(r.stderr);
    expect(lines, info(r)).toHaveLength(1);
    expect(lines[0]).toMatch(/corpus\.jsonl:2: "tokens" must be non-negative integers/);
    expect(fs.readdirSync(dir)).toEqual(['corpus.jsonl']);
    await expect(saeCommand.run(['features', '--model', storiesGguf(), '--sae', path.join(dir, 'nope'), '--text', 'Once', '--out', out])).rejects.toThrow(/nope: SAE directory does not exist$/);
    await expect(saeCommand.run(['features', '--model', storiesGguf(), '--text', 'Once', '--out', out])).rejects.toThrow(/^sae features: missing --sae$/);
    expect(fs.readdirSync(dir)).toEqual(['corpus.jsonl']);
    // `hooklens sae <sub> --help` prints the subcommand's usage.
    expect(saeFeaturesCommand.usage).toMatch(/hooklens sae features --model PATH --sae DIR/);
    expect(saeFeaturesCommand.usage).toMatch(/--top-k N/);
  });
});

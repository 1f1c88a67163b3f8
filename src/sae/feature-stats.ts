/**
 * Feature statistics of an SAE over a token corpus, for dashboards and the feature store.
 *
 * Prompts stream through the model in batches; at the SAE's hook the activation is encoded
 * (the same latents `{hook}.hook_sae_acts_post` holds when the SAE is spliced) and each batch is
 * folded into bounded per-feature state, then freed. Memory is O(d_sae · (k + bands·r) · window)
 * for examples plus the optional co-activation triangle, independent of corpus size:
 *
 * - density = fraction of corpus tokens with act > 0; mean_act over all tokens, mean_active over
 *   active tokens; max_act.
 * - top-k contexts: a min-heap of the k largest activations (ties: earlier prompt, then earlier
 *   position wins), each with a window of ±context tokens and the feature's activations over it.
 * - activation histogram of the active (act > 0) values: LINEAR bins of equal width R/histBins over
 *   [0, R), R = the smallest power of two above the feature's max. R only ever doubles while
 *   streaming, and doubling merges bin pairs exactly, so counts are exact and independent of batch
 *   order. Bins are reported up to the one holding the max (between histBins/2 and histBins bins).
 *   Bar heights/values mirror sae_vis / Neuronpedia `freq_hist_data_bar_heights|values`
 *   (counts, bin centres); sae_vis instead spans [min, max] in 40 bins, which needs a second pass.
 * - quantile examples (sae_vis "INTERVAL lo - hi, CONTAINS x%" groups): `quantileBands`
 *   equal-width bands over the same [0, R); per band a uniform reservoir sample (Algorithm R,
 *   seeded mulberry32) of `quantileExamples` contexts and the band's token count. When R doubles,
 *   band pairs merge and their reservoirs are merged into a uniform sample of the union
 *   (hypergeometric draw), so samples stay uniform within each band.
 * - correlated features: Pearson r over ALL corpus tokens (zeros included) from Σa, Σa², and the
 *   co-activation sums Σ a_i·a_j accumulated for every pair of features active on the same token:
 *   O(Σ_tokens L0²/2) time, and a dense float64 upper triangle of d_sae·(d_sae−1)/2 entries
 *   (d_sae 4096 → 67 MB; 16384 → 1.07 GB). Above `maxCorrelationBytes` (default 512 MiB) it is
 *   skipped and the run metadata says so. Features never active together have r ≤ 0, so the
 *   top-n positively correlated ones are always among co-active pairs. Also reported: the cosine
 *   similarity of the activation vectors (SAEDashboard's `correlated_features_l1`).
 * - logit effects (computeLogitEffects): the feature's residual-stream direction (W_dec[f]; through
 *   W_O for hook_z SAEs, W_out for mlp.hook_post) pushed through the final norm linearised at that
 *   direction — LayerNorm subtracts the direction's mean, then the norm's weight multiplies
 *   (RMSNorm: weight only); the norm's positive per-token scale and both biases are dropped — then
 *   W_U. This is what sae_vis' `W_dec @ W_U` computes on TransformerLens models loaded with the
 *   default fold_ln (norm weights folded into W_U). With foldFinalNorm false: W_dec · W_U raw.
 *
 * Activations of every supported architecture are ≥ 0; only positive values count as active.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { OnnxForward } from '../onnx/onnx-forward.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { padBatch, promptBatches } from '../hooks/token-batch.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { mulberry32 } from '../util/random.js';
import type { Sae } from './sae.js';
import { saeHookLayout, toSaeRows } from './splice.js';

export interface FeatureStatsOptions {
  /** Top-activating contexts kept per feature (default 20). */
  topK?: number;
  /** Tokens of context on each side of an example's token (default 8). */
  context?: number;
  /** Equal-width activation bands for quantile examples (default 10; even). */
  quantileBands?: number;
  /** Reservoir size per band (default 5). */
  quantileExamples?: number;
  /** Bins of the activation histogram over [0, R) (default 40; even). */
  histBins?: number;
  /** Correlated features kept per feature (default 5; 0 turns correlations off). */
  correlationTopN?: number;
  /** Memory cap for the co-activation triangle (default 512 MiB). */
  maxCorrelationBytes?: number;
  /** Seed of the reservoir sampling (default 0). */
  seed?: number;
}

export interface Example {
  prompt: number;
  /** Position of the example's token in its prompt. */
  pos: number;
  act: number;
  /** Prompt position of tokens[0]: the example's token is tokens[pos − start]. */
  start: number;
  tokens: number[];
  /** The feature's activation at each window token. */
  acts: number[];
}

export interface QuantileExample extends Example {
  band: number;
}

export interface QuantileBand {
  band: number;
  lo: number;
  hi: number;
  /** Active tokens whose activation falls in [lo, hi). */
  count: number;
}

/** counts[i] values fell in [edges[i], edges[i+1]). */
export interface Histogram {
  edges: number[];
  counts: number[];
}

export interface Correlation {
  feature: number;
  pearson: number;
  cosine: number;
}

export interface LogitEffect {
  token: number;
  value: number;
}

export interface FeatureLogits {
  pos: LogitEffect[];
  neg: LogitEffect[];
  /** Over every vocabulary entry: 40 linear bins from min to max (sae_vis logits histogram). */
  hist: Histogram;
}

export interface FeatureRecord {
  id: number;
  nActive: number;
  density: number;
  maxAct: number;
  /** Mean over all corpus tokens (zeros included). */
  meanAct: number;
  /** Mean over active tokens (0 for a dead feature). */
  meanActive: number;
  /** Highest first. */
  top: Example[];
  /** Grouped by band (highest band first), highest activation first within a band. */
  quantiles: QuantileExample[];
  /** Non-empty bands, highest first. */
  bands: QuantileBand[];
  actHist: Histogram;
  /** Highest Pearson first; only positively correlated features. */
  correlations: Correlation[];
  logits: FeatureLogits | null;
}

const DEFAULTS = {
  topK: 20,
  context: 8,
  quantileBands: 10,
  quantileExamples: 5,
  histBins: 40,
  correlationTopN: 5,
  maxCorrelationBytes: 512 * 1024 * 1024,
  seed: 0,
};

/** The smallest power of two strictly above a (a > 0). */
export function powerOfTwoAbove(a: number): number {
  let r = 2 ** Math.floor(Math.log2(a));
  while (r <= a) r *= 2;
  while (r / 2 > a) r /= 2;
  return r;
}

/** Bin of a in `n` equal bins over [0, range). */
function binOf(a: number, n: number, range: number): number {
  return Math.min(n - 1, Math.floor((a * n) / range));
}

/** Per-feature state, allocated the first time the feature fires. */
class Slot {
  range: number;
  readonly hist: Float64Array;
  // Top-k: a min-heap of slot ids (root = worst kept example); example data lives in slots.
  readonly heap: Int32Array;
  heapSize = 0;
  readonly tAct: Float64Array;
  readonly tPrompt: Int32Array;
  readonly tPos: Int32Array;
  readonly tStart: Int32Array;
  readonly tLen: Int32Array;
  readonly tTok: Int32Array;
  readonly tWin: Float32Array;
  // Quantile bands: count and a reservoir of r slots per band.
  readonly bCount: Float64Array;
  readonly bFill: Int32Array;
  readonly qAct: Float64Array;
  readonly qPrompt: Int32Array;
  readonly qPos: Int32Array;
  readonly qStart: Int32Array;
  readonly qLen: Int32Array;
  readonly qTok: Int32Array;
  readonly qWin: Float32Array;

  constructor(first: number, k: number, bands: number, r: number, bins: number, win: number) {
    this.range = powerOfTwoAbove(first);
    this.hist = new Float64Array(bins);
    this.heap = new Int32Array(k);
    this.tAct = new Float64Array(k);
    this.tPrompt = new Int32Array(k);
    this.tPos = new Int32Array(k);
    this.tStart = new Int32Array(k);
    this.tLen = new Int32Array(k);
    this.tTok = new Int32Array(k * win);
    this.tWin = new Float32Array(k * win);
    this.bCount = new Float64Array(bands);
    this.bFill = new Int32Array(bands);
    const q = bands * r;
    this.qAct = new Float64Array(q);
    this.qPrompt = new Int32Array(q);
    this.qPos = new Int32Array(q);
    this.qStart = new Int32Array(q);
    this.qLen = new Int32Array(q);
    this.qTok = new Int32Array(q * win);
    this.qWin = new Float32Array(q * win);
  }
}

/** Where the current token's window comes from (set once per token, read when an example is kept). */
interface TokenContext {
  prompt: number;
  pos: number;
  tokens: ArrayLike<number>;
  acts: Float32Array;
  rowStart: number;
  length: number;
}

/**
 * Streaming per-feature statistics. Feed prompts with addPrompt (any order; each prompt once),
 * then call finalize. Pure host-side JS: usable on activations from anywhere.
 */
export class FeatureStatsAccumulator {
  readonly dSae: number;
  readonly topK: number;
  readonly context: number;
  readonly bands: number;
  readonly reservoir: number;
  readonly histBins: number;
  readonly correlationTopN: number;
  /** Why correlations are off, or null when they are computed. */
  readonly correlationSkipped: string | null;
  nTokens = 0;
  nPrompts = 0;
  maxPromptTokens = 0;
  private readonly win: number;
  private readonly count: Float64Array;
  private readonly sum: Float64Array;
  private readonly sumSq: Float64Array;
  private readonly max: Float64Array;
  private readonly slots: (Slot | undefined)[];
  private readonly tri: Float64Array | null;
  private readonly triRow: Float64Array | null;
  private readonly activeIdx: Int32Array;
  private readonly activeVal: Float64Array;
  private readonly rand: () => number;

  constructor(dSae: number, opts: FeatureStatsOptions = {}) {
    const o = { ...DEFAULTS, ...definedOnly(opts) };
    if (!Number.isInteger(dSae) || dSae < 1) fail(`feature stats: d_sae must be a positive integer, got ${dSae}`);
    for (const key of ['topK', 'quantileExamples', 'histBins', 'quantileBands'] as const) {
      if (!Number.isInteger(o[key]) || o[key] < 1) fail(`feature stats: ${key} must be a positive integer, got ${o[key]}`);
    }
    for (const key of ['context', 'correlationTopN', 'seed'] as const) {
      if (!Number.isInteger(o[key]) || o[key] < 0) fail(`feature stats: ${key} must be a non-negative integer, got ${o[key]}`);
    }
    if (o.histBins % 2 || o.quantileBands % 2) fail(`feature stats: histBins and quantileBands must be even (bins merge in pairs), got ${o.histBins} and ${o.quantileBands}`);
    this.dSae = dSae;
    this.topK = o.topK;
    this.context = o.context;
    this.bands = o.quantileBands;
    this.reservoir = o.quantileExamples;
    this.histBins = o.histBins;
    this.correlationTopN = o.correlationTopN;
    this.win = 2 * o.context + 1;
    this.count = new Float64Array(dSae);
    this.sum = new Float64Array(dSae);
    this.sumSq = new Float64Array(dSae);
    this.max = new Float64Array(dSae);
    this.slots = new Array(dSae);
    this.activeIdx = new Int32Array(dSae);
    this.activeVal = new Float64Array(dSae);
    this.rand = mulberry32(o.seed);
    const pairs = (dSae * (dSae - 1)) / 2;
    const bytes = pairs * 8;
    if (o.correlationTopN === 0) this.correlationSkipped = 'turned off';
    else if (bytes > o.maxCorrelationBytes) {
      this.correlationSkipped = `skipped: d_sae ${dSae} needs ${(bytes / 2 ** 20).toFixed(0)} MiB for the co-activation triangle (limit ${(o.maxCorrelationBytes / 2 ** 20).toFixed(0)} MiB)`;
    } else this.correlationSkipped = null;
    if (this.correlationSkipped === null && dSae > 1) {
      this.tri = new Float64Array(pairs);
      // tri[triRow[i] + j] holds Σ a_i·a_j for i < j.
      this.triRow = new Float64Array(dSae);
      for (let i = 0; i < dSae; i++) this.triRow[i] = (i * (2 * dSae - i - 1)) / 2 - i - 1;
    } else {
      this.tri = null;
      this.triRow = null;
    }
  }

  /**
   * Fold in one prompt: `acts` holds row-major [rows, d_sae] latents; rows rowStart ..
   * rowStart + tokens.length − 1 belong to this prompt, in position order. The first `skip`
   * positions (e.g. 1 for BOS) are context only: they count in no statistic.
   */
  addPrompt(prompt: number, tokens: ArrayLike<number>, acts: Float32Array, rowStart = 0, skip = 0): void {
    const D = this.dSae;
    const T = tokens.length;
    if (acts.length < (rowStart + T) * D) fail(`feature stats: prompt ${prompt} needs ${(rowStart + T) * D} activations, got ${acts.length}`);
    const ctx: TokenContext = { prompt, pos: 0, tokens, acts, rowStart, length: T };
    const idx = this.activeIdx;
    const val = this.activeVal;
    const first = Math.min(skip, T);
    for (let t = first; t < T; t++) {
      const base = (rowStart + t) * D;
      let n = 0;
      for (let f = 0; f < D; f++) {
        const a = acts[base + f];
        if (a > 0) {
          idx[n] = f;
          val[n] = a;
          n++;
        }
      }
      ctx.pos = t;
      for (let q = 0; q < n; q++) this.observe(idx[q], val[q], ctx);
      const tri = this.tri;
      if (tri) {
        const row = this.triRow!;
        for (let q = 0; q < n; q++) {
          const off = row[idx[q]];
          const aq = val[q];
          for (let r = q + 1; r < n; r++) tri[off + idx[r]] += aq * val[r];
        }
      }
    }
    this.nTokens += T - first;
    this.nPrompts++;
    this.maxPromptTokens = Math.max(this.maxPromptTokens, T);
  }

  private observe(f: number, a: number, ctx: TokenContext): void {
    this.count[f]++;
    this.sum[f] += a;
    this.sumSq[f] += a * a;
    if (a > this.max[f]) this.max[f] = a;
    let s = this.slots[f];
    if (!s) {
      s = new Slot(a, this.topK, this.bands, this.reservoir, this.histBins, this.win);
      this.slots[f] = s;
    }
    while (a >= s.range) this.doubleRange(s);
    s.hist[binOf(a, this.histBins, s.range)]++;
    this.offerTop(s, f, a, ctx);
    this.offerBand(s, f, a, ctx);
  }

  /** Copy the window around ctx.pos (tokens and feature f's activations) into slot storage. */
  private capture(f: number, ctx: TokenContext, tok: Int32Array, win: Float32Array, slot: number): [number, number] {
    const C = this.context;
    const start = Math.max(0, ctx.pos - C);
    const end = Math.min(ctx.length, ctx.pos + C + 1);
    const off = slot * this.win;
    const D = this.dSae;
    for (let p = start; p < end; p++) {
      tok[off + p - start] = ctx.tokens[p];
      win[off + p - start] = ctx.acts[(ctx.rowStart + p) * D + f];
    }
    return [start, end - start];
  }

  /** Is slot x a worse top example than slot y (lower act; ties: later prompt, later position)? */
  private static worse(s: Slot, x: number, y: number): boolean {
    if (s.tAct[x] !== s.tAct[y]) return s.tAct[x] < s.tAct[y];
    if (s.tPrompt[x] !== s.tPrompt[y]) return s.tPrompt[x] > s.tPrompt[y];
    return s.tPos[x] > s.tPos[y];
  }

  private offerTop(s: Slot, f: number, a: number, ctx: TokenContext): void {
    const h = s.heap;
    const worse = FeatureStatsAccumulator.worse;
    if (s.heapSize < this.topK) {
      const slot = s.heapSize;
      this.writeTop(s, f, a, ctx, slot);
      let i = s.heapSize++;
      h[i] = slot;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!worse(s, h[i], h[p])) break;
        [h[i], h[p]] = [h[p], h[i]];
        i = p;
      }
      return;
    }
    // Full: replace the worst kept example (the root) if the new one beats it, then sift down.
    const root = h[0];
    const better = a > s.tAct[root] || (a === s.tAct[root] && (ctx.prompt < s.tPrompt[root] || (ctx.prompt === s.tPrompt[root] && ctx.pos < s.tPos[root])));
    if (!better) return;
    this.writeTop(s, f, a, ctx, root);
    const n = s.heapSize;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && worse(s, h[l], h[m])) m = l;
      if (r < n && worse(s, h[r], h[m])) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }

  private writeTop(s: Slot, f: number, a: number, ctx: TokenContext, slot: number): void {
    s.tAct[slot] = a;
    s.tPrompt[slot] = ctx.prompt;
    s.tPos[slot] = ctx.pos;
    [s.tStart[slot], s.tLen[slot]] = this.capture(f, ctx, s.tTok, s.tWin, slot);
  }

  private offerBand(s: Slot, f: number, a: number, ctx: TokenContext): void {
    const b = binOf(a, this.bands, s.range);
    const r = this.reservoir;
    const n = ++s.bCount[b];
    let j: number;
    if (s.bFill[b] < r) j = s.bFill[b]++;
    else {
      j = Math.floor(this.rand() * n);
      if (j >= r) return;
    }
    const slot = b * r + j;
    s.qAct[slot] = a;
    s.qPrompt[slot] = ctx.prompt;
    s.qPos[slot] = ctx.pos;
    [s.qStart[slot], s.qLen[slot]] = this.capture(f, ctx, s.qTok, s.qWin, slot);
  }

  /** Double the range: histogram bins and bands merge in pairs (reservoirs merged uniformly). */
  private doubleRange(s: Slot): void {
    const nb = this.histBins;
    for (let i = 0; i < nb / 2; i++) s.hist[i] = s.hist[2 * i] + s.hist[2 * i + 1];
    s.hist.fill(0, nb / 2);
    const B = this.bands;
    const r = this.reservoir;
    const W = this.win;
    // Merged band i gathers old bands 2i and 2i+1; staging copies keep sources intact while writing.
    const tmp = {
      act: new Float64Array(r), prompt: new Int32Array(r), pos: new Int32Array(r), start: new Int32Array(r), len: new Int32Array(r),
      tok: new Int32Array(r * W), win: new Float32Array(r * W),
    };
    for (let i = 0; i < B / 2; i++) {
      const src = [2 * i, 2 * i + 1];
      const remaining = src.map((b) => s.bCount[b]);
      const pools = src.map((b) => Array.from({ length: s.bFill[b] }, (_, j) => b * r + j));
      const total = remaining[0] + remaining[1];
      const take = Math.min(r, pools[0].length + pools[1].length);
      let filled = 0;
      for (let d = 0; d < take; d++) {
        // Pick the source band with probability ∝ its not-yet-drawn population, then a random kept item.
        let which = this.rand() * (remaining[0] + remaining[1]) < remaining[0] ? 0 : 1;
        if (pools[which].length === 0) which = 1 - which;
        const pool = pools[which];
        const k = Math.floor(this.rand() * pool.length);
        const from = pool[k];
        pool[k] = pool[pool.length - 1];
        pool.pop();
        remaining[which]--;
        tmp.act[filled] = s.qAct[from];
        tmp.prompt[filled] = s.qPrompt[from];
        tmp.pos[filled] = s.qPos[from];
        tmp.start[filled] = s.qStart[from];
        tmp.len[filled] = s.qLen[from];
        tmp.tok.set(s.qTok.subarray(from * W, from * W + W), filled * W);
        tmp.win.set(s.qWin.subarray(from * W, from * W + W), filled * W);
        filled++;
      }
      const to = i * r;
      s.qAct.set(tmp.act.subarray(0, filled), to);
      s.qPrompt.set(tmp.prompt.subarray(0, filled), to);
      s.qPos.set(tmp.pos.subarray(0, filled), to);
      s.qStart.set(tmp.start.subarray(0, filled), to);
      s.qLen.set(tmp.len.subarray(0, filled), to);
      s.qTok.set(tmp.tok.subarray(0, filled * W), to * W);
      s.qWin.set(tmp.win.subarray(0, filled * W), to * W);
      s.bCount[i] = total;
      s.bFill[i] = filled;
    }
    for (let b = B / 2; b < B; b++) {
      s.bCount[b] = 0;
      s.bFill[b] = 0;
    }
    s.range *= 2;
  }

  /** Pearson r of features i and j over every token seen (NaN when either never varies). */
  pearson(i: number, j: number): number {
    const N = this.nTokens;
    const sij = this.pairSum(i, j);
    const cov = N * sij - this.sum[i] * this.sum[j];
    const vi = N * this.sumSq[i] - this.sum[i] ** 2;
    const vj = N * this.sumSq[j] - this.sum[j] ** 2;
    if (!(vi > 0) || !(vj > 0)) return NaN;
    return cov / Math.sqrt(vi * vj);
  }

  /** Cosine similarity of the activation vectors of i and j (NaN when either is dead). */
  cosine(i: number, j: number): number {
    const d = Math.sqrt(this.sumSq[i] * this.sumSq[j]);
    return d > 0 ? this.pairSum(i, j) / d : NaN;
  }

  private pairSum(i: number, j: number): number {
    if (i === j) return this.sumSq[i];
    if (!this.tri) fail(`feature correlations were not accumulated (${this.correlationSkipped ?? 'd_sae 1'})`);
    const [a, b] = i < j ? [i, j] : [j, i];
    return this.tri[this.triRow![a] + b];
  }

  private example(tok: Int32Array, win: Float32Array, slot: number, act: number, prompt: number, pos: number, start: number, len: number): Example {
    const off = slot * this.win;
    return {
      prompt,
      pos,
      act,
      start,
      tokens: Array.from(tok.subarray(off, off + len)),
      acts: Array.from(win.subarray(off, off + len)),
    };
  }

  /** Top correlated features per feature (only co-active pairs can correlate positively). */
  private correlations(): Correlation[][] {
    const D = this.dSae;
    const out: Correlation[][] = Array.from({ length: D }, () => []);
    const n = this.correlationTopN;
    if (!this.tri || n === 0) return out;
    const N = this.nTokens;
    const tri = this.tri;
    const push = (list: Correlation[], c: Correlation) => {
      if (list.length === n && !better(c, list[n - 1])) return;
      let i = list.length === n ? n - 1 : list.length;
      if (list.length < n) list.push(c);
      while (i > 0 && better(c, list[i - 1])) {
        list[i] = list[i - 1];
        i--;
      }
      list[i] = c;
    };
    const better = (a: Correlation, b: Correlation) => a.pearson > b.pearson || (a.pearson === b.pearson && a.feature < b.feature);
    const varN = (f: number) => N * this.sumSq[f] - this.sum[f] ** 2;
    for (let i = 0; i < D; i++) {
      if (this.count[i] === 0) continue;
      const vi = varN(i);
      if (!(vi > 0)) continue;
      const off = this.triRow![i];
      for (let j = i + 1; j < D; j++) {
        const sij = tri[off + j];
        if (sij === 0) continue;
        const vj = varN(j);
        if (!(vj > 0)) continue;
        const r = (N * sij - this.sum[i] * this.sum[j]) / Math.sqrt(vi * vj);
        if (!(r > 0)) continue;
        const cos = sij / Math.sqrt(this.sumSq[i] * this.sumSq[j]);
        push(out[i], { feature: j, pearson: r, cosine: cos });
        push(out[j], { feature: i, pearson: r, cosine: cos });
      }
    }
    return out;
  }

  /** Per-feature records (logit effects are attached separately: see computeLogitEffects). */
  finalize(logits?: (FeatureLogits | null)[] | null): FeatureRecord[] {
    const N = this.nTokens;
    const corr = this.correlations();
    const out: FeatureRecord[] = [];
    for (let f = 0; f < this.dSae; f++) {
      const s = this.slots[f];
      const n = this.count[f];
      const rec: FeatureRecord = {
        id: f,
        nActive: n,
        density: N > 0 ? n / N : 0,
        maxAct: this.max[f],
        meanAct: N > 0 ? this.sum[f] / N : 0,
        meanActive: n > 0 ? this.sum[f] / n : 0,
        top: [],
        quantiles: [],
        bands: [],
        actHist: { edges: [], counts: [] },
        correlations: corr[f],
        logits: logits?.[f] ?? null,
      };
      if (s) {
        for (let i = 0; i < s.heapSize; i++) {
          const k = s.heap[i];
          rec.top.push(this.example(s.tTok, s.tWin, k, s.tAct[k], s.tPrompt[k], s.tPos[k], s.tStart[k], s.tLen[k]));
        }
        rec.top.sort(exampleOrder);
        const last = binOf(this.max[f], this.histBins, s.range);
        rec.actHist = {
          edges: Array.from({ length: last + 2 }, (_, i) => (i * s.range) / this.histBins),
          counts: Array.from(s.hist.subarray(0, last + 1)),
        };
        const edge = (b: number) => (b * s.range) / this.bands;
        for (let b = this.bands - 1; b >= 0; b--) {
          if (s.bCount[b] === 0) continue;
          rec.bands.push({ band: b, lo: edge(b), hi: edge(b + 1), count: s.bCount[b] });
          const group: QuantileExample[] = [];
          for (let j = 0; j < s.bFill[b]; j++) {
            const k = b * this.reservoir + j;
            group.push({ band: b, ...this.example(s.qTok, s.qWin, k, s.qAct[k], s.qPrompt[k], s.qPos[k], s.qStart[k], s.qLen[k]) });
          }
          group.sort(exampleOrder);
          rec.quantiles.push(...group);
        }
      }
      out.push(rec);
    }
    return out;
  }
}

function exampleOrder(a: Example, b: Example): number {
  return b.act - a.act || a.prompt - b.prompt || a.pos - b.pos;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// ---------------------------------------------------------------------------------------------
// Logit effects

export interface LogitEffectOptions {
  /** Tokens kept at each end (default 10). */
  topN?: number;
  /** Bins of the logit-effect histogram (default 40). */
  histBins?: number;
  /** Push the direction through the final norm's weight (and LN centring); default true. */
  foldFinalNorm?: boolean;
  /** Features per matMul chunk (default 64). */
  chunk?: number;
}

/** How logit effects are computed, for the run metadata. */
export function logitConvention(model: HookedModel, foldFinalNorm = true): string {
  if (!foldFinalNorm) return 'W_dec[f] · W_U (raw, no final norm)';
  return model.cfg.norm === 'layernorm'
    ? '(centre(W_dec[f]) ⊙ ln_final.w) · W_U (final LayerNorm linearised: mean removed, weight folded; scale and biases dropped)'
    : '(W_dec[f] ⊙ ln_final.w) · W_U (final RMSNorm weight folded; scale dropped)';
}

/**
 * Residual-stream direction per feature, [d_sae, d_model], or why there is none: W_dec itself for
 * hooks in the residual basis, W_dec·W_O for attn.hook_z, W_dec·W_out for mlp.hook_post.
 */
export function featureResidDirections(model: HookedModel, sae: Sae): { dirs: tf.Tensor2D } | { reason: string } {
  const layout = saeHookLayout(model, sae);
  const hook = layout.hook;
  const d = model.cfg.dModel;
  if (model.graph.stageOf(hook).name !== 'language_model') return { reason: `hook '${hook}' is not in the language model's residual stream` };
  const local = hook;
  const m = /^blocks\.(\d+)\.(.+)$/.exec(local);
  const resid = /^(hook_embed|hook_pos_embed|hook_resid_(pre|mid|post)|hook_attn_out|hook_mlp_out)$/;
  if ((!m && resid.test(local)) || (m && resid.test(m[2]))) {
    if (sae.cfg.dIn !== d) return { reason: `SAE d_in ${sae.cfg.dIn} is not d_model ${d}` };
    return { dirs: tf.clone(sae.W_dec) as tf.Tensor2D };
  }
  if (m && m[2] === 'attn.hook_z') {
    const W_O = model.weight(`blocks.${m[1]}.attn.W_O`) as tf.Tensor2D;
    if (layout.kind === 'head') {
      const dh = layout.shape[1];
      return { dirs: tf.tidy(() => tf.matMul(sae.W_dec, W_O.slice([layout.head! * dh, 0], [dh, d]))) as tf.Tensor2D };
    }
    return { dirs: tf.tidy(() => tf.matMul(sae.W_dec, W_O)) as tf.Tensor2D };
  }
  if (m && m[2] === 'mlp.hook_post') {
    const W_out = model.weight(`blocks.${m[1]}.mlp.W_out`) as tf.Tensor2D;
    return { dirs: tf.tidy(() => tf.matMul(sae.W_dec, W_out)) as tf.Tensor2D };
  }
  return { reason: `hook '${hook}' does not write to the residual stream through a known weight` };
}

/** Equal-width bins over [min, max] (max lands in the last bin), as torch.histc / sae_vis. */
export function linearHistogram(values: ArrayLike<number>, bins: number): Histogram {
  if (values.length === 0) return { edges: [], counts: [] };
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i]);
    hi = Math.max(hi, values[i]);
  }
  if (hi === lo) return { edges: [lo, hi], counts: [values.length] };
  const w = (hi - lo) / bins;
  const counts = new Array<number>(bins).fill(0);
  for (let i = 0; i < values.length; i++) counts[Math.min(bins - 1, Math.floor((values[i] - lo) / w))]++;
  const edges = Array.from({ length: bins + 1 }, (_, i) => (i === bins ? hi : lo + i * w));
  return { edges, counts };
}

/** The n largest (sign +1) or smallest (sign −1) entries of row; ties by lower token id. */
export function extremeTokens(row: ArrayLike<number>, n: number, sign: 1 | -1): LogitEffect[] {
  const out: LogitEffect[] = [];
  const beats = (v: number, t: number, e: LogitEffect) => sign * v > sign * e.value || (v === e.value && t < e.token);
  for (let t = 0; t < row.length; t++) {
    const v = row[t];
    if (out.length === n && !beats(v, t, out[n - 1])) continue;
    let i = out.length === n ? n - 1 : out.length;
    if (out.length < n) out.push({ token: t, value: v });
    while (i > 0 && beats(v, t, out[i - 1])) {
      out[i] = out[i - 1];
      i--;
    }
    out[i] = { token: t, value: v };
  }
  return out;
}

/**
 * Logit effect of each feature on every token (see the module comment for the convention):
 * top/bottom tokens and a histogram per feature, or null when the hook has no residual direction.
 */
export function computeLogitEffects(model: HookedModel, sae: Sae, opts: LogitEffectOptions = {}): { logits: FeatureLogits[] } | { reason: string } {
  const topN = opts.topN ?? 10;
  const bins = opts.histBins ?? 40;
  const chunk = opts.chunk ?? 64;
  const r = featureResidDirections(model, sae);
  if ('reason' in r) return r;
  const D = sae.cfg.dSae;
  const out: FeatureLogits[] = [];
  try {
    const dirs = tf.tidy(() => {
      let x: tf.Tensor2D = r.dirs;
      if (opts.foldFinalNorm ?? true) {
        if (model.cfg.norm === 'layernorm') x = tf.sub(x, tf.mean(x, -1, true));
        x = tf.mul(x, model.weight('ln_final.w'));
      }
      return x;
    });
    try {
      const W_U = model.weight('unembed.W_U') as tf.Tensor2D;
      for (let f0 = 0; f0 < D; f0 += chunk) {
        const c = Math.min(chunk, D - f0);
        const eff = tf.tidy(() => tf.matMul(dirs.slice([f0, 0], [c, -1]), W_U));
        const data = eff.dataSync() as Float32Array;
        eff.dispose();
        const V = W_U.shape[1];
        for (let i = 0; i < c; i++) {
          const row = data.subarray(i * V, (i + 1) * V);
          out.push({ pos: extremeTokens(row, topN, 1), neg: extremeTokens(row, topN, -1), hist: linearHistogram(row, bins) });
        }
      }
    } finally {
      dirs.dispose();
    }
  } finally {
    r.dirs.dispose();
  }
  return { logits: out };
}

// ---------------------------------------------------------------------------------------------
// Running a corpus through the model

export interface FeatureRunOptions extends FeatureStatsOptions {
  /** Read the hook's activations from onnxruntime forwards (text language models); the SAE runs on tfjs. */
  onnx?: OnnxForward;
  /** Upper bound on padded tokens per forward pass (default 512; a longer prompt runs alone). */
  batchTokens?: number;
  /** Top/bottom tokens of the logit effects (default 10; 0 skips logit effects). */
  logitTopN?: number;
  foldFinalNorm?: boolean;
  /** Checked between batches: aborting fails with 'interrupted'. */
  signal?: AbortSignal;
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
  /**
   * Leave out position 0 when it is the model's BOS token (default false). BOS activations are
   * outliers that otherwise fill every feature's top examples; SAELens' activation store drops
   * them for the same reason.
   */
  excludeBos?: boolean;
}

export interface FeatureRunResult {
  features: FeatureRecord[];
  nTokens: number;
  nPrompts: number;
  maxPromptTokens: number;
  /** Null when computed, else why not. */
  correlationSkipped: string | null;
  logitSkipped: string | null;
  logitConvention: string;
  /** The accumulator, for pairwise queries (pearson / cosine of any two features). */
  accumulator: FeatureStatsAccumulator;
}

/**
 * Feature statistics of `sae` over token prompts (prompt index = position in `prompts`). Each
 * batch's activations are folded into the accumulator and freed before the next.
 */
export async function computeFeatureStats(model: HookedModel, sae: Sae, prompts: number[][], opts: FeatureRunOptions = {}): Promise<FeatureRunResult> {
  const layout = saeHookLayout(model, sae);
  if (prompts.length === 0) fail('feature stats: no prompts given');
  prompts.forEach((p, i) => {
    if (p.length === 0) fail(`feature stats: prompt ${i + 1} has no tokens`);
  });
  const budget = opts.batchTokens ?? 512;
  const acc = new FeatureStatsAccumulator(sae.cfg.dSae, opts);
  const total = prompts.reduce((s, p) => s + p.length, 0);
  const stop = model.graph.stopFor([layout.hook]);
  const D = sae.cfg.dSae;
  let done = 0;
  for (const { start, group } of promptBatches(prompts, { maxTokens: budget })) {
    if (opts.signal?.aborted) fail('interrupted');
    const tokens = padBatch(group, 'right', 0);
    const held: tf.Tensor[] = [];
    try {
      if (opts.onnx) {
        const r = await opts.onnx.run(tokens, { hooks: [layout.hook], ...(stop.stopAtLayer !== undefined ? { stopAtLayer: stop.stopAtLayer } : {}) });
        const a = r.hooks.get(layout.hook)!;
        held.push(tf.tidy(() => toSaeRows(tf.tensor(a.data, a.shape), layout)));
      } else {
        const out = model.run(tokens, { ...stop, fwdHooks: [[layout.hook, (act) => void held.push(tf.keep(toSaeRows(act, layout)))]] });
        out.dispose();
      }
      const acts = sae.encode(held[0] as tf.Tensor2D);
      const data = acts.dataSync() as Float32Array;
      acts.dispose();
      if (data.length !== tokens.batch * tokens.seqLen * D) fail(`feature stats: SAE returned ${data.length} activations for ${tokens.batch}×${tokens.seqLen} positions`);
      const bos = model.cfg.bosTokenId ?? model.tokenizer?.bosTokenId ?? null;
      group.forEach((p, b) => acc.addPrompt(start + b, p, data, b * tokens.seqLen, opts.excludeBos && bos !== null && p[0] === bos ? 1 : 0));
    } finally {
      tf.dispose(held);
    }
    done += group.reduce((s, p) => s + p.length, 0);
    opts.onProgress?.(done, total);
    // Let signal handlers (Ctrl-C) run between batches.
    await new Promise((r) => setImmediate(r));
  }
  if (opts.signal?.aborted) fail('interrupted');
  const fold = opts.foldFinalNorm ?? true;
  const topN = opts.logitTopN ?? 10;
  let logits: FeatureLogits[] | null = null;
  let logitSkipped: string | null = null;
  if (topN === 0) logitSkipped = 'turned off';
  else {
    const r = computeLogitEffects(model, sae, { topN, foldFinalNorm: fold });
    if ('reason' in r) logitSkipped = r.reason;
    else logits = r.logits;
  }
  return {
    features: acc.finalize(logits),
    nTokens: acc.nTokens,
    nPrompts: acc.nPrompts,
    maxPromptTokens: acc.maxPromptTokens,
    correlationSkipped: acc.correlationSkipped,
    logitSkipped,
    logitConvention: logitSkipped ? 'none' : logitConvention(model, fold),
    accumulator: acc,
  };
}

// ---------------------------------------------------------------------------------------------
// Token strings

/**
 * Display strings for token ids, decoded after an anchor token so SentencePiece / BPE leading
 * spaces survive ("▁Once" → " Once"); special tokens are kept ("<s>"). Without a tokenizer: "<id>".
 */
export function vocabStrings(tokenizer: Tokenizer | null, ids: Iterable<number>): Map<number, string> {
  const out = new Map<number, string>();
  if (!tokenizer) {
    for (const id of ids) out.set(id, `<${id}>`);
    return out;
  }
  const anchor = tokenizer.encode('a', { addSpecialTokens: false }).slice(-1);
  const opts = { skipSpecialTokens: false };
  const head = anchor.length ? tokenizer.decode(anchor, opts) : '';
  for (const id of ids) {
    if (out.has(id)) continue;
    let s: string;
    if (anchor.length) {
      const full = tokenizer.decode([...anchor, id], opts);
      s = full.startsWith(head) ? full.slice(head.length) : tokenizer.decode([id], opts);
    } else s = tokenizer.decode([id], opts);
    out.set(id, s);
  }
  return out;
}

/** Every token id the records mention (examples and logit lists). */
export function tokensUsed(features: readonly FeatureRecord[]): Set<number> {
  const ids = new Set<number>();
  for (const f of features) {
    for (const e of f.top) for (const t of e.tokens) ids.add(t);
    for (const e of f.quantiles) for (const t of e.tokens) ids.add(t);
    if (f.logits) for (const l of [...f.logits.pos, ...f.logits.neg]) ids.add(l.token);
  }
  return ids;
}

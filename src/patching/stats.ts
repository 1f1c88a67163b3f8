/**
 * Agreement statistics between patching methods: how well a cheap estimate (AtP, RelP)
 * reproduces activation patching on the same component. Pure functions on number arrays.
 */
import { fail } from '../errors.js';
import type { Agreement, PatchingGrid } from './types.js';

function checkSameLength(a: readonly number[], b: readonly number[], what: string): void {
  if (a.length !== b.length) fail(`${what}: length mismatch (${a.length} vs ${b.length})`);
}

/**
 * Pearson correlation coefficient of `a` and `b`.
 *
 * Returns NaN when the correlation is undefined: fewer than two values, or either vector
 * constant (zero variance), or any value NaN. ±Infinity inputs also yield NaN.
 * Throws a HooklensError when the lengths differ.
 */
export function pearson(a: readonly number[], b: readonly number[]): number {
  checkSameLength(a, b, 'pearson');
  if (a.length < 2) return NaN;
  const { sab, saa, sbb } = centredSums(a, b);
  if (!(saa > 0) || !(sbb > 0)) return NaN;
  const r = sab / Math.sqrt(saa * sbb);
  // Guard against rounding pushing |r| marginally past 1.
  return Math.max(-1, Math.min(1, r));
}

/** Σ (a − ā)(b − b̄), Σ (a − ā)², Σ (b − b̄)² of two equal-length arrays. */
function centredSums(a: readonly number[], b: readonly number[]): { sab: number; saa: number; sbb: number } {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i]! - ma;
    const db = b[i]! - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return { sab, saa, sbb };
}

/**
 * Ranks 1..n of `values` (ascending); tied values all get the average of the ranks they span.
 * NaN values make the result meaningless; callers should not pass them.
 */
export function averageRanks(values: readonly number[]): number[] {
  const order = values.map((_, i) => i).sort((i, j) => values[i]! - values[j]! || i - j);
  const ranks = new Array<number>(values.length);
  let start = 0;
  while (start < order.length) {
    let end = start + 1;
    while (end < order.length && values[order[end]!] === values[order[start]!]) end++;
    // Positions start..end-1 (0-based) hold equal values: ranks start+1..end, average (start+1+end)/2.
    const avg = (start + 1 + end) / 2;
    for (let p = start; p < end; p++) ranks[order[p]!] = avg;
    start = end;
  }
  return ranks;
}

/**
 * Spearman rank correlation: Pearson correlation of the average ranks (ties share the mean rank).
 *
 * Returns NaN when undefined: fewer than two values, either vector constant (all ranks tied),
 * or any value NaN. Throws a HooklensError when the lengths differ.
 */
export function spearman(a: readonly number[], b: readonly number[]): number {
  checkSameLength(a, b, 'spearman');
  if (a.some(Number.isNaN) || b.some(Number.isNaN)) return NaN;
  return pearson(averageRanks(a), averageRanks(b));
}

/** Indices of the k entries of largest |value|; ties broken by lower index, NaN ranks last. */
function topKIndices(values: readonly number[], k: number): Set<number> {
  const key = (v: number): number => (Number.isNaN(v) ? -1 : Math.abs(v));
  const order = values.map((_, i) => i).sort((i, j) => key(values[j]!) - key(values[i]!) || i - j);
  return new Set(order.slice(0, k));
}

/**
 * Fraction of the reference's top-k cells (by absolute value) that are also in the estimate's
 * top-k: |top-k(estimate) ∩ top-k(reference)| / k, in [0, 1].
 *
 * Ties at the cut-off are broken by lower index, so the result is deterministic; NaN scores rank
 * below every number. `k` must be an integer in 1..length; lengths must match.
 */
export function topKOverlap(estimate: readonly number[], reference: readonly number[], k: number): number {
  checkSameLength(estimate, reference, 'topKOverlap');
  if (!Number.isInteger(k) || k < 1 || k > reference.length) {
    fail(`topKOverlap: k must be an integer in 1..${reference.length}, got ${k}`);
  }
  const est = topKIndices(estimate, k);
  let hit = 0;
  for (const i of topKIndices(reference, k)) if (est.has(i)) hit++;
  return hit / k;
}

/**
 * Relative L2 error ‖estimate − reference‖ / ‖reference‖: 0 when equal; unlike a correlation it
 * also sees wrong scale and offset. NaN when the reference is all zeros.
 */
export function relativeL2(estimate: readonly number[], reference: readonly number[]): number {
  checkSameLength(estimate, reference, 'relativeL2');
  let num = 0;
  let den = 0;
  for (let i = 0; i < reference.length; i++) {
    num += (estimate[i]! - reference[i]!) ** 2;
    den += reference[i]! ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : NaN;
}

/**
 * Least-squares slope of the estimate regressed on the reference (1 = right scale; a correlation
 * can be high with a slope far from 1). NaN when the reference is constant.
 */
export function slope(estimate: readonly number[], reference: readonly number[]): number {
  checkSameLength(estimate, reference, 'slope');
  if (reference.length < 2) return NaN;
  const { sab, sbb } = centredSums(estimate, reference);
  return sbb > 0 ? sab / sbb : NaN;
}

/** Flatten a [rows][cols] or [a][b][c] score grid row-major into one array. */
export function flattenScores(scores: number[][] | number[][][]): number[] {
  const out: number[] = [];
  const walk = (x: unknown, depth: number): void => {
    if (Array.isArray(x)) {
      for (const y of x) walk(y, depth + 1);
    } else if (typeof x === 'number') {
      out.push(x);
    } else {
      fail(`flattenScores: expected numbers in the score grid, found ${typeof x} at depth ${depth}`);
    }
  };
  walk(scores, 0);
  return out;
}

/**
 * Agreement of `estimate` (an AtP or RelP grid) with `activation` (activation patching) on the
 * same component and shape. `k` defaults to max(1, round(10% of the cells)) and is capped at the
 * number of cells. Pearson/Spearman are NaN when either grid is constant (see `pearson`).
 */
export function agreementFor(estimate: PatchingGrid, activation: PatchingGrid, k?: number): Agreement {
  if (activation.method !== 'activation') {
    fail(`agreementFor: reference grid must use method 'activation', got '${activation.method}'`);
  }
  if (estimate.method === 'activation') fail(`agreementFor: estimate grid must be 'atp' or 'relp', got 'activation'`);
  if (estimate.component !== activation.component) {
    fail(`agreementFor: component mismatch (${estimate.component} vs ${activation.component})`);
  }
  if (estimate.shape.join(',') !== activation.shape.join(',')) {
    fail(
      `agreementFor: shape mismatch for ${estimate.component} ` +
        `([${estimate.shape.join(', ')}] vs [${activation.shape.join(', ')}])`,
    );
  }
  const est = flattenScores(estimate.scores);
  const ref = flattenScores(activation.scores);
  const cells = activation.shape.reduce((p, d) => p * d, 1);
  if (est.length !== cells || ref.length !== cells) {
    fail(
      `agreementFor: ${estimate.component} scores hold ${est.length} (${estimate.method}) and ` +
        `${ref.length} (activation) values, shape [${activation.shape.join(', ')}] needs ${cells}`,
    );
  }
  if (cells === 0) fail(`agreementFor: ${estimate.component} grid is empty`);
  const kk = Math.min(cells, k ?? Math.max(1, Math.round(cells * 0.1)));
  return {
    component: estimate.component,
    method: estimate.method,
    pearson: pearson(est, ref),
    spearman: spearman(est, ref),
    relL2: relativeL2(est, ref),
    slope: slope(est, ref),
    topKOverlap: topKOverlap(est, ref, kk),
    k: kk,
  };
}

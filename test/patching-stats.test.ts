import { describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { agreementFor, averageRanks, flattenScores, pearson, spearman, topKOverlap } from '../src/patching/stats.js';
import type { PatchingGrid } from '../src/patching/types.js';

describe('pearson', () => {
  it('is ±1 for exact linear relations', () => {
    expect(pearson([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3], [3, 2, 1])).toBeCloseTo(-1, 12);
    expect(pearson([1, 2, 3], [-5, 5, 15])).toBeCloseTo(1, 12);
  });

  it('matches a hand-computed value', () => {
    // a=[1,2,3,4], b=[2,1,4,3]: means 2.5; deviations (-1.5,-.5,.5,1.5) and (-.5,-1.5,1.5,.5)
    // Σda·db = .75·4 = 3, Σda² = Σdb² = 5 → r = 3/5.
    expect(pearson([1, 2, 3, 4], [2, 1, 4, 3])).toBeCloseTo(0.6, 12);
  });

  it('is symmetric and scale/shift invariant', () => {
    const a = [0.3, -1.2, 4, 2.2, 0];
    const b = [1, 0.5, 3, 2.5, -0.7];
    expect(pearson(a, b)).toBeCloseTo(pearson(b, a), 12);
    expect(pearson(a.map((x) => 3 * x - 7), b)).toBeCloseTo(pearson(a, b), 12);
  });

  it('is NaN when a vector is constant, too short, or holds NaN', () => {
    expect(pearson([2, 2, 2], [1, 2, 3])).toBeNaN();
    expect(pearson([1, 2, 3], [0, 0, 0])).toBeNaN();
    expect(pearson([5], [7])).toBeNaN();
    expect(pearson([], [])).toBeNaN();
    expect(pearson([1, NaN, 3], [1, 2, 3])).toBeNaN();
  });

  it('fails on length mismatch', () => {
    expect(() => pearson([1, 2], [1, 2, 3])).toThrow(HooklensError);
    expect(() => pearson([1, 2], [1, 2, 3])).toThrow(/length mismatch \(2 vs 3\)/);
  });
});

describe('averageRanks', () => {
  it('gives tied values the mean of the ranks they span', () => {
    expect(averageRanks([10, 30, 20])).toEqual([1, 3, 2]);
    expect(averageRanks([1, 2, 2, 3])).toEqual([1, 2.5, 2.5, 4]);
    expect(averageRanks([5, 5, 5])).toEqual([2, 2, 2]);
    expect(averageRanks([0.5, -1, 0.5, 0.5, 9])).toEqual([3, 1, 3, 3, 5]);
  });
});

describe('spearman', () => {
  it('matches the no-ties formula 1 − 6Σd²/(n(n²−1))', () => {
    // ranks a = 1..5, ranks b = [1,3,2,5,4]; d = [0,−1,1,−1,1], Σd² = 4 → 1 − 24/120 = 0.8.
    expect(spearman([10, 20, 30, 40, 50], [1, 3, 2, 5, 4])).toBeCloseTo(0.8, 12);
  });

  it('uses average ranks for ties (hand-worked)', () => {
    // a=[1,2,2,3] → ranks [1,2.5,2.5,4]; b=[1,3,2,4] → ranks [1,3,2,4]; both mean 2.5.
    // Deviations (−1.5,0,0,1.5) and (−1.5,.5,−.5,1.5): Σ = 4.5, Σda² = 4.5, Σdb² = 5
    // → ρ = 4.5/√22.5 = √0.9.
    expect(spearman([1, 2, 2, 3], [1, 3, 2, 4])).toBeCloseTo(Math.sqrt(0.9), 12);
  });

  it('is 1 for any monotone increasing relation', () => {
    expect(spearman([1, 2, 3, 4], [1, 10, 100, 1000])).toBeCloseTo(1, 12);
    expect(spearman([1, 2, 3, 4], [4, 3, 2, -100])).toBeCloseTo(-1, 12);
  });

  it('is NaN for constant input, fails on length mismatch', () => {
    expect(spearman([1, 1, 1], [1, 2, 3])).toBeNaN();
    expect(spearman([1, 2, NaN], [1, 2, 3])).toBeNaN();
    expect(() => spearman([1], [1, 2])).toThrow(HooklensError);
  });
});

describe('topKOverlap', () => {
  const est = [0.1, -0.9, 0.5, 0.05];
  const ref = [0.2, 0.8, -0.1, 0.7];

  it('compares the top-k sets by absolute value', () => {
    // |ref| top-2 = {1, 3}; |est| top-2 = {1, 2} → 1 of 2.
    expect(topKOverlap(est, ref, 2)).toBe(0.5);
    expect(topKOverlap(est, ref, 1)).toBe(1); // both: index 1
    expect(topKOverlap(est, ref, 3)).toBeCloseTo(2 / 3, 12); // {1,2,0} vs {1,3,0}
    expect(topKOverlap(est, ref, 4)).toBe(1);
    expect(topKOverlap([1, 2, 3, 4], [4, 3, 2, 1], 2)).toBe(0);
  });

  it('uses magnitude: a large negative score counts as top', () => {
    expect(topKOverlap([0, -5, 1], [0, 3, 1], 1)).toBe(1);
  });

  it('breaks ties by lower index and ranks NaN last', () => {
    expect(topKOverlap([1, 1, 1], [0, 0, 9], 1)).toBe(0); // est top-1 = index 0
    expect(topKOverlap([1, 1, 1], [9, 0, 0], 1)).toBe(1);
    expect(topKOverlap([NaN, 0.1, 0.2], [0, 1, 2], 2)).toBe(1);
  });

  it('fails on a bad k or length mismatch', () => {
    expect(() => topKOverlap(est, ref, 0)).toThrow(HooklensError);
    expect(() => topKOverlap(est, ref, 5)).toThrow(/k must be an integer in 1\.\.4/);
    expect(() => topKOverlap(est, ref, 1.5)).toThrow(HooklensError);
    expect(() => topKOverlap([1, 2], [1, 2, 3], 1)).toThrow(/length mismatch/);
  });
});

describe('flattenScores', () => {
  it('flattens 2-D and 3-D grids row-major', () => {
    expect(flattenScores([[1, 2], [3, 4]])).toEqual([1, 2, 3, 4]);
    expect(flattenScores([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(flattenScores([])).toEqual([]);
  });

  it('fails on non-numbers', () => {
    expect(() => flattenScores([[1, 'x' as unknown as number]])).toThrow(HooklensError);
  });
});

function grid(method: PatchingGrid['method'], scores: number[][], component: PatchingGrid['component'] = 'resid_pre'): PatchingGrid {
  return {
    component,
    method,
    rules: [],
    ld_clean: 2,
    ld_corrupt: -1,
    shape: [scores.length, scores[0]!.length],
    axes: ['layer', 'pos'],
    scores,
  };
}

describe('agreementFor', () => {
  const act = grid('activation', [
    [0, 0, 0, 0, 1],
    [0, 0.1, 0.2, 0.3, 0.4],
  ]);

  it('computes all statistics with default k = max(1, round(10% of cells))', () => {
    const atp = grid('atp', [
      [0, 0, 0, 0, 2],
      [0, 0.2, 0.4, 0.6, 0.8],
    ]);
    const a = agreementFor(atp, act);
    expect(a).toMatchObject({ component: 'resid_pre', method: 'atp', k: 1, topKOverlap: 1 });
    expect(a.pearson).toBeCloseTo(1, 12);
    expect(a.spearman).toBeCloseTo(1, 12);
  });

  it('rounds k from 10% of the cells', () => {
    const big = (method: PatchingGrid['method']) =>
      grid(method, Array.from({ length: 5 }, (_, i) => Array.from({ length: 5 }, (_, j) => i * 5 + j)));
    expect(agreementFor(big('relp'), big('activation')).k).toBe(3); // round(2.5) = 3
    expect(agreementFor(big('relp'), big('activation'), 7).k).toBe(7);
    expect(agreementFor(big('relp'), big('activation'), 100).k).toBe(25);
  });

  it('reports NaN correlations for a constant estimate', () => {
    const flat = grid('atp', [
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0],
    ]);
    const a = agreementFor(flat, act);
    expect(a.pearson).toBeNaN();
    expect(a.spearman).toBeNaN();
  });

  it('fails on mismatched grids', () => {
    expect(() => agreementFor(grid('atp', [[1, 2, 3]]), act)).toThrow(/shape mismatch/);
    expect(() => agreementFor(grid('atp', [[1, 2]]), grid('atp', [[1, 2]]))).toThrow(/must use method 'activation'/);
    expect(() => agreementFor(grid('activation', [[1, 2]]), grid('activation', [[1, 2]]))).toThrow(/'atp' or 'relp'/);
    expect(() => agreementFor(grid('atp', [[1, 2]], 'mlp_out'), grid('activation', [[1, 2]]))).toThrow(
      /component mismatch/,
    );
    const lying = { ...grid('atp', [[1, 2]]), shape: [1, 3] };
    expect(() => agreementFor(lying, { ...grid('activation', [[1, 2]]), shape: [1, 3] })).toThrow(/needs 3/);
  });
});

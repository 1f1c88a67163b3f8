import { describe, expect, it } from 'vitest';
import { positionGroups } from '../src/patching/position-groups.js';

/** Cost of a split as positionGroups counts it: a fixed cost per group plus rows × tokens run. */
function cost(groups: { from: number; to: number }[], T: number, rows: number, call: number): number {
  return groups.reduce((c, g) => c + call + (g.to - g.from) * rows * (T - g.from), 0);
}

/** Every split of 0..T−1 into contiguous groups (2^(T−1) of them). */
function allSplits(T: number): { from: number; to: number }[][] {
  const out: { from: number; to: number }[][] = [];
  for (let bits = 0; bits < 1 << (T - 1); bits++) {
    const groups: { from: number; to: number }[] = [];
    let a = 0;
    for (let i = 1; i < T; i++) if (bits & (1 << (i - 1))) (groups.push({ from: a, to: i }), (a = i));
    groups.push({ from: a, to: T });
    out.push(groups);
  }
  return out;
}

describe('positionGroups (suffix patching chunks)', () => {
  it('covers every position once, in order, and is the cheapest split (brute force)', () => {
    for (const [T, rows, call] of [[1, 1, 24], [5, 1, 24], [9, 2, 10], [10, 1, 0], [10, 3, 500]] as const) {
      const groups = positionGroups(T, rows, Infinity, call);
      expect(groups[0].from).toBe(0);
      expect(groups.at(-1)!.to).toBe(T);
      for (let i = 1; i < groups.length; i++) expect(groups[i].from).toBe(groups[i - 1].to);
      const best = Math.min(...allSplits(T).map((s) => cost(s, T, rows, call)));
      expect(cost(groups, T, rows, call)).toBe(best);
    }
  });

  it('the extremes: no call cost gives one position a group, a huge one a single group', () => {
    expect(positionGroups(6, 1, Infinity, 0)).toHaveLength(6);
    expect(positionGroups(6, 1, Infinity, 1e9)).toEqual([{ from: 0, to: 6 }]);
  });

  it('keeps a group within the token budget unless one position alone exceeds it', () => {
    const groups = positionGroups(15, 4, 100, 1e6);
    for (const g of groups) expect((g.to - g.from) * 4 * (15 - g.from) <= 100 || g.to - g.from === 1).toBe(true);
    expect(groups[0]).toEqual({ from: 0, to: 1 }); // 4 × 15 rows alone: 60
  });
});

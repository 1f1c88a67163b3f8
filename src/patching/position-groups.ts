/**
 * How suffix patching splits a layer's positions into forwards. A forward that patches positions
 * a..b−1 runs every row from position a on (the earlier positions are the base run's), so small
 * groups save work — the rows of position p carry T − p tokens — while each forward also costs a
 * fixed amount (one session call per block, small matrices). The split minimises
 *   Σ_groups  CALL_COST_TOKENS + rows · (T − a)
 * exactly, by dynamic programming over the group boundaries.
 */

/**
 * A forward's fixed cost in token-rows of block work. Measured on the GPT-2-small grid
 * (bench/patching.ts, 15 positions, 2 threads): one position per forward, 15 calls of 120
 * token-rows in all, against one forward of 225 — which puts a call near 11 token-rows; larger
 * forwards also multiply faster, so the model rounds that up.
 */
export const CALL_COST_TOKENS = 24;

/** Contiguous groups [from, to) covering 0..T−1; `rowsPerPosition` rows each, at most `maxTokens` token-rows a group when it can. */
export function positionGroups(T: number, rowsPerPosition: number, maxTokens = Infinity, callCost = CALL_COST_TOKENS): { from: number; to: number }[] {
  // best[a] = the cheapest split of positions a..T−1; next[a] = where its first group ends.
  const best = new Float64Array(T + 1);
  const next = new Int32Array(T + 1);
  for (let a = T - 1; a >= 0; a--) {
    best[a] = Infinity;
    for (let b = a + 1; b <= T; b++) {
      const tokens = (b - a) * rowsPerPosition * (T - a);
      if (tokens > maxTokens && b > a + 1) break;
      const cost = callCost + tokens + best[b];
      if (cost < best[a]) {
        best[a] = cost;
        next[a] = b;
      }
    }
  }
  const groups: { from: number; to: number }[] = [];
  for (let a = 0; a < T; a = next[a]) groups.push({ from: a, to: next[a] });
  return groups;
}

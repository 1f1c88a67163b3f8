/**
 * Circuit extraction from node scores (heads, and MLP layers when scored): top-n, threshold, or
 * greedy — add nodes in score order until mean-ablation faithfulness reaches a target — and
 * conversion to a CircuitGraph.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { PromptPair } from '../patching/pairs.js';
import { isMlp, nodeId, type HeadScore, type NodeRef, type NodeScore } from './common.js';
import { ablationValues, complement, evaluateAblations, type AblationOptions } from './faithfulness.js';
import { headNode, makeGraph, mlpNode, type CircuitEdge, type CircuitGraph, type CircuitNode } from './graph.js';

/** How scores rank heads: by |score|, most positive first, or most negative first. */
export type RankBy = 'abs' | 'positive' | 'negative';

/** A [L][H] grid of head scores, or a list of scored heads and MLPs. */
export type NodeScores = readonly (readonly number[])[] | readonly NodeScore[];

/** [L][H] grid → list of {layer, head, score}. */
export function gridToHeadScores(grid: readonly (readonly number[])[]): HeadScore[] {
  return grid.flatMap((row, layer) => row.map((score, head) => ({ layer, head, score })));
}

function asList(scores: NodeScores): NodeScore[] {
  if (scores.length === 0) return [];
  return Array.isArray(scores[0]) ? gridToHeadScores(scores as number[][]) : [...(scores as NodeScore[])];
}

/** Forward order inside a layer: heads by index, then the MLP. */
const slot = (n: NodeRef): number => (isMlp(n) ? Number.MAX_SAFE_INTEGER : n.head);

function rankKey(by: RankBy): (s: number) => number {
  if (by === 'abs') return Math.abs;
  if (by === 'positive') return (s) => s;
  if (by === 'negative') return (s) => -s;
  fail(`circuit extraction: rank by abs, positive or negative, got '${String(by)}'`);
}

/** Nodes sorted by score (NaN scores dropped); ties in forward order. */
export function rankHeads(scores: NodeScores, by: RankBy = 'abs'): NodeScore[] {
  const key = rankKey(by);
  return asList(scores)
    .filter((s) => !Number.isNaN(s.score))
    .sort((a, b) => key(b.score) - key(a.score) || a.layer - b.layer || slot(a) - slot(b));
}

export function topNHeads(scores: NodeScores, n: number, by: RankBy = 'abs'): NodeScore[] {
  if (!Number.isInteger(n) || n < 0) fail(`circuit extraction: n must be a non-negative integer, got ${n}`);
  return rankHeads(scores, by).slice(0, n);
}

/** Nodes whose ranking key (|s|, s or −s) is at least `threshold`. */
export function headsAboveThreshold(scores: NodeScores, threshold: number, by: RankBy = 'abs'): NodeScore[] {
  const key = rankKey(by);
  return rankHeads(scores, by).filter((s) => key(s.score) >= threshold);
}

export interface GreedyOptions extends AblationOptions {
  /** Faithfulness (LD_circuit / LD_full) to reach (default 0.8). */
  target?: number;
  by?: RankBy;
  /** Stop after this many heads (default: all). */
  maxHeads?: number;
  /** Circuit sizes evaluated per round of batched forwards (default 8). */
  sizesPerRound?: number;
}

export interface GreedyResult {
  /** The circuit's nodes (heads and MLPs) in the order they were added. */
  heads: NodeScore[];
  /** Faithfulness of the returned circuit. */
  fraction: number;
  reached: boolean;
  ldFull: number;
  ldAblated: number;
  /** Faithfulness after each size evaluated (size 0 = everything ablated). */
  curve: { size: number; ld: number; fraction: number }[];
}

/**
 * Add heads in score order until faithfulness ≥ target; returns the smallest such prefix (or the
 * largest evaluated one when the target is never reached).
 */
export function greedyCircuit(model: HookedModel, pairs: PromptPair[], scores: NodeScores, opts: GreedyOptions = {}): GreedyResult {
  const target = opts.target ?? 0.8;
  return greedyFromCurve(ablationCurve(model, pairs, scores, { ...opts, stopAt: target }), target);
}

/** The greedy circuit read off an ablation curve: the first prefix that reaches `target`. */
export function greedyFromCurve(curve: AblationCurve, target: number): GreedyResult {
  const hit = curve.points.findIndex((p) => p.fraction >= target);
  const points = hit >= 0 ? curve.points.slice(0, hit + 1) : curve.points;
  const last = points[points.length - 1];
  return { heads: curve.order.slice(0, last.size), fraction: last.fraction, reached: hit >= 0, ldFull: curve.ldFull, ldAblated: curve.points[0].ld, curve: points };
}

export interface AblationCurve {
  /** Nodes in the order they are kept (score order). */
  order: NodeScore[];
  ldFull: number;
  /** Faithfulness keeping the first `size` nodes (everything else mean-ablated), size 0..n. */
  points: { size: number; ld: number; fraction: number }[];
  /** Steps where keeping one more node lowered faithfulness: that node works against the answer once the nodes before it are kept. */
  drops: { size: number; node: NodeScore; before: number; after: number }[];
}

/**
 * Faithfulness for every prefix of the score order, from nothing kept to everything kept (or
 * `maxHeads`) — the curve behind a greedy circuit, including where it is not monotone. With
 * `stopAt`, evaluation stops after the round in which a prefix reaches that faithfulness.
 */
export function ablationCurve(model: HookedModel, pairs: PromptPair[], scores: NodeScores, opts: AblationOptions & { by?: RankBy; sizesPerRound?: number; maxHeads?: number; stopAt?: number } = {}): AblationCurve {
  const order = rankHeads(scores, opts.by ?? 'abs');
  const maxHeads = Math.min(order.length, opts.maxHeads ?? order.length);
  const per = Math.max(1, opts.sizesPerRound ?? 8);
  const values = ablationValues(model, pairs, opts);
  try {
    const [ldFull] = evaluateAblations(model, pairs, [[]], values, opts);
    const points: AblationCurve['points'] = [];
    for (let start = 0; start <= maxHeads; start += per) {
      const sizes = Array.from({ length: Math.min(per, maxHeads + 1 - start) }, (_, i) => start + i);
      const lds = evaluateAblations(model, pairs, sizes.map((k) => complement(model, order.slice(0, k), opts)), values, opts);
      sizes.forEach((size, i) => points.push({ size, ld: lds[i], fraction: lds[i] / ldFull }));
      if (opts.stopAt !== undefined && points.some((p) => p.fraction >= opts.stopAt!)) break;
    }
    const drops = points.slice(1).flatMap((p, i) => (p.fraction < points[i].fraction ? [{ size: p.size, node: order[p.size - 1], before: points[i].fraction, after: p.fraction }] : []));
    return { order, ldFull, points, drops };
  } finally {
    values.dispose();
  }
}

/** A circuit graph whose nodes are the given heads and MLPs (with scores and roles when given). */
export function circuitGraph(
  heads: readonly (NodeRef & { score?: number })[],
  opts: { roles?: readonly (NodeRef & { role: string })[]; edges?: readonly CircuitEdge[]; meta?: Record<string, unknown>; nLayers?: number; nHeads?: number } = {},
): CircuitGraph {
  const roleOf = new Map<string, string[]>();
  for (const r of opts.roles ?? []) {
    const id = nodeId(r);
    roleOf.set(id, [...(roleOf.get(id) ?? []), r.role]);
  }
  const seen = new Set<string>();
  const nodes: CircuitNode[] = [];
  for (const h of heads) {
    const id = nodeId(h);
    if (seen.has(id)) continue;
    seen.add(id);
    const roles = roleOf.get(id);
    const extra = { ...(h.score !== undefined ? { score: h.score } : {}), ...(roles ? { role: roles.join('+') } : {}) };
    nodes.push(isMlp(h) ? mlpNode(h.layer, extra) : headNode(h.layer, h.head, extra));
  }
  const meta: Record<string, unknown> = { ...(opts.meta ?? {}) };
  if (opts.nLayers !== undefined) meta.nLayers = opts.nLayers;
  if (opts.nHeads !== undefined) meta.nHeads = opts.nHeads;
  return makeGraph(nodes, opts.edges ?? [], meta);
}

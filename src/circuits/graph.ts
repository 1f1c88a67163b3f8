/**
 * Circuit graphs: nodes are attention heads `a{l}.h{h}` (plus optional MLPs `m{l}`, `input` and
 * `logits`), edges carry a signed weight and the receiver input they enter (q / k / v of a head,
 * or `resid` for MLPs and logits). Export to JSON (stable key order, round-trips) and to a layered
 * SVG drawing.
 *
 * The SVG is written by hand: vega / vega-lite (used for the patching heatmaps) have no DAG or
 * layered-graph layout, and a circuit needs one — layers as rows from bottom (input) to top
 * (logits), heads as boxes at their head index, edges as lines whose width is ∝ |weight| and whose
 * colour gives the sign.
 */
import { fail } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { headId, mlpId } from './common.js';

export type NodeKind = 'head' | 'mlp' | 'input' | 'logits';
export type EdgeKind = 'q' | 'k' | 'v' | 'resid';

export interface CircuitNode {
  /** 'a{l}.h{h}', 'm{l}', 'input' or 'logits'. */
  id: string;
  kind: NodeKind;
  layer?: number;
  head?: number;
  /** Node score (attribution, path-patching effect, …), when known. */
  score?: number;
  /** Role label (e.g. 'name_mover'), when known. */
  role?: string;
}

export interface CircuitEdge {
  from: string;
  to: string;
  weight: number;
  kind: EdgeKind;
}

export interface CircuitGraph {
  nodes: CircuitNode[];
  edges: CircuitEdge[];
  /** Free-form metadata (model, method, nLayers, nHeads, …); must be JSON-serialisable. */
  meta: Record<string, unknown>;
}

export const INPUT_ID = 'input';
export const LOGITS_ID = 'logits';
export const EDGE_KINDS: readonly EdgeKind[] = ['q', 'k', 'v', 'resid'];

/** Parse a node id into its kind and coordinates; fails on anything else. */
export function parseNodeId(id: string): Omit<CircuitNode, 'score' | 'role'> {
  if (id === INPUT_ID) return { id, kind: 'input' };
  if (id === LOGITS_ID) return { id, kind: 'logits' };
  let m = /^a(\d+)\.h(\d+)$/.exec(id);
  if (m) return { id, kind: 'head', layer: Number(m[1]), head: Number(m[2]) };
  m = /^m(\d+)$/.exec(id);
  if (m) return { id, kind: 'mlp', layer: Number(m[1]) };
  fail(`circuit graph: bad node id '${id}' (expected a{layer}.h{head}, m{layer}, input or logits)`);
}

export function headNode(layer: number, head: number, extra: { score?: number; role?: string } = {}): CircuitNode {
  return { id: headId(layer, head), kind: 'head', layer, head, ...extra };
}

export function mlpNode(layer: number, extra: { score?: number; role?: string } = {}): CircuitNode {
  return { id: mlpId(layer), kind: 'mlp', layer, ...extra };
}

/** Position of a node in forward order: input < layer 0 heads < m0 < layer 1 heads < … < logits. */
function nodeOrder(n: { kind: NodeKind; layer?: number; head?: number }): [number, number] {
  switch (n.kind) {
    case 'input':
      return [-1, 0];
    case 'logits':
      return [Number.MAX_SAFE_INTEGER, 0];
    case 'head':
      return [2 * n.layer!, n.head!];
    case 'mlp':
      return [2 * n.layer! + 1, 0];
  }
}

function compareNodes(a: CircuitNode, b: CircuitNode): number {
  const [a0, a1] = nodeOrder(a);
  const [b0, b1] = nodeOrder(b);
  return a0 - b0 || a1 - b1;
}

/**
 * Build a graph: checks ids, fills kind/layer/head from the ids, adds nodes that edges mention
 * but `nodes` lacks, rejects duplicate nodes/edges and non-finite weights. Nodes come out in
 * forward order, edges sorted by (from, to, kind).
 */
export function makeGraph(nodes: readonly (CircuitNode | string)[], edges: readonly CircuitEdge[] = [], meta: Record<string, unknown> = {}): CircuitGraph {
  const byId = new Map<string, CircuitNode>();
  for (const n of nodes) {
    const given = typeof n === 'string' ? { id: n } : n;
    const parsed = parseNodeId(given.id);
    if (typeof n !== 'string') {
      if (n.kind !== parsed.kind || n.layer !== parsed.layer || n.head !== parsed.head) {
        fail(`circuit graph: node '${n.id}' says kind ${n.kind}, layer ${n.layer}, head ${n.head}, which its id contradicts`);
      }
    }
    if (byId.has(parsed.id)) fail(`circuit graph: node '${parsed.id}' appears twice`);
    const node: CircuitNode = { ...parsed };
    if (typeof n !== 'string' && n.score !== undefined) node.score = n.score;
    if (typeof n !== 'string' && n.role !== undefined) node.role = n.role;
    byId.set(parsed.id, node);
  }
  const seen = new Set<string>();
  const outEdges: CircuitEdge[] = [];
  for (const e of edges) {
    if (!EDGE_KINDS.includes(e.kind)) fail(`circuit graph: edge ${e.from} → ${e.to} has kind '${e.kind}' (expected q, k, v or resid)`);
    if (!Number.isFinite(e.weight)) fail(`circuit graph: edge ${e.from} → ${e.to} has weight ${e.weight}`);
    for (const id of [e.from, e.to]) if (!byId.has(id)) byId.set(id, parseNodeId(id));
    const to = byId.get(e.to)!;
    if ((e.kind === 'q' || e.kind === 'k' || e.kind === 'v') && to.kind !== 'head') fail(`circuit graph: edge ${e.from} → ${e.to} is a ${e.kind} edge but its receiver is not a head`);
    const key = `${e.from}|${e.to}|${e.kind}`;
    if (seen.has(key)) fail(`circuit graph: edge ${e.from} → ${e.to} (${e.kind}) appears twice`);
    seen.add(key);
    outEdges.push({ from: e.from, to: e.to, weight: e.weight, kind: e.kind });
  }
  const sorted = [...byId.values()].sort(compareNodes);
  const rank = new Map(sorted.map((n, i) => [n.id, i]));
  outEdges.sort((a, b) => rank.get(a.from)! - rank.get(b.from)! || rank.get(a.to)! - rank.get(b.to)! || EDGE_KINDS.indexOf(a.kind) - EDGE_KINDS.indexOf(b.kind));
  return { nodes: sorted, edges: outEdges, meta: { ...meta } };
}

// ---------------------------------------------------------------------------------------------
// JSON

/** Recursively sort object keys so the JSON text does not depend on insertion order. */
function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as Record<string, unknown>).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = canonical(x);
    }
    return out;
  }
  if (typeof v === 'number' && !Number.isFinite(v)) return null;
  return v;
}

/**
 * JSON text with a stable layout: top-level keys nodes, edges, meta; node keys id, kind, layer,
 * head, score, role (absent ones omitted); edge keys from, to, kind, weight; meta keys sorted.
 */
export function graphToJson(g: CircuitGraph, indent = 2): string {
  const graph = makeGraph(g.nodes, g.edges, g.meta);
  const nodes = graph.nodes.map((n) => {
    const o: Record<string, unknown> = { id: n.id, kind: n.kind };
    if (n.layer !== undefined) o.layer = n.layer;
    if (n.head !== undefined) o.head = n.head;
    if (n.score !== undefined) o.score = Number.isFinite(n.score) ? n.score : null;
    if (n.role !== undefined) o.role = n.role;
    return o;
  });
  const edges = graph.edges.map((e) => ({ from: e.from, to: e.to, kind: e.kind, weight: e.weight }));
  return JSON.stringify({ nodes, edges, meta: canonical(graph.meta) }, null, indent) + '\n';
}

export function graphFromJson(text: string): CircuitGraph {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    fail(`circuit graph: not JSON (${(e as Error).message})`);
  }
  const obj = (o ?? {}) as Record<string, unknown>;
  if (!Array.isArray(obj.nodes) || !Array.isArray(obj.edges)) fail('circuit graph: JSON needs "nodes" and "edges" arrays');
  const nodes = (obj.nodes as Record<string, unknown>[]).map((n) => {
    if (typeof n?.id !== 'string') fail('circuit graph: every node needs a string "id"');
    const node: CircuitNode = { ...parseNodeId(n.id) };
    if (n.kind !== undefined && n.kind !== node.kind) fail(`circuit graph: node '${n.id}' has kind '${String(n.kind)}', its id says '${node.kind}'`);
    if (typeof n.score === 'number') node.score = n.score;
    else if (n.score === null) node.score = NaN;
    if (typeof n.role === 'string') node.role = n.role;
    return node;
  });
  const edges = (obj.edges as Record<string, unknown>[]).map((e) => {
    if (typeof e?.from !== 'string' || typeof e.to !== 'string' || typeof e.weight !== 'number' || typeof e.kind !== 'string') {
      fail('circuit graph: every edge needs string "from", "to", "kind" and a number "weight"');
    }
    return { from: e.from, to: e.to, weight: e.weight, kind: e.kind as EdgeKind };
  });
  const meta = obj.meta && typeof obj.meta === 'object' ? (obj.meta as Record<string, unknown>) : {};
  return makeGraph(nodes, edges, meta);
}

export function writeGraphJson(file: string, g: CircuitGraph): void {
  writeFileAtomic(file, graphToJson(g));
}

// ---------------------------------------------------------------------------------------------
// SVG

export interface SvgOptions {
  /** Box size and gaps in px. */
  boxWidth?: number;
  boxHeight?: number;
  colGap?: number;
  rowGap?: number;
  /** Widest edge stroke (px), for the largest |weight|; others scale linearly (min 0.5). */
  maxStroke?: number;
  title?: string;
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function fmt(x: number): string {
  return Number.isFinite(x) ? String(Math.round(x * 100) / 100) : 'n/a';
}

function fmtW(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? x.toExponential(3) : String(Math.round(x * 1e4) / 1e4);
}

const NODE_FILL: Record<NodeKind, string> = { head: '#f4f1e8', mlp: '#e8eef4', input: '#eeeeee', logits: '#eeeeee' };
const POS = '#2166ac';
const NEG = '#b2182b';

/**
 * Layered drawing: one row per layer (layer 0 at the bottom, above the `input` row; `logits` on
 * top). Heads sit in the column of their head index (nHeads from meta.nHeads or the largest head
 * seen), the layer's MLP to the right of its heads. Edges are cubic curves from the top of the
 * sender to the bottom of the receiver; q/k/v edges enter the receiver at its left / middle /
 * right third. Stroke width ∝ |weight|, blue = positive, red = negative. Every node is one
 * `<g class="node" data-id=…>` and every edge one `<path class="edge" …>`.
 */
export function graphToSvg(g0: CircuitGraph, opts: SvgOptions = {}): string {
  const g = makeGraph(g0.nodes, g0.edges, g0.meta);
  const bw = opts.boxWidth ?? 56;
  const bh = opts.boxHeight ?? 26;
  const cg = opts.colGap ?? 14;
  const rg = opts.rowGap ?? 56;
  const maxStroke = opts.maxStroke ?? 6;
  const metaLayers = typeof g.meta.nLayers === 'number' ? g.meta.nLayers : 0;
  const metaHeads = typeof g.meta.nHeads === 'number' ? g.meta.nHeads : 0;
  const layers = Math.max(metaLayers, ...g.nodes.map((n) => (n.layer ?? -1) + 1), 1);
  const heads = Math.max(metaHeads, ...g.nodes.map((n) => (n.head ?? -1) + 1), 1);
  const hasMlp = g.nodes.some((n) => n.kind === 'mlp');
  const cols = heads + (hasMlp ? 1 : 0);
  const left = 64;
  const top = opts.title ? 40 : 16;
  const width = left + cols * (bw + cg) + 16;
  // Rows from the top: logits, layer L-1, …, layer 0, input.
  const rows = layers + 2;
  const height = top + rows * (bh + rg) - rg + 16;
  const rowY = (n: CircuitNode): number => {
    const r = n.kind === 'logits' ? 0 : n.kind === 'input' ? rows - 1 : 1 + (layers - 1 - n.layer!);
    return top + r * (bh + rg);
  };
  const colX = (n: CircuitNode): number => {
    if (n.kind === 'head') return left + n.head! * (bw + cg);
    if (n.kind === 'mlp') return left + heads * (bw + cg);
    // input and logits span the middle of the head columns.
    return left + ((heads - 1) * (bw + cg)) / 2;
  };
  const pos = new Map(g.nodes.map((n) => [n.id, { x: colX(n), y: rowY(n), node: n }]));
  const maxW = Math.max(0, ...g.edges.map((e) => Math.abs(e.weight)));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  if (opts.title) out.push(`<text x="${left}" y="22" font-size="14" font-weight="bold">${xmlEscape(opts.title)}</text>`);
  // Row labels.
  const label = (y: number, text: string) => out.push(`<text class="row-label" x="8" y="${y + bh / 2 + 4}" fill="#666">${xmlEscape(text)}</text>`);
  label(top, 'logits');
  for (let l = layers - 1; l >= 0; l--) label(top + (1 + (layers - 1 - l)) * (bh + rg), `L${l}`);
  label(top + (rows - 1) * (bh + rg), 'input');
  // Edges first so boxes draw over their ends.
  const inlet: Record<EdgeKind, number> = { q: 1 / 6, k: 3 / 6, v: 5 / 6, resid: 1 / 2 };
  for (const e of g.edges) {
    const a = pos.get(e.from)!;
    const b = pos.get(e.to)!;
    const x1 = a.x + bw / 2;
    const y1 = a.y;
    const x2 = b.x + bw * inlet[e.kind];
    const y2 = b.y + bh;
    const sw = maxW > 0 ? Math.max(0.5, (maxStroke * Math.abs(e.weight)) / maxW) : 0.5;
    const colour = e.weight >= 0 ? POS : NEG;
    let d: string;
    if (y1 > y2) {
      const dy = Math.max(20, (y1 - y2) / 2);
      d = `M${fmt(x1)},${fmt(y1)} C${fmt(x1)},${fmt(y1 - dy)} ${fmt(x2)},${fmt(y2 + dy)} ${fmt(x2)},${fmt(y2)}`;
    } else {
      // Same row (a head into its own layer's MLP): loop over the top.
      const up = a.y - 24;
      d = `M${fmt(x1)},${fmt(y1)} C${fmt(x1)},${fmt(up)} ${fmt(x2)},${fmt(up)} ${fmt(b.x + bw * inlet[e.kind])},${fmt(b.y)}`;
    }
    const tip = `${e.from} → ${e.to} (${e.kind}): ${fmtW(e.weight)}`;
    out.push(
      `<path class="edge" data-from="${xmlEscape(e.from)}" data-to="${xmlEscape(e.to)}" data-kind="${e.kind}" d="${d}" fill="none" stroke="${colour}" stroke-width="${fmt(sw)}" stroke-opacity="0.7"><title>${xmlEscape(tip)}</title></path>`,
    );
  }
  for (const n of g.nodes) {
    const { x, y } = pos.get(n.id)!;
    const text = n.id;
    const w = bw;
    const tipParts = [n.id];
    if (n.role) tipParts.push(n.role);
    if (n.score !== undefined) tipParts.push(`score ${fmtW(n.score)}`);
    const stroke = n.role ? '#8a5a00' : '#555';
    out.push(
      `<g class="node" data-id="${xmlEscape(n.id)}" data-kind="${n.kind}"><title>${xmlEscape(tipParts.join(' · '))}</title>` +
        `<rect x="${fmt(x)}" y="${fmt(y)}" width="${w}" height="${bh}" rx="4" fill="${NODE_FILL[n.kind]}" stroke="${stroke}" stroke-width="${n.role ? 2 : 1}"/>` +
        `<text x="${fmt(x + w / 2)}" y="${fmt(y + bh / 2 + 4)}" text-anchor="middle">${xmlEscape(text)}</text></g>`,
    );
  }
  // Legend.
  out.push(`<text class="legend" x="8" y="${height - 4}" fill="#666">edge width ∝ |weight|; <tspan fill="${POS}">+</tspan> / <tspan fill="${NEG}">−</tspan>; q·k·v enter left·mid·right</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export function writeGraphSvg(file: string, g: CircuitGraph, opts: SvgOptions = {}): void {
  writeFileAtomic(file, graphToSvg(g, opts));
}

import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  graphFromJson,
  graphToJson,
  graphToSvg,
  headNode,
  makeGraph,
  mlpNode,
  parseNodeId,
  writeGraphJson,
  writeGraphSvg,
  type CircuitGraph,
} from '../src/circuits/graph.js';

function sample(): CircuitGraph {
  return makeGraph(
    [headNode(2, 1, { score: -0.4, role: 'name_mover' }), headNode(0, 3, { score: 0.12 }), mlpNode(1), 'input', headNode(1, 0)],
    [
      { from: 'a1.h0', to: 'a2.h1', weight: -0.3, kind: 'q' },
      { from: 'a0.h3', to: 'a1.h0', weight: 0.05, kind: 'v' },
      { from: 'a2.h1', to: 'logits', weight: 0.9, kind: 'resid' },
      { from: 'input', to: 'a0.h3', weight: 0.2, kind: 'k' },
      { from: 'a0.h3', to: 'm1', weight: -0.01, kind: 'resid' },
      { from: 'a1.h0', to: 'm1', weight: 0.02, kind: 'resid' },
    ],
    { nLayers: 3, nHeads: 4, model: 'tiny', method: 'eap-atp' },
  );
}

describe('circuit graphs', () => {
  it('parse node ids and order nodes in forward order', () => {
    expect(parseNodeId('a10.h7')).toEqual({ id: 'a10.h7', kind: 'head', layer: 10, head: 7 });
    expect(parseNodeId('m3')).toEqual({ id: 'm3', kind: 'mlp', layer: 3 });
    expect(() => parseNodeId('L1H2')).toThrow(/bad node id/);
    const g = sample();
    expect(g.nodes.map((n) => n.id)).toEqual(['input', 'a0.h3', 'a1.h0', 'm1', 'a2.h1', 'logits']);
  });

  it('JSON round-trips, with a stable key order independent of insertion order', () => {
    const g = sample();
    const text = graphToJson(g);
    const back = graphFromJson(text);
    expect(back).toEqual(g);
    expect(graphToJson(back)).toBe(text);
    // Same graph built in another order (nodes, edges, meta keys) → identical text.
    const shuffled = makeGraph([...g.nodes].reverse(), [...g.edges].reverse(), { method: 'eap-atp', model: 'tiny', nHeads: 4, nLayers: 3 });
    expect(graphToJson(shuffled)).toBe(text);
    const o = JSON.parse(text);
    expect(Object.keys(o)).toEqual(['nodes', 'edges', 'meta']);
    expect(Object.keys(o.edges[0])).toEqual(['from', 'to', 'kind', 'weight']);
    expect(Object.keys(o.meta)).toEqual(['method', 'model', 'nHeads', 'nLayers']);
    expect(Object.keys(o.nodes.find((n: { id: string }) => n.id === 'a2.h1'))).toEqual(['id', 'kind', 'layer', 'head', 'score', 'role']);
  });

  it('rejects malformed graphs', () => {
    expect(() => makeGraph(['a0.h0', 'a0.h0'])).toThrow(/twice/);
    expect(() => makeGraph([], [{ from: 'a0.h0', to: 'm1', weight: 1, kind: 'q' }])).toThrow(/not a head/);
    expect(() => makeGraph([], [{ from: 'a0.h0', to: 'a1.h0', weight: NaN, kind: 'q' }])).toThrow(/weight/);
    expect(() => makeGraph([], [{ from: 'a0.h0', to: 'a1.h0', weight: 1, kind: 'x' as 'q' }])).toThrow(/kind/);
    expect(() => graphFromJson('{"nodes": 1}')).toThrow(/nodes/);
    expect(() => graphFromJson('not json')).toThrow(/not JSON/);
  });

  it('SVG: one node element per node, one path per edge, width ∝ |weight|, colour by sign', () => {
    const g = sample();
    const svg = graphToSvg(g, { title: 'IOI <circuit>' });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<g class="node"/g)!.length).toBe(g.nodes.length);
    for (const n of g.nodes) expect(svg).toContain(`data-id="${n.id}"`);
    const edges = [...svg.matchAll(/<path class="edge" data-from="([^"]+)" data-to="([^"]+)" data-kind="(\w+)" d="[^"]+" fill="none" stroke="([^"]+)" stroke-width="([\d.]+)"/g)];
    expect(edges.length).toBe(g.edges.length);
    const byKey = new Map(edges.map((m) => [`${m[1]}>${m[2]}>${m[3]}`, { colour: m[4], width: Number(m[5]) }]));
    expect(byKey.get('a2.h1>logits>resid')!.width).toBe(6);
    expect(byKey.get('a1.h0>a2.h1>q')!.width).toBeCloseTo((6 * 0.3) / 0.9, 1);
    expect(byKey.get('a1.h0>a2.h1>q')!.colour).not.toBe(byKey.get('a2.h1>logits>resid')!.colour);
    expect(svg).toContain('IOI &lt;circuit&gt;');
    // Layer 0 is drawn below layer 2 (rows bottom → top).
    const y = (id: string) => Number(new RegExp(`data-id="${id}"[^>]*>.*?<rect x="[\\d.]+" y="([\\d.]+)"`).exec(svg)![1]);
    expect(y('a0.h3')).toBeGreaterThan(y('a2.h1'));
    expect(y('input')).toBeGreaterThan(y('a0.h3'));
    expect(y('logits')).toBeLessThan(y('a2.h1'));
  });

  it('writes JSON and SVG files atomically (no temp files left)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'circuits-graph-'));
    try {
      const g = sample();
      writeGraphJson(path.join(dir, 'c.json'), g);
      writeGraphSvg(path.join(dir, 'c.svg'), g);
      expect(fs.readdirSync(dir).sort()).toEqual(['c.json', 'c.svg']);
      expect(graphFromJson(fs.readFileSync(path.join(dir, 'c.json'), 'utf8'))).toEqual(g);
      expect(fs.readFileSync(path.join(dir, 'c.svg'), 'utf8')).toBe(graphToSvg(g));
      expect(() => writeGraphJson(path.join(dir, 'missing', 'c.json'), g)).toThrow();
      expect(fs.readdirSync(dir).sort()).toEqual(['c.json', 'c.svg']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

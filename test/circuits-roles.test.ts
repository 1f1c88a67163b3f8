import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { FwdHook, HookedModel } from '../src/hooks/hooked-model.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { pathPatching } from '../src/circuits/path-patching.js';
import { classifyIoiHeads, ioiHeadEvidence, ioiPositions, rolesFromEvidence, type IoiEvidence } from '../src/circuits/roles.js';
import { syntheticIoiPairs } from '../src/circuits/synthetic.js';
import { circuitGraph } from '../src/circuits/extract.js';
import { graphToSvg } from '../src/circuits/graph.js';
import { modelPath } from './helpers/fixtures.js';

const grid = (L: number, H: number, f: (l: number, h: number) => number) => Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) => f(l, h)));

describe('IOI roles from evidence', () => {
  const L = 3;
  const H = 2;
  const ev: IoiEvidence = {
    directEffect: grid(L, H, (l, h) => (l === 2 && h === 0 ? -0.4 : l === 2 && h === 1 ? 0.2 : l === 1 && h === 0 ? -0.3 : -0.01)),
    attnToIo: grid(L, H, (l) => (l === 2 ? 0.6 : 0.05)),
    // a1.h0 attends to S and writes −S: an S-suppression head.
    attnToS: grid(L, H, (l, h) => (l === 1 && h === 0 ? 0.5 : 0.1)),
    copy: grid(L, H, (l) => (l === 2 ? 0.8 : 0.1)),
    negativeCopy: grid(L, H, (l, h) => (l === 1 && h === 0 ? 0.6 : 0.1)),
    nameMovers: [{ layer: 2, head: 0 }],
    sSuppression: [{ layer: 1, head: 0 }],
    sInhibition: grid(L, H, (l, h) => (l === 1 && h === 1 ? -0.3 : l < 2 ? -0.01 : NaN)),
    previousToken: grid(L, H, (l, h) => (l === 0 && h === 0 ? 0.9 : 0.1)),
    duplicateToken: grid(L, H, (l, h) => (l === 0 && h === 1 ? 0.5 : 0.1)),
    induction: grid(L, H, (l, h) => (l === 1 && h === 0 ? 0.7 : 0.0)),
    thresholds: { nameMoverEffect: 0.05, nameMoverAttention: 0.15, sInhibitionEffect: 0.05, copyScore: 0.3, duplicateToken: 0.3, induction: 0.3, previousToken: 0.4 },
  };

  it('applies the thresholds, one entry per (role, head), strongest first', () => {
    expect(rolesFromEvidence(ev)).toEqual([
      { role: 'name_mover', layer: 2, head: 0, score: 0.4 },
      { role: 'negative_name_mover', layer: 2, head: 1, score: 0.2 },
      { role: 's_suppression', layer: 1, head: 0, score: 0.3 },
      { role: 's_inhibition', layer: 1, head: 1, score: 0.3 },
      { role: 'induction', layer: 1, head: 0, score: 0.7 },
      { role: 'duplicate_token', layer: 0, head: 1, score: 0.5 },
      { role: 'previous_token', layer: 0, head: 0, score: 0.9 },
    ]);
    const strict = rolesFromEvidence(ev, { nameMoverEffect: 0.5, duplicateToken: 0.6, nameMoverAttention: 0.7 });
    expect(strict.map((r) => r.role)).toEqual(['s_inhibition', 'induction', 'previous_token']);
    // Without a negative copy score above the bar, attending to S and helping is not S-suppression.
    expect(rolesFromEvidence(ev, { copyScore: 0.7 }).some((r) => r.role === 's_suppression')).toBe(false);
  });
});

describe('tiny-gpt2: IOI head classification', () => {
  let model: HookedModel;
  let pairs: PromptPair[];
  beforeAll(async () => {
    model = await loadModel(modelPath('tiny-gpt2'));
    pairs = syntheticIoiPairs(model, { n: 4, seed: 9 }).pairs;
  });
  afterAll(() => model?.dispose());

  it('reads IO / S1 / S2 / END from the tokens', () => {
    for (const p of pairs) {
      const pos = ioiPositions(p);
      expect(p.clean[pos.io]).toBe(p.answer);
      expect([p.clean[pos.s1], p.clean[pos.s2]]).toEqual([p.wrong, p.wrong]);
      expect(pos.s2).toBe(7);
      expect(pos.end).toBe(p.clean.length - 1);
      expect(p.corrupt[pos.s2]).not.toBe(p.wrong);
    }
    expect(() => ioiPositions({ ...pairs[0], answer: 999 })).toThrow(/cannot find IO/);
  });

  it('END→IO attention is measured on the (hooked) clean patterns', () => {
    // Force head a2.h3 to attend from END to IO exactly.
    const positions = pairs.map((p) => ioiPositions(p));
    const T = pairs[0].clean.length;
    const hook: FwdHook = [
      'blocks.2.attn.hook_pattern',
      (p) => {
        const [B, H] = p.shape as number[];
        if (B !== pairs.length) return p;
        const m = new Float32Array(B * H * T * T);
        const keep = new Float32Array(B * H * T * T).fill(1);
        for (let b = 0; b < B; b++) {
          const base = (b * H + 3) * T * T + positions[b].end * T;
          for (let k = 0; k < T; k++) keep[base + k] = 0;
          m[base + positions[b].io] = 1;
        }
        return tf.add(tf.mul(p, tf.tensor4d(keep, p.shape as [number, number, number, number])), tf.tensor4d(m, p.shape as [number, number, number, number]));
      },
    ];
    const ev = ioiHeadEvidence(model, pairs, { pathPatching: { fwdHooks: [hook] }, induction: { seqLen: 8, nSeqs: 2 } });
    expect(ev.attnToIo[2][3]).toBeCloseTo(1, 6);
    expect(ev.attnToS[2][3]).toBeCloseTo(0, 6);
    for (const v of ev.attnToIo.flat()) expect(v >= 0 && v <= 1 + 1e-6).toBe(true);
  });

  it('classifies heads consistently with the evidence; S-inhibition = path patching into the name movers\' queries', () => {
    const thresholds = { nameMoverEffect: 0, nameMoverAttention: 0.05, sInhibitionEffect: 0, duplicateToken: 0.2, induction: 0.2, previousToken: 0.2 };
    const ev = ioiHeadEvidence(model, pairs, { thresholds, induction: { seqLen: 8, nSeqs: 2 } });
    expect(ev.nameMovers.length).toBeGreaterThan(0);
    const direct = pathPatching(model, pairs, { receivers: 'logits' }).scores;
    direct.flat().forEach((v, i) => expect(ev.directEffect.flat()[i]).toBeCloseTo(v, 6));
    for (const nm of ev.nameMovers) {
      expect(-ev.directEffect[nm.layer][nm.head]).toBeGreaterThanOrEqual(0);
      expect(ev.attnToIo[nm.layer][nm.head]).toBeGreaterThan(ev.attnToS[nm.layer][nm.head]);
    }
    // Receivers: the answer-writing heads (name movers and S-suppression heads).
    const writers = [...ev.nameMovers, ...ev.sSuppression];
    const top = Math.max(...writers.map((h) => h.layer));
    const senders = direct.flatMap((row, layer) => row.map((_, head) => ({ layer, head }))).filter((h) => h.layer < top);
    if (senders.length) {
      const si = pathPatching(model, pairs, { senders, receiverPositions: 'end', receivers: writers.map((h) => ({ ...h, input: 'q' as const })) }).scores;
      si.flat().forEach((v, i) => (Number.isNaN(v) ? expect(ev.sInhibition.flat()[i]).toBeNaN() : expect(ev.sInhibition.flat()[i]).toBeCloseTo(v, 6)));
    }
    const roles = classifyIoiHeads(model, pairs, { thresholds, induction: { seqLen: 8, nSeqs: 2 } });
    expect(roles).toEqual(rolesFromEvidence(ev));
    for (const r of roles) {
      if (r.role === 'name_mover') expect(r.score).toBeCloseTo(-ev.directEffect[r.layer][r.head], 10);
      if (r.role === 'previous_token') expect(r.score).toBeGreaterThanOrEqual(0.2);
    }
    const svg = graphToSvg(circuitGraph(roles, { roles, nLayers: 3, nHeads: 4 }));
    expect(svg.match(/<g class="node"/g)!.length).toBe(new Set(roles.map((r) => `${r.layer}.${r.head}`)).size);
  });
});

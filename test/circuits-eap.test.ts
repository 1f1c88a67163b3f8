import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { FwdHook, HookedModel } from '../src/hooks/hooked-model.js';
import { PatchingSession } from '../src/patching/session.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { edgeAttributionPatching, eapGraph, edgesAbove, senderTotals, topEdges } from '../src/circuits/eap.js';
import { graphToSvg } from '../src/circuits/graph.js';
import { syntheticIoiPairs } from '../src/circuits/synthetic.js';
import { modelPath } from './helpers/fixtures.js';

describe.each(['tiny-gpt2', 'tiny-llama'] as const)('%s: edge attribution patching', (name) => {
  let model: HookedModel;
  let pairs: PromptPair[];
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    pairs = syntheticIoiPairs(model, { n: 3, seed: 11 }).pairs;
  });
  afterAll(() => model?.dispose());

  it('last-layer sender feeding only the logits: its edge equals its AtP head_out score (last MLP zeroed)', () => {
    const L = model.cfg.nLayers;
    const hooks: FwdHook[] = [[`blocks.${L - 1}.hook_mlp_out`, (x) => tf.zerosLike(x)]];
    const eap = edgeAttributionPatching(model, pairs, { direction: 'denoising', fwdHooks: hooks });
    const session = new PatchingSession(model, pairs, { fwdHooks: hooks });
    const atp = session.grid('head_out', 'atp').scores as number[][];
    session.dispose();
    const totals = senderTotals(eap);
    for (let h = 0; h < model.cfg.nHeads; h++) {
      const i = eap.senders.findIndex((s) => s.id === `a${L - 1}.h${h}`);
      const fed = eap.scores[i].map((v, r) => (Number.isNaN(v) ? null : eap.receivers[r].id)).filter((x) => x !== null);
      expect(fed).toEqual(['logits']);
      expect(Math.abs(totals.get(`a${L - 1}.h${h}`)! - atp[L - 1][h]), `head ${h}`).toBeLessThan(1e-4);
    }
    expect(Math.max(...atp[L - 1].map(Math.abs))).toBeGreaterThan(1e-3);
  });

  it('complete graph (MLP and input nodes, exact norm Jacobian): every sender\'s edges sum to its AtP score', () => {
    const eap = edgeAttributionPatching(model, pairs, { direction: 'denoising', mlps: true, input: true, maxBatchTokens: 20 });
    const session = new PatchingSession(model, pairs);
    const heads = session.grid('head_out', 'atp').scores as number[][];
    const mlp = session.grid('mlp_out', 'atp').scores as number[][];
    const embed = (session.grid('resid_pre', 'atp').scores as number[][])[0].reduce((a, b) => a + b, 0);
    session.dispose();
    const totals = senderTotals(eap);
    heads.forEach((row, l) => row.forEach((v, h) => expect(Math.abs(totals.get(`a${l}.h${h}`)! - v), `a${l}.h${h}`).toBeLessThan(1e-4)));
    mlp.forEach((row, l) => expect(Math.abs(totals.get(`m${l}`)! - row.reduce((a, b) => a + b, 0)), `m${l}`).toBeLessThan(1e-4));
    expect(Math.abs(totals.get('input')! - embed)).toBeLessThan(1e-4);
    // A frozen norm scale is an approximation for plain gradients: sums no longer match.
    const frozen = senderTotals(edgeAttributionPatching(model, pairs, { direction: 'denoising', mlps: true, input: true, lnGrad: 'frozen' }));
    expect(Math.abs(frozen.get('input')! - embed)).toBeGreaterThan(1e-4);
  });

  it('RelP (LN rule → frozen norm scale) telescopes to the RelP head_out scores', () => {
    const eap = edgeAttributionPatching(model, pairs, { method: 'relp', direction: 'denoising', mlps: true });
    expect(eap.lnGrad).toBe('frozen');
    const session = new PatchingSession(model, pairs);
    const heads = session.grid('head_out', 'relp').scores as number[][];
    session.dispose();
    const totals = senderTotals(eap);
    heads.forEach((row, l) => row.forEach((v, h) => expect(Math.abs(totals.get(`a${l}.h${h}`)! - v), `a${l}.h${h}`).toBeLessThan(1e-4)));
  });

  it('noising scores are the negated noising-session AtP and independent of prompt chunking', () => {
    const a = edgeAttributionPatching(model, pairs, { mlps: true });
    const b = edgeAttributionPatching(model, pairs, { mlps: true, maxBatchTokens: 1 });
    a.scores.forEach((row, i) => row.forEach((v, j) => (Number.isNaN(v) ? expect(b.scores[i][j]).toBeNaN() : expect(Math.abs(v - b.scores[i][j])).toBeLessThan(1e-5))));
    const session = new PatchingSession(model, pairs, { direction: 'noising' });
    const heads = session.grid('head_out', 'atp').scores as number[][];
    session.dispose();
    const totals = senderTotals(a);
    heads.forEach((row, l) => row.forEach((v, h) => expect(Math.abs(totals.get(`a${l}.h${h}`)! + v)).toBeLessThan(1e-4)));
    expect(a.ldClean).toBeCloseTo(b.ldClean, 5);
  });

  it('edge structure: only downstream edges exist; GQA k/v receivers feed their whole group', () => {
    const { nLayers: L, nHeads: H, nKvHeads: K } = model.cfg;
    const eap = edgeAttributionPatching(model, pairs, { mlps: true });
    // Receivers: (L−1) attention layers of H + 2K inputs, L MLPs, logits.
    expect(eap.receivers.length).toBe((L - 1) * (H + 2 * K) + L + 1);
    eap.senders.forEach((s, i) =>
      eap.receivers.forEach((r, j) => {
        const exists = !Number.isNaN(eap.scores[i][j]);
        const expected = r.id === 'logits' || (r.kind === 'resid' ? (s.kind === 'head' ? s.layer! <= r.layer! : s.layer! < r.layer!) : s.layer! < r.layer!);
        expect(exists, `${s.id} → ${r.id}`).toBe(expected);
      }),
    );
    const kRecv = eap.receivers.find((r) => r.kind === 'k')!;
    expect(kRecv.nodes.length).toBe(H / K);
    const top = topEdges(eap, 5);
    expect(top.length).toBe(5);
    for (let i = 1; i < top.length; i++) expect(Math.abs(top[i - 1].score)).toBeGreaterThanOrEqual(Math.abs(top[i].score));
    const all = edgesAbove(eap, 0);
    expect(Math.abs(all[0].score)).toBe(Math.abs(top[0].score));
    expect(topEdges(eap, 3, 'positive').every((e, i, xs) => i === 0 || xs[i - 1].score >= e.score)).toBe(true);
    const g = eapGraph(eap, top);
    expect(g.edges.length).toBe(top.reduce((a, e) => a + e.nodes.length, 0));
    expect(graphToSvg(g)).toContain('<svg');
  });

  it('leaks no tensors', () => {
    edgeAttributionPatching(model, pairs, { mlps: true, input: true, method: 'relp' });
    const before = tf.memory().numTensors;
    edgeAttributionPatching(model, pairs, { mlps: true, input: true, method: 'relp', maxBatchTokens: 10 });
    edgeAttributionPatching(model, pairs);
    expect(tf.memory().numTensors).toBe(before);
  });
});

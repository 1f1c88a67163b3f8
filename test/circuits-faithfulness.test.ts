import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { FwdHook, HookedModel } from '../src/hooks/hooked-model.js';
import { finalRow, metricPerPrompt } from '../src/patching/metrics.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { allHeads, allMlps, allNodes, type HeadRef } from '../src/circuits/common.js';
import { ablateHeads, ablationValues, faithfulness } from '../src/circuits/faithfulness.js';
import { circuitGraph, greedyCircuit, headsAboveThreshold, topNHeads } from '../src/circuits/extract.js';
import { pathPatching } from '../src/circuits/path-patching.js';
import { syntheticIoiPairs } from '../src/circuits/synthetic.js';
import { modelPath } from './helpers/fixtures.js';

function ld(model: HookedModel, pairs: PromptPair[], hooks: FwdHook[] = []): number {
  return tf.tidy(() => {
    const logits = model.run(pairs.map((p) => p.clean), { fwdHooks: hooks, finalPositionOnly: true });
    return tf.mean(metricPerPrompt('logit_diff', finalRow(logits), { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) })).dataSync()[0];
  });
}

/** Hooks that set the given heads' z to `value(l)` [N, T, H, dh], built with per-head slices. */
function ablationHooks(model: HookedModel, heads: HeadRef[], value: (l: number) => tf.Tensor): FwdHook[] {
  const byLayer = new Map<number, number[]>();
  for (const h of heads) byLayer.set(h.layer, [...(byLayer.get(h.layer) ?? []), h.head]);
  return [...byLayer].map(([l, hs]) => [
    `blocks.${l}.attn.hook_z`,
    (z: tf.Tensor) => {
      const v = value(l);
      const parts = Array.from({ length: model.cfg.nHeads }, (_, h) => (hs.includes(h) ? v : z).slice([0, 0, h, 0], [-1, -1, 1, -1]));
      return tf.concat(parts, 2);
    },
  ]);
}

describe.each(['tiny-gpt2', 'stories260K'] as const)('%s: faithfulness and ablation', (name) => {
  let model: HookedModel;
  let pairs: PromptPair[];
  let template: number[];
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    ({ pairs, template } = syntheticIoiPairs(model, { n: 6, seed: 5 }));
  });
  afterAll(() => model?.dispose());

  it('the full circuit keeps exactly 1; the empty circuit keeps the fully ablated ratio', () => {
    const full = faithfulness(model, pairs, allNodes(model.cfg));
    expect(full.fraction).toBe(1);
    expect([full.circuitHeads, full.circuitMlps, full.mlps]).toEqual([model.cfg.nLayers * model.cfg.nHeads, model.cfg.nLayers, 'nodes']);
    // Heads only is the whole model when MLPs are kept, and not when they are nodes.
    expect(faithfulness(model, pairs, allHeads(model.cfg), { mlps: 'kept' }).fraction).toBe(1);
    expect(faithfulness(model, pairs, allHeads(model.cfg)).fraction).not.toBe(1);
    expect(full.ldCircuit).toBe(full.ldFull);
    expect(Math.abs(full.ldFull - ld(model, pairs))).toBeLessThan(1e-4);
    const empty = faithfulness(model, pairs, []);
    expect(empty.fraction).toBe(empty.ldAblated / empty.ldFull);
    expect(empty.normalized).toBe(0);
    expect(Math.abs(empty.ldAblated - empty.ldFull)).toBeGreaterThan(1e-3);
  });

  it('ablateHeads reproduces a hook-based mean ablation (per-position mean over the corrupt prompts)', () => {
    const heads = [{ layer: 0, head: 1 }, { layer: 1, head: 0 }, { layer: 1, head: 2 }, { layer: model.cfg.nLayers - 1, head: 3 }];
    const res = ablateHeads(model, pairs, heads, { maxBatchTokens: 30 });
    const names = Array.from({ length: model.cfg.nLayers }, (_, l) => `blocks.${l}.attn.hook_z`);
    const ref = model.runWithCache(pairs.map((p) => p.corrupt), { names });
    const means = names.map((n) => tf.tidy(() => tf.tile(tf.mean(ref.cache.get(n), 0, true), [pairs.length, 1, 1, 1])));
    const expected = ld(model, pairs, ablationHooks(model, heads, (l) => means[l]));
    expect(Math.abs(res.ldAfter - expected)).toBeLessThan(1e-4);
    expect(Math.abs(res.ldBefore - ld(model, pairs))).toBeLessThan(1e-4);
    expect(res.drop).toBeCloseTo(res.ldBefore - res.ldAfter, 10);
    // Zero ablation.
    const zero = ablateHeads(model, pairs, heads, { kind: 'zero' });
    expect(Math.abs(zero.ldAfter - ld(model, pairs, ablationHooks(model, heads, () => tf.zeros([pairs.length, pairs[0].clean.length, model.cfg.nHeads, model.cfg.dHead]))))).toBeLessThan(1e-4);
    // Group means (per template) differ from the pooled mean and match the hook reference too.
    const grouped = ablateHeads(model, pairs, heads, { groups: { reference: template, pairs: template } });
    const groupMean = names.map((n) =>
      tf.tidy(() => {
        const z = ref.cache.get(n);
        return tf.concat(template.map((t) => tf.mean(tf.gather(z, template.flatMap((u, i) => (u === t ? [i] : []))), 0, true)), 0);
      }),
    );
    expect(Math.abs(grouped.ldAfter - ld(model, pairs, ablationHooks(model, heads, (l) => groupMean[l])))).toBeLessThan(1e-4);
    tf.dispose([...means, ...groupMean]);
    ref.logits.dispose();
    ref.cache.dispose();
  });

  it('MLP nodes: ablating an MLP layer = replacing its hook_mlp_out by the corrupt-prompt mean per position', () => {
    const nodes = [{ layer: 0, mlp: true as const }, { layer: 1, head: 2 }];
    const res = ablateHeads(model, pairs, nodes, { maxBatchTokens: 30 });
    const names = ['blocks.0.hook_mlp_out', 'blocks.1.attn.hook_z'];
    const ref = model.runWithCache(pairs.map((p) => p.corrupt), { names });
    const means = names.map((n) => tf.tidy(() => tf.mean(ref.cache.get(n), 0, true)));
    const hooks: FwdHook[] = [
      [names[0], (x) => tf.tile(means[0], [x.shape[0]!, 1, 1])],
      ...ablationHooks(model, [{ layer: 1, head: 2 }], () => tf.tile(means[1], [pairs.length, 1, 1, 1])),
    ];
    expect(Math.abs(res.ldAfter - ld(model, pairs, hooks))).toBeLessThan(1e-4);
    // Every MLP ablated, every head kept.
    const heads = faithfulness(model, pairs, allHeads(model.cfg));
    const noMlps = ablateHeads(model, pairs, allMlps(model.cfg));
    expect(heads.ldCircuit).toBeCloseTo(noMlps.ldAfter, 5);
    tf.dispose(means);
    ref.logits.dispose();
    ref.cache.dispose();
  });

  it('a hand-built answer-writing head: ablating it removes most of the logit difference, other heads do not', () => {
    // Hook: head h* of the last layer writes, at END, along W_O_h·(W_U[answer] − W_U[wrong]) of its row's pair.
    const { nLayers, nHeads: H, dHead: dh } = model.cfg;
    const l = nLayers - 1;
    const hStar = 1;
    const N = pairs.length;
    const T = pairs[0].clean.length;
    const dirs = tf.tidy(() => {
      const W_O = model.weight(`blocks.${l}.attn.W_O`).slice([hStar * dh, 0], [dh, -1]); // [dh, d]
      const W_U = model.weight('unembed.W_U');
      const r = tf.sub(tf.gather(W_U, pairs.map((p) => p.answer), 1), tf.gather(W_U, pairs.map((p) => p.wrong), 1)); // [d, N]
      const v = tf.transpose(tf.matMul(W_O, r)); // [N, dh]
      return tf.div(v, tf.norm(v, 'euclidean', 1, true)).arraySync() as number[][];
    });
    const inject: FwdHook = [
      `blocks.${l}.attn.hook_z`,
      (z) => {
        const rows = z.shape[0]!;
        const add = new Float32Array(rows * T * H * dh);
        for (let b = 0; b < rows; b++) for (let i = 0; i < dh; i++) add[((b * T + T - 1) * H + hStar) * dh + i] = 8 * dirs[b % N][i];
        return tf.add(z, tf.tensor4d(add, z.shape as [number, number, number, number]));
      },
    ];
    const plain = ld(model, pairs);
    const injected = ld(model, pairs, [inject]);
    expect(injected - plain).toBeGreaterThan(2);
    const opts = { fwdHooks: [inject], kind: 'zero' as const };
    const writer = ablateHeads(model, pairs, [{ layer: l, head: hStar }], opts);
    expect(Math.abs(writer.ldBefore - injected)).toBeLessThan(1e-4);
    const others = ablateHeads(model, pairs, allHeads(model.cfg).filter((h) => h.layer === l && h.head !== hStar), opts);
    expect(writer.drop).toBeGreaterThan(0.5 * (injected - plain));
    expect(writer.drop).toBeGreaterThan(Math.abs(others.drop));
    // Mean ablation too: the corrupt-prompt mean averages the pairs' different directions away.
    const meanWriter = ablateHeads(model, pairs, [{ layer: l, head: hStar }], { fwdHooks: [inject] });
    expect(meanWriter.drop).toBeGreaterThan(0.3 * (injected - plain));
  });

  it('greedy extraction stops at the first prefix reaching the target; top-n / threshold / graph helpers agree', () => {
    const direct = pathPatching(model, pairs, { receivers: 'logits' }).scores;
    // Heads only (MLPs kept): the scores are a head grid.
    const res = greedyCircuit(model, pairs, direct, { target: 0.9, sizesPerRound: 4, mlps: 'kept' });
    expect(res.reached).toBe(true);
    expect(res.fraction).toBeGreaterThanOrEqual(0.9);
    expect(res.curve[0].size).toBe(0);
    expect(res.curve[0].ld).toBeCloseTo(res.ldAblated, 10);
    for (const c of res.curve.slice(0, -1)) expect(c.fraction).toBeLessThan(0.9);
    expect(res.curve[res.curve.length - 1].size).toBe(res.heads.length);
    const check = faithfulness(model, pairs, res.heads, { mlps: 'kept' });
    expect(Math.abs(check.fraction - res.fraction)).toBeLessThan(1e-5);
    expect(res.heads).toEqual(topNHeads(direct, res.heads.length));
    const t = Math.abs(res.heads[res.heads.length - 1]?.score ?? 0);
    expect(headsAboveThreshold(direct, t).length).toBeGreaterThanOrEqual(res.heads.length);
    const g = circuitGraph(res.heads, { nLayers: model.cfg.nLayers, nHeads: model.cfg.nHeads, roles: res.heads.slice(0, 1).map((h) => ({ ...h, role: 'name_mover' })) });
    expect(g.nodes.length).toBe(res.heads.length);
    if (res.heads.length) expect(g.nodes.some((n) => n.role === 'name_mover')).toBe(true);
  });

  it('leaks no tensors; rejects mismatched references', () => {
    const heads = [{ layer: 0, head: 0 }];
    faithfulness(model, pairs, heads);
    const before = tf.memory().numTensors;
    faithfulness(model, pairs, heads);
    ablateHeads(model, pairs, heads, { kind: 'zero' });
    greedyCircuit(model, pairs, [[1, 2], [3, 4]], { target: 2, maxHeads: 2 });
    const v = ablationValues(model, pairs);
    v.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => ablateHeads(model, pairs, heads, { reference: [[1, 2, 3]] })).toThrow(/per position/);
    expect(() => ablateHeads(model, pairs, [{ layer: 0, head: 99 }])).toThrow(/head must be in/);
    expect(tf.memory().numTensors).toBe(before);
  });
});

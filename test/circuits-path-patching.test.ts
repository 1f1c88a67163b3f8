import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { FwdHook, HookedModel } from '../src/hooks/hooked-model.js';
import { PatchingSession } from '../src/patching/session.js';
import { finalRow, metricPerPrompt } from '../src/patching/metrics.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { pathPatching, type Receiver } from '../src/circuits/path-patching.js';
import { syntheticIoiPairs } from '../src/circuits/synthetic.js';
import { modelPath } from './helpers/fixtures.js';

/** Mean logit difference of a hooked clean run, computed without any circuits code. */
function ld(model: HookedModel, pairs: PromptPair[], prompts: number[][], hooks: FwdHook[] = []): number {
  return tf.tidy(() => {
    const logits = model.run(prompts, { fwdHooks: hooks, finalPositionOnly: true });
    return tf.mean(metricPerPrompt('logit_diff', finalRow(logits), { answer: pairs.map((p) => p.answer), wrong: pairs.map((p) => p.wrong) })).dataSync()[0];
  });
}

/** Replace head `h` of a [b, T, nh, dh] activation with the same slice of `src` (concat, no masks). */
function spliceHead(x: tf.Tensor, src: tf.Tensor, h: number): tf.Tensor {
  const [b, T, nh, dh] = x.shape as number[];
  const parts: tf.Tensor[] = [];
  if (h > 0) parts.push(x.slice([0, 0, 0, 0], [b, T, h, dh]));
  parts.push(src.slice([0, 0, h, 0], [b, T, 1, dh]));
  if (h < nh - 1) parts.push(x.slice([0, 0, h + 1, 0], [b, T, nh - h - 1, dh]));
  return tf.concat(parts, 2);
}

/** Path patching the slow, obvious way: one sender, full forwards, no batching or resume. */
function naivePathPatch(model: HookedModel, pairs: PromptPair[], sender: { layer: number; head: number }, receivers: 'logits' | Receiver[], freezeMlps = false, endOnly = false): number {
  const { cfg } = model;
  const L = cfg.nLayers;
  const clean = pairs.map((p) => p.clean);
  const corrupt = pairs.map((p) => p.corrupt);
  const z = (l: number) => `blocks.${l}.attn.hook_z`;
  const zs = Array.from({ length: L }, (_, l) => z(l));
  const mlps = Array.from({ length: L }, (_, l) => `blocks.${l}.hook_mlp_out`);
  const c = model.runWithCache(clean, { names: [...zs, ...mlps] });
  const x = model.runWithCache(corrupt, { names: zs });
  const ldClean = ld(model, pairs, clean);
  const ldCorrupt = ld(model, pairs, corrupt);
  const run2: FwdHook[] = zs.map((n, l) => [n, () => (l === sender.layer ? spliceHead(c.cache.get(n), x.cache.get(n), sender.head) : c.cache.get(n).clone())]);
  if (freezeMlps) mlps.forEach((n) => run2.push([n, () => c.cache.get(n).clone()]));
  let patched: number;
  if (receivers === 'logits') patched = ld(model, pairs, clean, run2);
  else {
    const names = [...new Set(receivers.map((r) => `blocks.${r.layer}.attn.hook_${r.input}`))];
    const rec = model.runWithCache(clean, { names, fwdHooks: run2 });
    const run3: FwdHook[] = receivers.map((r) => {
      const n = `blocks.${r.layer}.attn.hook_${r.input}`;
      const idx = r.input === 'q' ? r.head : Math.floor(r.head / (cfg.nHeads / cfg.nKvHeads));
      return [
        n,
        (act: tf.Tensor) => {
          const spliced = spliceHead(act, rec.cache.get(n), idx);
          if (!endOnly) return spliced;
          const T = act.shape[1]!;
          return tf.concat([act.slice([0, 0, 0, 0], [-1, T - 1, -1, -1]), spliced.slice([0, T - 1, 0, 0], [-1, 1, -1, -1])], 1);
        },
      ];
    });
    patched = ld(model, pairs, clean, run3);
    rec.logits.dispose();
    rec.cache.dispose();
  }
  for (const r of [c, x]) {
    r.logits.dispose();
    r.cache.dispose();
  }
  return (patched - ldClean) / (ldClean - ldCorrupt);
}

describe.each(['tiny-gpt2', 'tiny-llama'] as const)('%s: path patching', (name) => {
  let model: HookedModel;
  let pairs: PromptPair[];
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    pairs = syntheticIoiPairs(model, { n: 4, seed: 3 }).pairs;
  });
  afterAll(() => model?.dispose());

  it('to logits, for a last-layer head, equals patching that head (noising) computed with plain hooks', () => {
    const last = model.cfg.nLayers - 1;
    const res = pathPatching(model, pairs, { receivers: 'logits' });
    const clean = pairs.map((p) => p.clean);
    const corrupt = pairs.map((p) => p.corrupt);
    const zName = `blocks.${last}.attn.hook_z`;
    const x = model.runWithCache(corrupt, { names: [zName] });
    const ldClean = ld(model, pairs, clean);
    const ldCorrupt = ld(model, pairs, corrupt);
    expect(Math.abs(res.ldClean - ldClean)).toBeLessThan(1e-5);
    expect(Math.abs(res.ldCorrupt - ldCorrupt)).toBeLessThan(1e-5);
    let nonZero = 0;
    for (let h = 0; h < model.cfg.nHeads; h++) {
      const patched = ld(model, pairs, clean, [[zName, (a) => spliceHead(a, x.cache.get(zName), h)]]);
      const expected = (patched - ldClean) / (ldClean - ldCorrupt);
      expect(Math.abs(res.scores[last][h] - expected), `head ${h}`).toBeLessThan(1e-4);
      if (Math.abs(expected) > 1e-3) nonZero++;
    }
    expect(nonZero).toBeGreaterThan(0);
    x.logits.dispose();
    x.cache.dispose();
  });

  it('with no heads frozen (receivers = logits, i.e. everything downstream) is ordinary noising activation patching', () => {
    const res = pathPatching(model, pairs, { receivers: 'logits', freezeHeads: false, maxBatchTokens: 40 });
    const session = new PatchingSession(model, pairs, { direction: 'noising' });
    const grid = session.grid('head_out', 'activation').scores as number[][];
    session.dispose();
    // Session noising: (M − M_clean) / (M_corrupt − M_clean) = −(IOI normalisation).
    grid.forEach((row, l) => row.forEach((v, h) => expect(Math.abs(res.scores[l][h] + v), `L${l}H${h}`).toBeLessThan(1e-4)));
    // Freezing matters for earlier layers: the two differ somewhere.
    const frozen = pathPatching(model, pairs, { receivers: 'logits' });
    const diff = Math.max(...frozen.scores.slice(0, -1).flat().map((v, i) => Math.abs(v - res.scores.slice(0, -1).flat()[i])));
    expect(diff).toBeGreaterThan(1e-4);
  });

  it('to logits and into q/k/v of receivers matches a naive one-sender-at-a-time implementation (batched, resumed)', () => {
    const L = model.cfg.nLayers;
    const senders = [{ layer: 0, head: 1 }, { layer: 0, head: 2 }, { layer: 1, head: 0 }, { layer: 1, head: 3 }];
    const receivers: Receiver[] = [
      { layer: L - 1, head: 0, input: 'q' },
      { layer: L - 1, head: 2, input: 'k' },
      { layer: 1, head: 3, input: 'v' },
      { layer: L - 1, head: 3, input: 'v' },
    ];
    for (const freezeMlps of [false, true]) {
      const toLogits = pathPatching(model, pairs, { receivers: 'logits', senders, freezeMlps, maxBatchTokens: 80 });
      const toHeads = pathPatching(model, pairs, { receivers, senders, freezeMlps, maxBatchTokens: 80 });
      for (const s of senders) {
        expect(Math.abs(toLogits.scores[s.layer][s.head] - naivePathPatch(model, pairs, s, 'logits', freezeMlps))).toBeLessThan(1e-4);
        const expected = naivePathPatch(model, pairs, s, receivers, freezeMlps);
        expect(Math.abs(toHeads.scores[s.layer][s.head] - expected), `sender ${s.layer}.${s.head} freezeMlps=${freezeMlps}`).toBeLessThan(1e-4);
      }
      const atEnd = pathPatching(model, pairs, { receivers, senders, freezeMlps, receiverPositions: 'end' });
      for (const s of senders) {
        expect(Math.abs(atEnd.scores[s.layer][s.head] - naivePathPatch(model, pairs, s, receivers, freezeMlps, true))).toBeLessThan(1e-4);
      }
      expect(Math.max(...senders.map((s) => Math.abs(atEnd.scores[s.layer][s.head] - toHeads.scores[s.layer][s.head])))).toBeGreaterThan(1e-6);
      // Heads that were not senders are NaN.
      expect(Number.isNaN(toHeads.scores[L - 1][0])).toBe(true);
    }
  });

  it('a sender with no receiver downstream has exactly zero effect; a downstream one usually does not', () => {
    const res = pathPatching(model, pairs, { receivers: [{ layer: 1, head: 0, input: 'q' }], senders: [{ layer: 1, head: 1 }, { layer: 2, head: 0 }, { layer: 0, head: 0 }] });
    expect(res.scores[1][1]).toBe(0);
    expect(res.scores[2][0]).toBe(0);
    expect(Math.abs(res.scores[0][0])).toBeGreaterThan(0);
  });

  it('leaks no tensors and rejects bad receivers', () => {
    const opts = { receivers: [{ layer: 2, head: 1, input: 'k' as const }], senders: [{ layer: 0, head: 0 }, { layer: 1, head: 2 }] };
    pathPatching(model, pairs, opts);
    const before = tf.memory().numTensors;
    pathPatching(model, pairs, opts);
    pathPatching(model, pairs, { receivers: 'logits', freezeMlps: true });
    expect(tf.memory().numTensors).toBe(before);
    expect(() => pathPatching(model, pairs, { receivers: [{ layer: 9, head: 0, input: 'q' }] })).toThrow(/layer must be in/);
    expect(() => pathPatching(model, pairs, { receivers: [{ layer: 1, head: 0, input: 'x' as 'q' }] })).toThrow(/q, k or v/);
    expect(() => pathPatching(model, pairs, { receivers: [] })).toThrow(/non-empty/);
    expect(tf.memory().numTensors).toBe(before);
  });
});

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { generateIoiPrompts } from '../datasets/ioi.js';
import { IOI_MODEL_SPLIT } from '../datasets/ioi-corpus.js';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { ioiPromptPairs, namesKnownTo } from '../src/circuits/ioi-report.js';
import { ioiPositions } from '../src/circuits/roles.js';
import { backupNameMoverTest, duplicateTokenPathTest, repeatSensitivityTest, sInhibitionAttentionTest } from '../src/circuits/ioi-classes.js';
import { pathPatching } from '../src/circuits/path-patching.js';
import type { PromptPair } from '../src/patching/pairs.js';

const MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../datasets/ioi-gpt2');

describe('IOI class tests (S-inhibition attention, backup name movers) on the shipped IOI model', () => {
  let model: HookedModel;
  let pairs: PromptPair[];
  beforeAll(async () => {
    model = await loadModel(MODEL_DIR);
    const names = namesKnownTo(model.tokenizer!, IOI_MODEL_SPLIT.test.names);
    pairs = ioiPromptPairs(model, generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names, n: 12, seed: 4, tokenizer: model.tokenizer!, requireSameLength: true }));
  });
  afterAll(() => model?.dispose());

  it('repeat-or-position control: the attention END → S2 read off the pattern by hand, and the shipped S-suppression head a0.h1 keeps it when S2 is not repeated', () => {
    const positions = pairs.map((p, i) => ioiPositions(p, i));
    const heads = [{ layer: 0, head: 1 }, { layer: 2, head: 3 }];
    const t = repeatSensitivityTest(model, pairs, positions, heads);
    const byHand = (ids: number[][], h: { layer: number; head: number }) => {
      let sum = 0;
      ids.forEach((row, n) => {
        const { logits, cache } = model.runWithCache([row], { names: [`blocks.${h.layer}.attn.hook_pattern`], finalPositionOnly: true });
        const a = cache.get(`blocks.${h.layer}.attn.hook_pattern`)!.arraySync() as number[][][][];
        sum += a[0][h.head][positions[n].end][positions[n].s2];
        logits.dispose();
        cache.dispose();
      });
      return sum / ids.length;
    };
    for (const [i, h] of heads.entries()) {
      expect(t.heads[i].id).toBe(`a${h.layer}.h${h.head}`);
      expect(t.heads[i].clean).toBeCloseTo(byHand(pairs.map((p) => p.clean), h), 5);
      expect(t.heads[i].corrupt).toBeCloseTo(byHand(pairs.map((p) => p.corrupt), h), 5);
    }
    // The positional shortcut of the 3-layer model (README): "the latest name", repeated or not.
    expect(t.heads[0].clean).toBeGreaterThan(0.7);
    expect(t.heads[0].ratio).toBeGreaterThan(0.9);
  });

  it('S-inhibition test: no senders changes nothing; patching every earlier head at END moves the receivers’ attention', () => {
    const positions = pairs.map((p, i) => ioiPositions(p, i));
    const last = model.cfg.nLayers - 1;
    const receivers = Array.from({ length: model.cfg.nHeads }, (_, head) => ({ layer: last, head }));
    const none = sInhibitionAttentionTest(model, pairs, positions, [], receivers);
    for (const r of none.receivers) {
      expect(r.ioAfter).toBe(r.ioBefore);
      expect(r.sAfter).toBe(r.sBefore);
      expect(r.ioBefore + r.sBefore).toBeLessThanOrEqual(1 + 1e-6);
    }
    expect(none.shift).toBe(0);
    const senders = Array.from({ length: last * model.cfg.nHeads }, (_, i) => ({ layer: Math.floor(i / model.cfg.nHeads), head: i % model.cfg.nHeads }));
    const all = sInhibitionAttentionTest(model, pairs, positions, senders, receivers);
    expect(Math.max(...all.receivers.map((r) => Math.abs(r.ioAfter - r.ioBefore) + Math.abs(r.sAfter - r.sBefore)))).toBeGreaterThan(1e-3);
  });

  it('backup test: ablating nothing leaves direct effects as path patching gives them; ablating the strongest head lowers the logit difference', () => {
    const none = backupNameMoverTest(model, pairs, []);
    const pp = pathPatching(model, pairs, { receivers: 'logits' });
    none.before.forEach((row, l) => row.forEach((v, h) => {
      expect(Math.abs(v - pp.scores[l][h])).toBeLessThan(1e-5);
      expect(Math.abs(none.after[l][h] - v)).toBeLessThan(1e-5);
    }));
    expect(none.backup).toEqual([]);
    const flat = pp.scores.flatMap((row, layer) => row.map((s, head) => ({ layer, head, s })));
    const strongest = flat.reduce((a, b) => (b.s < a.s ? b : a));
    const r = backupNameMoverTest(model, pairs, [strongest]);
    expect(r.ldAfter).toBeLessThan(r.ldBefore);
    expect(r.backup.every((b) => !(b.layer === strongest.layer && b.head === strongest.head))).toBe(true);
  });

  it('duplicate-token path test: no path from a head at or after the receivers, some from before', () => {
    const last = model.cfg.nLayers - 1;
    const receivers = [{ layer: last, head: 0 }, { layer: last, head: 1 }];
    const senders = Array.from({ length: model.cfg.nLayers * model.cfg.nHeads }, (_, i) => ({ layer: Math.floor(i / model.cfg.nHeads), head: i % model.cfg.nHeads }));
    const r = duplicateTokenPathTest(model, pairs, senders, receivers);
    expect(r.effects).toHaveLength(senders.length);
    for (const e of r.effects) if (e.layer >= last) expect(Math.abs(e.effect), e.id).toBeLessThan(1e-6);
    expect(Math.max(...r.effects.filter((e) => e.layer < last).map((e) => Math.abs(e.effect)))).toBeGreaterThan(1e-3);
  });

  it('does not leak tensors', () => {
    const positions = pairs.map((p, i) => ioiPositions(p, i));
    const recv = [{ layer: model.cfg.nLayers - 1, head: 0 }];
    sInhibitionAttentionTest(model, pairs, positions, [{ layer: 0, head: 0 }], recv);
    backupNameMoverTest(model, pairs, [{ layer: 0, head: 1 }]);
    const before = tf.memory().numTensors;
    sInhibitionAttentionTest(model, pairs, positions, [{ layer: 0, head: 0 }], recv);
    backupNameMoverTest(model, pairs, [{ layer: 0, head: 1 }]);
    repeatSensitivityTest(model, pairs, positions, recv);
    expect(tf.memory().numTensors).toBe(before);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { FwdHook, HookedModel } from '../src/hooks/hooked-model.js';
import { PatchingSession } from '../src/patching/session.js';
import { headAttributionScores, inductionScores, patternScores, previousTokenScores, repeatedRandomTokens } from '../src/circuits/head-scores.js';
import { syntheticIoiPairs } from '../src/circuits/synthetic.js';
import { modelPath } from './helpers/fixtures.js';

/** A hook that replaces head `head`'s pattern by rows given by `target(b, q)` (one-hot; null → position 0). */
function forcePattern(layer: number, head: number, target: (b: number, q: number) => number[] | null): FwdHook {
  return [
    `blocks.${layer}.attn.hook_pattern`,
    (p) => {
      const [B, H, T] = p.shape as number[];
      const m = new Float32Array(B * T * T);
      for (let b = 0; b < B; b++) {
        for (let q = 0; q < T; q++) {
          const ks = target(b, q) ?? [0];
          for (const k of ks) m[(b * T + q) * T + k] = 1 / ks.length;
        }
      }
      const forced = tf.tensor4d(m, [B, 1, T, T]);
      const sel = tf.tensor4d(Array.from({ length: H }, (_, h) => (h === head ? 1 : 0)), [1, H, 1, 1]);
      return tf.add(tf.mul(p, tf.sub(1, sel)), tf.mul(forced, sel));
    },
  ];
}

describe.each(['tiny-gpt2', 'stories260K'] as const)('%s: attention-pattern head scores', (name) => {
  let model: HookedModel;
  let prompts: number[][];
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    const { pairs } = syntheticIoiPairs(model, { n: 5, seed: 2 });
    // Ragged on purpose: right padding must not count.
    prompts = pairs.map((p, i) => p.clean.slice(0, p.clean.length - (i % 3)));
  });
  afterAll(() => model?.dispose());

  it('are attention masses in [0, 1] with the right shape', () => {
    const s = patternScores(model, prompts, undefined, { batchSize: 2 });
    for (const kind of ['previous_token', 'duplicate_token', 'induction'] as const) {
      expect(s[kind].length).toBe(model.cfg.nLayers);
      for (const row of s[kind]) {
        expect(row.length).toBe(model.cfg.nHeads);
        for (const v of row) expect(v >= 0 && v <= 1 + 1e-6, `${kind} ${v}`).toBe(true);
      }
    }
    // Batching does not change the result.
    const one = patternScores(model, prompts, undefined, { batchSize: 16 });
    one.previous_token.flat().forEach((v, i) => expect(Math.abs(v - s.previous_token.flat()[i])).toBeLessThan(1e-6));
  });

  it('an exact previous-token pattern (hook) scores 1; the other heads score less', () => {
    const hook = forcePattern(1, 2, (_b, q) => (q >= 1 ? [q - 1] : null));
    const s = previousTokenScores(model, prompts, { fwdHooks: [hook], batchSize: 2 });
    expect(Math.abs(s[1][2] - 1)).toBeLessThan(1e-6);
    s.flat().forEach((v, i) => i !== model.cfg.nHeads + 2 && expect(v).toBeLessThan(0.999));
  });

  it('an exact duplicate-token pattern scores 1, and is not a previous-token pattern', () => {
    const hook = forcePattern(0, 1, (b, q) => {
      const ids = prompts[b];
      const earlier = ids.slice(0, q).flatMap((t, j) => (q < ids.length && t === ids[q] ? [j] : []));
      return earlier.length ? earlier : null;
    });
    const s = patternScores(model, prompts, ['duplicate_token', 'previous_token'], { fwdHooks: [hook] });
    expect(Math.abs(s.duplicate_token[0][1] - 1)).toBeLessThan(1e-6);
    expect(s.previous_token[0][1]).toBeLessThan(0.5);
  });

  it('induction: seeded repeated random sequences; an exact induction pattern scores 1', () => {
    const opts = { seqLen: 10, nSeqs: 4, seed: 7 };
    const seqs = repeatedRandomTokens(model, opts);
    expect(repeatedRandomTokens(model, opts)).toEqual(seqs);
    expect(repeatedRandomTokens(model, { ...opts, seed: 8 })).not.toEqual(seqs);
    const prefix = model.cfg.bosTokenId !== null ? 1 : 0;
    for (const s of seqs) {
      expect(s.length).toBe(prefix + 20);
      const x = s.slice(prefix, prefix + 10);
      expect(new Set(x).size).toBe(10);
      expect(s.slice(prefix + 10)).toEqual(x);
      expect(x.includes(model.cfg.bosTokenId ?? -1)).toBe(false);
    }
    const n = 10;
    const hook = forcePattern(model.cfg.nLayers - 1, 0, (_b, q) => (q >= prefix + n ? [q - n + 1] : null));
    const s = inductionScores(model, { ...opts, fwdHooks: [hook] });
    expect(Math.abs(s[model.cfg.nLayers - 1][0] - 1)).toBeLessThan(1e-6);
    const plain = inductionScores(model, opts);
    for (const v of plain.flat()) expect(v >= 0 && v <= 1 + 1e-6).toBe(true);
  });

  it('headAttributionScores wraps the session head_out grid', () => {
    const { pairs } = syntheticIoiPairs(model, { n: 2, seed: 4 });
    const session = new PatchingSession(model, pairs);
    for (const method of ['activation', 'atp', 'relp'] as const) {
      const { scores, grid } = headAttributionScores(session, method);
      expect(grid.component).toBe('head_out');
      expect(scores).toEqual(grid.scores);
      expect([scores.length, scores[0].length]).toEqual([model.cfg.nLayers, model.cfg.nHeads]);
    }
    session.dispose();
  });

  it('leaks no tensors', () => {
    patternScores(model, prompts);
    const before = tf.memory().numTensors;
    patternScores(model, prompts, undefined, { batchSize: 2 });
    inductionScores(model, { seqLen: 6, nSeqs: 2 });
    expect(tf.memory().numTensors).toBe(before);
    expect(() => patternScores(model, [])).toThrow(/no prompts/);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { PatchingSession } from '../src/patching/session.js';
import type { Component, Method } from '../src/patching/types.js';
import { modelPath, patchingReference } from './helpers/fixtures.js';

const MODELS = ['tiny-gpt2', 'tiny-llama', 'tiny-qwen2', 'stories260K'] as const;
const COMPONENTS: Component[] = ['resid_pre', 'attn_out', 'mlp_out'];
const METHODS: Method[] = ['activation', 'atp', 'relp'];


describe.each(MODELS)('%s patching grids match the reference', (name) => {
  const ref = patchingReference(name);
  let model: HookedModel;
  let session: PatchingSession;
  beforeAll(async () => {
    model = await loadModel(modelPath(name));
    session = new PatchingSession(model, [{ clean: ref.clean, corrupt: ref.corrupt, answer: ref.answer, wrong: ref.wrong }]);
  });
  afterAll(() => {
    session?.dispose();
    model?.dispose();
  });

  it('ld_clean and ld_corrupt', () => {
    const b = session.baselines();
    expect(Math.abs(b.clean - ref.ld_clean)).toBeLessThan(1e-4);
    expect(Math.abs(b.corrupt - ref.ld_corrupt)).toBeLessThan(1e-4);
  });

  for (const component of COMPONENTS) {
    it.each(METHODS)(`${component} · %s (≤1e-4)`, (method) => {
      const grid = session.grid(component, method);
      const want = ref.grids[component][method];
      expect(grid.shape).toEqual(ref.grids[component].shape);
      const got = (grid.scores as number[][]).flat();
      const diffs = got.map((v, i) => Math.abs(v - want[i]));
      const worst = Math.max(...diffs);
      expect(worst, `worst at ${diffs.indexOf(worst)}: got ${got[diffs.indexOf(worst)]} want ${want[diffs.indexOf(worst)]}`).toBeLessThan(1e-4);
    });
  }

  it('does not leak tensors', () => {
    session.grid('attn_out', 'relp');
    session.grid('mlp_out', 'activation');
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) {
      session.grid('attn_out', 'relp');
      session.grid('mlp_out', 'activation');
      session.grid('resid_pre', 'atp');
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});

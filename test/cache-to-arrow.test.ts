import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { cachedActivationTensor, writeActivationCache } from '../src/hooks/cache-to-arrow.js';
import { readArrowCache, cacheColumnToArray, cachePromptRows } from '../src/io/arrow-cache.js';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { modelPath } from './helpers/fixtures.js';

describe('writeActivationCache', () => {
  let model: HookedModel;
  let dir: string;
  beforeAll(async () => {
    model = await loadModel(modelPath('tiny-llama'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-cache-'));
  });
  afterAll(() => {
    model?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([undefined, 1, 2])('rows equal each prompt run alone (batch size %s, early stop at layer 1)', async (batchSize) => {
    const prompts = [[5, 17, 42, 99, 3, 17, 42, 7], [9, 8], [100, 101, 102, 103, 104]];
    const hooks = ['blocks.0.hook_resid_post', 'blocks.1.attn.hook_pattern', 'blocks.1.mlp.hook_post'];
    const out = path.join(dir, `c${batchSize}.arrow`);
    const before = tf.memory().numTensors;
    const { rows } = await writeActivationCache(model, prompts, out, { hooks, batchSize });
    expect(tf.memory().numTensors).toBe(before);
    expect(rows).toBe(15);
    const cache = readArrowCache(out);
    expect(Array.from(cache.prompt)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2]);
    expect(cache.hooks['blocks.1.attn.hook_pattern'].shape).toEqual([model.cfg.nHeads, -1]);
    const resid = cacheColumnToArray(cache, 'blocks.0.hook_resid_post');
    const residTensor = cachedActivationTensor(cache, 'blocks.0.hook_resid_post');
    expect(residTensor.shape).toEqual([15, model.cfg.dModel]);
    expect(Array.from(residTensor.dataSync())).toEqual(Array.from(resid.data));
    residTensor.dispose();
    const post = cacheColumnToArray(cache, 'blocks.1.mlp.hook_post');
    prompts.forEach((p, i) => {
      const { start, end } = cachePromptRows(cache, i);
      expect(end - start).toBe(p.length);
      const alone = model.runWithCache([p], { names: hooks });
      const d = model.cfg.dModel;
      expect(Array.from(resid.data.slice(start * d, end * d))).toEqual(Array.from(alone.cache.get(hooks[0]).dataSync()));
      const m = model.cfg.dMlp;
      const got = post.data.slice(start * m, end * m);
      const want = alone.cache.get(hooks[2]).dataSync();
      got.forEach((v, j) => expect(Math.abs(v - want[j])).toBeLessThan(1e-5));
      // pattern row q = [head, k<len] equals the [head, q, :] slice of the full pattern
      const pattern = alone.cache.get(hooks[1]).arraySync() as number[][][][];
      const lists = cache.columns[hooks[1]].lists!;
      for (let q = 0; q < p.length; q++) {
        const row = lists[start + q];
        expect(row.length).toBe(model.cfg.nHeads * p.length);
        for (let h = 0; h < model.cfg.nHeads; h++) for (let k = 0; k < p.length; k++) expect(Math.abs(row[h * p.length + k] - pattern[0][h][q][k])).toBeLessThan(1e-6);
      }
      alone.cache.dispose();
      alone.logits.dispose();
    });
  });

  it('an aborted run leaves no file behind', async () => {
    const out = path.join(dir, 'aborted.arrow');
    const controller = new AbortController();
    const prompts = Array.from({ length: 20 }, () => [1, 2, 3, 4]);
    const run = writeActivationCache(model, prompts, out, {
      hooks: ['blocks.0.hook_resid_pre'],
      batchSize: 1,
      signal: controller.signal,
      onProgress: (done) => done === 3 && controller.abort(),
    });
    await expect(run).rejects.toThrow(/interrupted/);
    expect(fs.readdirSync(dir).filter((f) => f.includes('aborted'))).toEqual([]);
  });
});

import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.js';
import { HookedModel } from '../src/hooks/hooked-model.js';
import { loadHfConfig } from '../src/models/load.js';
import { readSafetensorsDir } from '../src/io/safetensors.js';
import { fixturePath } from './helpers/fixtures.js';

// The same block and hook machinery must serve a vision tower (bidirectional attention, hooks
// under `vision.`) and VLM splicing (embeddings passed in instead of token ids).
describe('room for a vision tower and VLM splicing', () => {
  it('a non-causal block with the vision. prefix attends both ways and fires vision.* hooks', async () => {
    await initBackend();
    const dir = fixturePath('tiny-gpt2');
    const { cfg, family } = loadHfConfig(dir);
    const vcfg = { ...cfg, causal: false, hookPrefix: 'vision.' };
    const model = new HookedModel(vcfg, family.weights(vcfg, readSafetensorsDir(dir), dir), null, dir);
    const names = model.hookNames();
    expect(names.every((n) => n.startsWith('vision.'))).toBe(true);
    const { logits, cache } = model.runWithCache([5, 17, 42, 99], { names: ['vision.blocks.0.attn.hook_pattern', 'vision.hook_embed'] });
    const p = cache.get('vision.blocks.0.attn.hook_pattern').arraySync() as number[][][][];
    expect(p[0][0][0][3]).toBeGreaterThan(0); // query 0 sees key 3: no causal mask
    // Splicing: passing the embeddings back in reproduces the run exactly.
    const again = model.run([5, 17, 42, 99], { inputsEmbeds: cache.get('vision.hook_embed') });
    expect(Array.from(again.dataSync())).toEqual(Array.from(logits.dataSync()));
    tf.dispose([logits, again]);
    cache.dispose();
    model.dispose();
  });
});

/**
 * The shipped stories260K SAE (datasets/stories260K-sae, made by scripts/train-stories-sae.ts):
 * it loads, is small, matches its training.json, and still reconstructs held-out stories well
 * enough when spliced into the model (a few eval-split stories, so the test stays fast).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStoriesSplit } from '../datasets/stories.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { loadModel } from '../src/models/load.js';
import { evaluateSae, loadSae } from '../src/sae/index.js';
import { storiesGguf } from './helpers/fixtures.js';

const SAE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../datasets/stories260K-sae');

let model: HookedModel;
beforeAll(async () => {
  model = await loadModel(storiesGguf());
});
afterAll(() => model?.dispose());

describe('shipped stories260K SAE', () => {
  it('is a small SAELens directory with its training record', () => {
    const files = fs.readdirSync(SAE_DIR).sort();
    expect(files).toEqual(['README.md', 'cfg.json', 'sae_weights.safetensors', 'sparsity.safetensors', 'training.json']);
    const bytes = files.reduce((s, f) => s + fs.statSync(path.join(SAE_DIR, f)).size, 0);
    expect(bytes).toBeLessThan(1024 * 1024);
    const cfg = JSON.parse(fs.readFileSync(path.join(SAE_DIR, 'cfg.json'), 'utf8'));
    expect(cfg).toMatchObject({ architecture: 'topk', d_in: 64, hook_name: 'blocks.2.hook_resid_post', normalize_activations: 'expected_average_only_in' });
    const training = JSON.parse(fs.readFileSync(path.join(SAE_DIR, 'training.json'), 'utf8'));
    expect(training.settings).toMatchObject({ architecture: 'topk', dSae: cfg.d_sae, k: cfg.k, hook: cfg.hook_name });
    for (const key of ['l0', 'explained_variance', 'mse', 'cosine', 'ce_orig', 'ce_sae', 'ce_zero', 'ce_loss_score', 'kl_div', 'dead_fraction']) {
      expect(typeof training.eval[key], key).toBe('number');
    }
  });

  it('reconstructs held-out stories: EV ≥ 0.9, CE loss score ≥ 0.95, L0 = k', () => {
    const { sae, sparsity } = loadSae(SAE_DIR);
    try {
      expect(sparsity).toHaveLength(sae.cfg.dSae);
      // The last 6 stories of the eval split: never seen in training.
      const stories = readStoriesSplit().eval.slice(-6).map((s) => s.tokens);
      const r = evaluateSae(model, sae, stories);
      expect(r.l0).toBeLessThanOrEqual(sae.cfg.k!);
      expect(r.l0).toBeGreaterThan(sae.cfg.k! - 0.5);
      expect(r.explained_variance).toBeGreaterThanOrEqual(0.9);
      expect(r.ce_loss_score).toBeGreaterThanOrEqual(0.95);
      expect(r.ce_sae).toBeLessThan(r.ce_zero);
      expect(r.kl_div).toBeLessThan(0.3);
    } finally {
      sae.dispose();
    }
  });
});

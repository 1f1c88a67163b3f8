/**
 * SAE dashboards: Neuronpedia / SAEDashboard batch JSON (fields and types), the static HTML page
 * rendered in headless Chromium (playwright-core + the system chromium: a feature shows up with its
 * top-example tokens and SVG histogram, no console or page errors, a screenshot in the test
 * output), atomic export, and `hooklens sae dashboard`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { chromium } from 'playwright-core';
import { chromiumPath } from '../src/setup/chromium.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStories } from '../datasets/stories.js';
import { initBackend } from '../src/backend/index.js';
import { saeCommand } from '../src/cli/sae.js';
import { saeDashboardCommand } from '../src/cli/sae-dashboard.js';
import { loadModel } from '../src/models/load.js';
import { buildNeuronpediaBatches, exportDashboard, parseFeatureSelection, type NeuronpediaBatch, type NeuronpediaFeature } from '../src/sae/dashboard.js';
import { computeFeatureStats, tokensUsed, vocabStrings, type FeatureRecord } from '../src/sae/feature-stats.js';
import { FeatureStore, writeFeatureStore, type FeatureRunMeta } from '../src/sae/feature-store.js';
import { makeSaeConfig, Sae } from '../src/sae/index.js';
import { cliSuite, stderrLines, type CliResult } from './helpers/cli-run.js';
import { storiesGguf } from './helpers/fixtures.js';

const HOOK = 'blocks.2.hook_resid_post';
const CHROMIUM = chromiumPath();

let tmp: string;
let dbFile: string;
let records: FeatureRecord[];
let vocab: Map<number, string>;

beforeAll(async () => {
  await initBackend();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-dashboard-'));
  const model = await loadModel(storiesGguf());
  const sae = Sae.init(makeSaeConfig({ architecture: 'standard', dIn: 64, dSae: 40, hookName: HOOK }), 9);
  sae.b_enc.assign(tf.fill([40], -0.3));
  // The first stories of the shipped corpus, plus a prompt with HTML-special characters.
  const prompts = [...readStories().slice(0, 24).map((s) => s.tokens), model.encode('One day, a bird <flew> "home" & sang.')];
  const r = await computeFeatureStats(model, sae, prompts, { topK: 5, context: 4 });
  records = r.features;
  vocab = vocabStrings(model.tokenizer, tokensUsed(records));
  const meta: FeatureRunMeta = {
    model: storiesGguf(),
    sae: 'random-sae',
    hook: HOOK,
    hookLayer: 2,
    architecture: 'standard',
    dIn: 64,
    dSae: 40,
    corpus: 'datasets/stories/stories.jsonl (first 24) + 1 prompt',
    nPrompts: r.nPrompts,
    nTokens: r.nTokens,
    maxPromptTokens: r.maxPromptTokens,
    topK: 5,
    context: 4,
    quantileBands: 10,
    quantileExamples: 5,
    histBins: 40,
    correlationTopN: 5,
    seed: 0,
    histogramConvention: 'linear',
    logitConvention: r.logitConvention,
    correlations: 'pearson',
    createdAt: new Date(0).toISOString(),
  };
  dbFile = path.join(tmp, 'features.sqlite');
  writeFeatureStore(dbFile, { meta, features: records, vocab });
  sae.dispose();
  model.dispose();
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function isNumArray(v: unknown): boolean {
  return Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isFinite(x));
}
function isStrArray(v: unknown): boolean {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** The feature fields of SAEDashboard's NeuronpediaDashboardFeature.to_dict and Neuronpedia's Neuron row. */
const FEATURE_FIELDS: Record<string, (v: unknown) => boolean> = {
  modelId: (v) => typeof v === 'string',
  layer: (v) => typeof v === 'string',
  index: (v) => typeof v === 'string',
  feature_index: (v) => Number.isInteger(v),
  maxActApprox: (v) => typeof v === 'number',
  neuron_alignment_indices: isNumArray,
  neuron_alignment_values: isNumArray,
  neuron_alignment_l1: isNumArray,
  correlated_neurons_indices: isNumArray,
  correlated_neurons_l1: isNumArray,
  correlated_neurons_pearson: isNumArray,
  correlated_features_indices: isNumArray,
  correlated_features_pearson: isNumArray,
  correlated_features_l1: isNumArray,
  neg_str: isStrArray,
  neg_values: isNumArray,
  pos_str: isStrArray,
  pos_values: isNumArray,
  frac_nonzero: (v) => typeof v === 'number' && v >= 0 && v <= 1,
  freq_hist_data_bar_values: isNumArray,
  freq_hist_data_bar_heights: isNumArray,
  logits_hist_data_bar_heights: isNumArray,
  logits_hist_data_bar_values: isNumArray,
  n_prompts_total: (v) => Number.isInteger(v),
  n_tokens_in_prompt: (v) => Number.isInteger(v),
  dataset: (v) => typeof v === 'string',
  decoder_weights_dist: isNumArray,
  activations: Array.isArray,
};
const ACTIVATION_FIELDS: Record<string, (v: unknown) => boolean> = {
  bin_min: (v) => typeof v === 'number',
  bin_max: (v) => typeof v === 'number',
  bin_contains: (v) => typeof v === 'number',
  tokens: isStrArray,
  values: isNumArray,
  maxValue: (v) => typeof v === 'number',
  maxValueTokenIndex: (v) => Number.isInteger(v),
  minValue: (v) => typeof v === 'number',
  dataIndex: (v) => typeof v === 'string',
  qualifyingTokenIndex: (v) => Number.isInteger(v),
};

describe('Neuronpedia JSON', () => {
  it('batches carry SAEDashboard batch keys and every feature/activation field with the right type', () => {
    const store = FeatureStore.open(dbFile);
    const batches: NeuronpediaBatch[] = buildNeuronpediaBatches(store, { batchSize: 16 });
    store.close();
    expect(batches).toHaveLength(3);
    expect(batches.map((b) => b.features.length)).toEqual([16, 16, 8]);
    for (const b of batches) {
      expect(Object.keys(b)).toEqual(['model_id', 'layer', 'sae_set', 'features']);
      expect(b).toMatchObject({ model_id: 'stories260k', layer: 2, sae_set: 'hooklens' });
    }
    const feats = batches.flatMap((b) => b.features);
    expect(feats.map((f) => f.feature_index)).toEqual(records.map((r) => r.id));
    for (const f of feats) {
      for (const [k, ok] of Object.entries(FEATURE_FIELDS)) expect(ok((f as unknown as Record<string, unknown>)[k]), `feature ${f.feature_index}: ${k}`).toBe(true);
      const rec = records[f.feature_index];
      expect(f.layer).toBe('2-hooklens');
      expect(f.index).toBe(String(rec.id));
      expect(f.frac_nonzero).toBe(rec.density);
      expect(f.freq_hist_data_bar_heights.reduce((a, b) => a + b, 0)).toBe(rec.nActive);
      expect(f.freq_hist_data_bar_values).toHaveLength(f.freq_hist_data_bar_heights.length);
      expect(f.logits_hist_data_bar_values).toHaveLength(f.logits_hist_data_bar_heights.length);
      expect(f.logits_hist_data_bar_heights.reduce((a, b) => a + b, 0)).toBe(512);
      expect(f.pos_str).toHaveLength(10);
      expect(f.neg_values).toHaveLength(10);
      expect(f.pos_values[0]).toBeGreaterThanOrEqual(f.pos_values[9]);
      expect(f.correlated_features_pearson).toHaveLength(f.correlated_features_indices.length);
      expect(f.activations).toHaveLength(rec.top.length + rec.quantiles.length);
      f.activations.forEach((a, i) => {
        for (const [k, ok] of Object.entries(ACTIVATION_FIELDS)) expect(ok((a as unknown as Record<string, unknown>)[k]), `feature ${f.feature_index} activation ${i}: ${k}`).toBe(true);
        expect(a.values).toHaveLength(a.tokens.length);
        expect(a.maxValue).toBe(Math.max(...a.values));
        expect(a.values[a.maxValueTokenIndex]).toBe(a.maxValue);
        expect(a.minValue).toBe(Math.min(...a.values));
        if (i < rec.top.length) expect([a.bin_min, a.bin_contains]).toEqual([-1, -1]);
        else {
          expect(a.bin_contains).toBeGreaterThan(0);
          expect(a.values[a.qualifyingTokenIndex]).toBeGreaterThanOrEqual(a.bin_min);
        }
      });
      if (rec.top.length) {
        // The top example's tokens are the stored window, as strings.
        expect(f.activations[0].tokens).toEqual(rec.top[0].tokens.map((t) => vocab.get(t)));
        expect(f.activations[0].values[f.activations[0].qualifyingTokenIndex]).toBeCloseTo(rec.maxAct, 5);
      }
    }
  });

  it('--features selections: ranges, lists, all; unknown ids are one-line errors', () => {
    const ids = Array.from({ length: 40 }, (_, i) => i);
    expect(parseFeatureSelection('all', ids)).toEqual(ids);
    expect(parseFeatureSelection('3-5,1,5', ids)).toEqual([1, 3, 4, 5]);
    expect(() => parseFeatureSelection('38-41', ids)).toThrow(/feature 40 is not in the store/);
    expect(() => parseFeatureSelection('x', ids)).toThrow(/'x' is not a feature id or range/);
  });
});

describe('static HTML dashboard in headless Chromium', () => {
  it('renders a searched feature: top-example tokens, SVG histogram; no console or page errors', async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: 'npm test' installs it in its pretest step when it may (see scripts/pretest.ts); or set HOOKLENS_CHROMIUM`);
    }
    const out = path.join(tmp, 'dash');
    const store = FeatureStore.open(dbFile);
    const res = exportDashboard(store, out, { batchSize: 16 });
    store.close();
    expect(res).toMatchObject({ batches: 3, features: 40 });
    expect(fs.readdirSync(out).sort()).toEqual(['.hooklens-dashboard', 'features', 'index.html']);
    expect(fs.readdirSync(path.join(out, 'features')).sort()).toEqual(['batch-0.json', 'batch-1.json', 'batch-2.json']);
    const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+stylesheet|https?:\/\/(?!www\.w3\.org)/);
    // The page embeds exactly the features the batch files hold.
    const batchFeatures = [0, 1, 2].flatMap((i) => (JSON.parse(fs.readFileSync(path.join(out, 'features', `batch-${i}.json`), 'utf8')) as NeuronpediaBatch).features);
    const embedded = JSON.parse(/<script type="application\/json" id="hooklens-data">([\s\S]*?)<\/script>/.exec(html)![1]) as { features: NeuronpediaFeature[] };
    expect(embedded.features).toEqual(batchFeatures);

    // A live feature with several top examples, not the first one the page shows by default.
    const target = [...records].filter((r) => r.id > 0 && r.top.length >= 3).sort((a, b) => b.maxAct - a.maxAct)[0];
    const feature = batchFeatures[target.id];
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    const errors: string[] = [];
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
      await page.goto(pathToFileURL(path.join(out, 'index.html')).href);
      await page.waitForSelector('#feature-title');
      expect(await page.locator('#feature-list li').count()).toBe(40);

      await page.fill('#search', String(target.id));
      await page.press('#search', 'Enter');
      await expect.poll(() => page.textContent('#feature-title')).toBe(`Feature ${target.id}`);
      expect(await page.locator('#feature-list li.selected').getAttribute('data-feature')).toBe(String(target.id));

      // Top examples: one row per stored example, tokens as highlighted spans with value tooltips.
      const rows = page.locator('#top-examples .example');
      expect(await rows.count()).toBe(target.top.length);
      await expect.poll(() => rows.first().isVisible()).toBe(true);
      const first = rows.first().locator('.tok');
      const shown = await first.allTextContents();
      const want = feature.activations[0].tokens.map((s) => s.replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5'));
      expect(shown).toEqual(want);
      const hit = rows.first().locator('.tok.hit');
      expect(await hit.count()).toBe(1);
      expect(await hit.getAttribute('title')).toContain(String(Math.round(target.maxAct * 1000) / 1000));
      expect(await hit.evaluate((e) => getComputedStyle(e).backgroundColor)).toMatch(/^rgba?\(230, 97, 0(, 1)?\)$/);

      // Histograms drawn as SVG bars, one per bin.
      const hist = page.locator('svg#act-hist');
      expect(await hist.isVisible()).toBe(true);
      expect(await hist.locator('rect.bar').count()).toBe(feature.freq_hist_data_bar_heights.length);
      expect(await page.locator('svg#logit-hist rect.bar').count()).toBe(40);
      expect(await page.locator('#logit-lists table.pos tr').count()).toBe(10);

      // Text search filters the list; an unknown id says so.
      await page.fill('#search', ' ball');
      await page.press('#search', 'Enter');
      const listed = await page.locator('#feature-list li').count();
      expect(listed).toBeGreaterThan(0);
      expect(listed).toBeLessThanOrEqual(40);
      await page.fill('#search', '999');
      await page.press('#search', 'Enter');
      await expect.poll(() => page.textContent('#not-found')).toBe('No feature 999 in this dashboard.');

      await page.fill('#search', String(target.id));
      await page.press('#search', 'Enter');
      await page.waitForSelector('#top-examples .example');
      const shotDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-dashboard-shot-'));
      const shot = path.join(shotDir, `feature-${target.id}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
      console.log(`dashboard screenshot: ${shot}`);
    } finally {
      await browser.close();
    }
    expect(errors).toEqual([]);
  });

  it('export is atomic: a foreign non-empty directory is refused and left as it was; a re-export replaces its own', () => {
    const store = FeatureStore.open(dbFile);
    try {
      const foreign = path.join(tmp, 'foreign');
      fs.mkdirSync(foreign);
      fs.writeFileSync(path.join(foreign, 'keep.txt'), 'mine');
      expect(() => exportDashboard(store, foreign)).toThrow(/foreign: exists, is not empty and is not a hooklens dashboard/);
      expect(fs.readdirSync(foreign)).toEqual(['keep.txt']);
      const out = path.join(tmp, 'again');
      exportDashboard(store, out, { features: [1, 2, 3] });
      exportDashboard(store, out, { features: [4], modelId: 'my-model', saeSet: 'res-x' });
      expect(fs.readdirSync(path.join(out, 'features'))).toEqual(['batch-0.json']);
      const b = JSON.parse(fs.readFileSync(path.join(out, 'features', 'batch-0.json'), 'utf8')) as NeuronpediaBatch;
      expect(b).toMatchObject({ model_id: 'my-model', sae_set: 'res-x' });
      expect(b.features.map((f) => [f.feature_index, f.modelId, f.layer])).toEqual([[4, 'my-model', '2-res-x']]);
      expect(fs.readdirSync(tmp).filter((f) => f.startsWith('.'))).toEqual([]);
    } finally {
      store.close();
    }
  });
});

const { caseDir, cli } = cliSuite('hooklens-sae-dashboard-');

function info(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 2000)}\n--- stderr ---\n${r.stderr.slice(0, 2000)}`;
}

describe.concurrent('hooklens sae dashboard', () => {
  it('writes index.html and batch files for a feature range (--json)', async () => {
    const out = path.join(caseDir('ok'), 'dash');
    const r = await cli(['sae', 'dashboard', '--db', dbFile, '--out', out, '--features', '0-9,20', '--batch-size', '4', '--json']);
    expect(r.code, info(r)).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual({ out, index: `${out}/index.html`, batches: 3, features: 11 });
    expect(fs.readdirSync(path.join(out, 'features')).sort()).toEqual(['batch-0.json', 'batch-1.json', 'batch-2.json']);
  });

  it('one-line errors and no output: bad --features (spawned), missing store (in process); --help', async () => {
    const dir = caseDir('bad');
    const out = path.join(dir, 'dash');
    const r = await cli(['sae', 'dashboard', '--db', dbFile, '--out', out, '--features', '0-400']);
    expect(r.code, info(r)).toBe(1);
    const lines = stderrLines(r.stderr);
    expect(lines, info(r)).toHaveLength(1);
    expect(lines[0]).toMatch(/^hooklens sae: error: --features: feature 40 is not in the store/);
    await expect(saeCommand.run(['dashboard', '--db', path.join(dir, 'nope.sqlite'), '--out', out])).rejects.toThrow(/^\S*nope\.sqlite: feature store does not exist$/);
    await expect(saeCommand.run(['dashboard', '--db', dbFile])).rejects.toThrow(/^sae dashboard: missing --out$/);
    expect(fs.existsSync(out)).toBe(false);
    // `hooklens sae <sub> --help` prints the subcommand's usage.
    expect(saeDashboardCommand.usage).toMatch(/hooklens sae dashboard --db FILE\.sqlite --out DIR \[--features 0-99\|all\]/);
  });
});

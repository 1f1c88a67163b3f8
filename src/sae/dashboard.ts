/**
 * Dashboards from a feature store: Neuronpedia-compatible feature JSON in batch files, and a
 * self-contained static HTML page that renders the same JSON (embedded in the page).
 *
 * JSON format. Batch files follow SAEDashboard's Neuronpedia export (jbloomAus/SAEDashboard,
 * sae_dashboard/neuronpedia/neuronpedia_dashboard.py: NeuronpediaDashboardBatch.to_dict, written
 * as `batch-{n}.json` by neuronpedia_runner.py): `{model_id, layer, sae_set, features: [...]}`,
 * each feature with NeuronpediaDashboardFeature.to_dict's keys — feature_index,
 * neuron_alignment_*, correlated_neurons_*, correlated_features_indices|pearson|l1 (l1 holds the
 * activation cosine similarity, as SAEDashboard's converter fills it), neg_str, neg_values,
 * pos_str, pos_values, frac_nonzero, freq_hist_data_bar_values|heights,
 * logits_hist_data_bar_heights|values, n_prompts_total, n_tokens_in_prompt, dataset,
 * decoder_weights_dist, activations — and each activation with NeuronpediaDashboardActivation's
 * bin_min, bin_max, bin_contains (top examples: −1, max, −1; quantile bands: lo, hi, fraction of
 * active tokens), tokens, values. Neuronpedia's own database rows (apps/webapp/prisma/
 * schema.prisma, models Neuron and Activation) add modelId, layer (source id, e.g. "2-hooklens"),
 * index (string) and maxActApprox per feature, and maxValue, maxValueTokenIndex, minValue,
 * dataIndex, qualifyingTokenIndex per activation; those are included too.
 * Unknown to either, under `hooklens`: density, mean activations, prompt/position of each example.
 * Values are rounded to 6 significant digits (SAEDashboard rounds to 3 decimals).
 *
 * The HTML page draws its bars as hand-built SVG in the browser from the embedded JSON: the page
 * stays one small file with no runtime dependency, and every chart comes from the same JSON the
 * batch files hold (vega/vega-lite would mean either inlining their ~1 MB runtime or baking
 * static SVG that no longer reads the JSON).
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeDirAtomic } from '../io/atomic.js';
import { fail, HooklensError } from '../errors.js';
import type { Example, FeatureRecord, Histogram } from './feature-stats.js';
import type { FeatureRunMeta, FeatureStore } from './feature-store.js';

export interface NeuronpediaActivation {
  bin_min: number;
  bin_max: number;
  bin_contains: number;
  tokens: string[];
  values: number[];
  maxValue: number;
  maxValueTokenIndex: number;
  minValue: number;
  dataIndex: string;
  qualifyingTokenIndex: number;
  hooklens: { kind: 'top' | 'quantile'; prompt: number; pos: number; start: number; act: number; token_ids: number[] };
}

export interface NeuronpediaFeature {
  modelId: string;
  layer: string;
  index: string;
  feature_index: number;
  maxActApprox: number;
  neuron_alignment_indices: number[];
  neuron_alignment_values: number[];
  neuron_alignment_l1: number[];
  correlated_neurons_indices: number[];
  correlated_neurons_l1: number[];
  correlated_neurons_pearson: number[];
  correlated_features_indices: number[];
  correlated_features_pearson: number[];
  correlated_features_l1: number[];
  neg_str: string[];
  neg_values: number[];
  pos_str: string[];
  pos_values: number[];
  frac_nonzero: number;
  freq_hist_data_bar_values: number[];
  freq_hist_data_bar_heights: number[];
  logits_hist_data_bar_heights: number[];
  logits_hist_data_bar_values: number[];
  n_prompts_total: number;
  n_tokens_in_prompt: number;
  dataset: string;
  decoder_weights_dist: number[];
  activations: NeuronpediaActivation[];
  hooklens: { density: number; n_active: number; mean_act: number; mean_active: number; max_act: number; hist_edges: number[] };
}

export interface NeuronpediaBatch {
  model_id: string;
  layer: number;
  sae_set: string;
  features: NeuronpediaFeature[];
}

export interface DashboardIds {
  /** Neuronpedia model id (default: the model file name, lower-case, without extension). */
  modelId?: string;
  /** Neuronpedia SAE set name (default "hooklens"); the source id is `${layer}-${saeSet}`. */
  saeSet?: string;
}

function round(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(6)) : x;
}

function centres(h: Histogram): number[] {
  return h.counts.map((_, i) => round((h.edges[i] + h.edges[i + 1]) / 2));
}

export function defaultModelId(model: string): string {
  const base = path.basename(model.replace(/[\\/]+$/, '')).replace(/\.(gguf|safetensors)$/i, '');
  return base.toLowerCase().replace(/[^a-z0-9._-]+/g, '-') || 'model';
}

function resolveIds(meta: FeatureRunMeta, ids: DashboardIds): { modelId: string; saeSet: string; layer: number; sourceId: string } {
  const modelId = ids.modelId ?? defaultModelId(meta.model);
  const saeSet = ids.saeSet ?? 'hooklens';
  const layer = meta.hookLayer ?? 0;
  return { modelId, saeSet, layer, sourceId: `${layer}-${saeSet}` };
}

function activation(e: Example, kind: 'top' | 'quantile', bin: [number, number, number], vocab: ReadonlyMap<number, string>): NeuronpediaActivation {
  let maxI = 0;
  let minV = Infinity;
  e.acts.forEach((v, i) => {
    if (v > e.acts[maxI]) maxI = i;
    minV = Math.min(minV, v);
  });
  return {
    bin_min: round(bin[0]),
    bin_max: round(bin[1]),
    bin_contains: round(bin[2]),
    tokens: e.tokens.map((t) => vocab.get(t) ?? `<${t}>`),
    values: e.acts.map(round),
    maxValue: round(e.acts[maxI] ?? 0),
    maxValueTokenIndex: maxI,
    minValue: round(Number.isFinite(minV) ? minV : 0),
    dataIndex: String(e.prompt),
    qualifyingTokenIndex: e.pos - e.start,
    hooklens: { kind, prompt: e.prompt, pos: e.pos, start: e.start, act: round(e.act), token_ids: e.tokens },
  };
}

/** One feature in Neuronpedia / SAEDashboard JSON (see the module comment for the sources). */
export function neuronpediaFeature(rec: FeatureRecord, meta: FeatureRunMeta, vocab: ReadonlyMap<number, string>, ids: DashboardIds = {}): NeuronpediaFeature {
  const { modelId, sourceId } = resolveIds(meta, ids);
  const str = (t: number) => vocab.get(t) ?? `<${t}>`;
  const acts: NeuronpediaActivation[] = rec.top.map((e) => activation(e, 'top', [-1, rec.maxAct, -1], vocab));
  const bands = new Map(rec.bands.map((b) => [b.band, b]));
  for (const e of rec.quantiles) {
    const b = bands.get(e.band)!;
    acts.push(activation(e, 'quantile', [b.lo, b.hi, rec.nActive > 0 ? b.count / rec.nActive : 0], vocab));
  }
  const lg = rec.logits;
  return {
    modelId,
    layer: sourceId,
    index: String(rec.id),
    feature_index: rec.id,
    maxActApprox: round(rec.maxAct),
    neuron_alignment_indices: [],
    neuron_alignment_values: [],
    neuron_alignment_l1: [],
    correlated_neurons_indices: [],
    correlated_neurons_l1: [],
    correlated_neurons_pearson: [],
    correlated_features_indices: rec.correlations.map((c) => c.feature),
    correlated_features_pearson: rec.correlations.map((c) => round(c.pearson)),
    correlated_features_l1: rec.correlations.map((c) => round(c.cosine)),
    neg_str: lg ? lg.neg.map((l) => str(l.token)) : [],
    neg_values: lg ? lg.neg.map((l) => round(l.value)) : [],
    pos_str: lg ? lg.pos.map((l) => str(l.token)) : [],
    pos_values: lg ? lg.pos.map((l) => round(l.value)) : [],
    frac_nonzero: rec.density,
    freq_hist_data_bar_values: centres(rec.actHist),
    freq_hist_data_bar_heights: rec.actHist.counts,
    logits_hist_data_bar_heights: lg ? lg.hist.counts : [],
    logits_hist_data_bar_values: lg ? centres(lg.hist) : [],
    n_prompts_total: meta.nPrompts,
    n_tokens_in_prompt: meta.maxPromptTokens,
    dataset: meta.corpus,
    decoder_weights_dist: [],
    activations: acts,
    hooklens: {
      density: rec.density,
      n_active: rec.nActive,
      mean_act: round(rec.meanAct),
      mean_active: round(rec.meanActive),
      max_act: rec.maxAct,
      hist_edges: rec.actHist.edges.map(round),
    },
  };
}

/** Parse "all" or a list like "0-99,120,200-210" against the stored ids. */
export function parseFeatureSelection(spec: string, available: readonly number[]): number[] {
  const have = new Set(available);
  if (spec.trim() === 'all') return [...available];
  const out = new Set<number>();
  for (const part of spec.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) fail(`--features: '${part}' is not a feature id or range (e.g. 0-99,120 or all)`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) fail(`--features: range '${part}' runs backwards`);
    for (let i = a; i <= b; i++) {
      if (!have.has(i)) fail(`--features: feature ${i} is not in the store (ids ${available.length ? `0-${available[available.length - 1]}` : 'none'})`);
      out.add(i);
    }
  }
  if (out.size === 0) fail('--features: no features selected');
  return [...out].sort((x, y) => x - y);
}

export interface DashboardOptions extends DashboardIds {
  /** Feature ids to export (default: all). */
  features?: readonly number[];
  /** Features per batch file (default 128). */
  batchSize?: number;
  title?: string;
}

/** The batches of Neuronpedia JSON for the chosen features. */
export function buildNeuronpediaBatches(store: FeatureStore, opts: DashboardOptions = {}): NeuronpediaBatch[] {
  const meta = store.meta();
  const { modelId, saeSet, layer } = resolveIds(meta, opts);
  const ids = opts.features ? [...opts.features] : store.featureIds();
  const size = opts.batchSize ?? 128;
  if (!Number.isInteger(size) || size < 1) fail(`dashboard: batch size must be a positive integer, got ${size}`);
  const batches: NeuronpediaBatch[] = [];
  for (let i = 0; i < ids.length; i += size) {
    const recs = ids.slice(i, i + size).map((id) => {
      const r = store.getFeature(id);
      if (!r) fail(`dashboard: feature ${id} is not in ${store.file}`);
      return r;
    });
    const tokenIds = new Set<number>();
    for (const r of recs) {
      for (const e of [...r.top, ...r.quantiles]) for (const t of e.tokens) tokenIds.add(t);
      if (r.logits) for (const l of [...r.logits.pos, ...r.logits.neg]) tokenIds.add(l.token);
    }
    const vocab = store.vocab(tokenIds);
    batches.push({ model_id: modelId, layer, sae_set: saeSet, features: recs.map((r) => neuronpediaFeature(r, meta, vocab, opts)) });
  }
  return batches;
}

/** JSON that is safe inside <script type="application/json"> (no "</script>", no "<!--"). */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** The static dashboard page: one file, inline CSS and JS, data embedded as JSON. */
export function dashboardHtml(meta: FeatureRunMeta, batches: readonly NeuronpediaBatch[], title?: string): string {
  const data = { meta, features: batches.flatMap((b) => b.features) };
  const heading = title ?? `${defaultModelId(meta.model)} · ${meta.hook} · SAE ${path.basename(meta.sae)}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hooklens">
<link rel="icon" href="data:,">
<title>${escapeHtml(heading)}</title>
<style>${CSS}</style>
</head>
<body>
<header>
  <h1>${escapeHtml(heading)}</h1>
  <form id="search-form" autocomplete="off">
    <input id="search" type="search" placeholder="feature id, or text in top examples" aria-label="search features">
    <button type="submit">Go</button>
  </form>
  <div id="run-info"></div>
</header>
<main>
  <nav><div id="list-info"></div><ul id="feature-list"></ul></nav>
  <section id="feature"><p class="muted">Select a feature.</p></section>
</main>
<script type="application/json" id="hooklens-data">${scriptJson(data)}</script>
<script>${JS}</script>
</body>
</html>
`;
}

const CSS = `
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;background:#fafafa}
header{display:flex;flex-wrap:wrap;align-items:center;gap:12px;padding:10px 16px;background:#fff;border-bottom:1px solid #ddd}
header h1{font-size:16px;margin:0 12px 0 0}
#search{width:260px;padding:4px 8px}
#run-info{color:#666;font-size:12px}
main{display:flex;height:calc(100vh - 56px)}
nav{width:230px;overflow-y:auto;border-right:1px solid #ddd;background:#fff}
#list-info{padding:6px 10px;color:#666;font-size:12px;border-bottom:1px solid #eee}
#feature-list{list-style:none;margin:0;padding:0}
#feature-list li{padding:4px 10px;cursor:pointer;display:flex;justify-content:space-between;font-variant-numeric:tabular-nums}
#feature-list li:hover{background:#f2f2f2}
#feature-list li.selected{background:#ffe3c4}
#feature-list li .sub{color:#888;font-size:12px}
#feature{flex:1;overflow-y:auto;padding:12px 20px}
h2{margin:4px 0 8px}
h3{margin:18px 0 6px;font-size:14px;text-transform:uppercase;letter-spacing:.04em;color:#555}
.muted{color:#888}
.stats span{margin-right:18px}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table.logits{border-collapse:collapse;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table.logits td{padding:1px 6px}
table.logits td.v{text-align:right;font-variant-numeric:tabular-nums}
table.logits.pos td.v{color:#1a5fb4}
table.logits.neg td.v{color:#c01c28}
.example{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;padding:3px 6px;margin:2px 0;background:#fff;border:1px solid #eee;white-space:pre-wrap;word-break:break-word}
.example .act{display:inline-block;width:64px;color:#666;font-variant-numeric:tabular-nums}
.tok{border-radius:2px;padding:0 1px}
.tok.hit{outline:1px solid #e66100}
.band-title{margin:10px 0 2px;color:#555;font-size:12px}
svg{background:#fff;border:1px solid #eee}
svg .bar{fill:#e66100}
svg .bar.neg{fill:#c01c28}
svg .bar.pos{fill:#1a5fb4}
svg text{font-size:10px;fill:#555}
a.corr{margin-right:12px;cursor:pointer;color:#1a5fb4}
`;

/* The page script: plain ES2017, no dependencies. */
const JS = `
(function(){
'use strict';
var data = JSON.parse(document.getElementById('hooklens-data').textContent);
var feats = data.features, meta = data.meta;
var byIndex = new Map(feats.map(function(f){ return [f.feature_index, f]; }));
var listEl = document.getElementById('feature-list');
var listInfo = document.getElementById('list-info');
var view = document.getElementById('feature');
var search = document.getElementById('search');
var SVGNS = 'http://www.w3.org/2000/svg';
document.getElementById('run-info').textContent = meta.nPrompts + ' prompts · ' + meta.nTokens + ' tokens · d_sae ' + meta.dSae + ' · ' + feats.length + ' features exported';

function el(tag, attrs, text){ var e = document.createElement(tag); if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]); if (text != null) e.textContent = text; return e; }
function fmt(x){ if (x == null || !isFinite(x)) return String(x); var a = Math.abs(x); return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(2) : (Math.round(x * 1000) / 1000).toString(); }
function pct(x){ return (x * 100).toPrecision(3) + '%'; }
function visible(s){ return s.replace(/\\n/g, '\\u21b5').replace(/\\t/g, '\\u21e5'); }

function renderList(items){
  listEl.textContent = '';
  items.forEach(function(f){
    var li = el('li', { 'data-feature': String(f.feature_index) });
    li.appendChild(el('span', null, '#' + f.feature_index));
    li.appendChild(el('span', { 'class': 'sub' }, f.frac_nonzero > 0 ? pct(f.frac_nonzero) + ' · ' + fmt(f.maxActApprox) : 'dead'));
    li.addEventListener('click', function(){ show(f.feature_index); });
    listEl.appendChild(li);
  });
  listInfo.textContent = items.length + ' of ' + feats.length + ' features';
}

/** Bars from a Neuronpedia histogram (heights + bin-centre values) as an SVG element. */
function histogram(id, heights, values, cls){
  var W = 360, H = 120, pad = 18;
  var svg = document.createElementNS(SVGNS, 'svg');
  svg.setAttribute('id', id); svg.setAttribute('width', W); svg.setAttribute('height', H); svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('role', 'img');
  if (!heights.length) { var t = document.createElementNS(SVGNS, 'text'); t.setAttribute('x', 10); t.setAttribute('y', H / 2); t.textContent = 'no data'; svg.appendChild(t); return svg; }
  var max = Math.max.apply(null, heights) || 1, n = heights.length, bw = (W - 2 * pad) / n;
  heights.forEach(function(h, i){
    var r = document.createElementNS(SVGNS, 'rect');
    var bh = (H - 2 * pad) * h / max;
    r.setAttribute('x', (pad + i * bw).toFixed(2)); r.setAttribute('y', (H - pad - bh).toFixed(2));
    r.setAttribute('width', Math.max(bw - 1, 0.5).toFixed(2)); r.setAttribute('height', bh.toFixed(2));
    r.setAttribute('class', 'bar' + (cls ? ' ' + cls(values[i]) : ''));
    var tt = document.createElementNS(SVGNS, 'title'); tt.textContent = fmt(values[i]) + ': ' + h; r.appendChild(tt);
    svg.appendChild(r);
  });
  [[0, 'start'], [n - 1, 'end']].forEach(function(p){
    var t = document.createElementNS(SVGNS, 'text');
    t.setAttribute('x', p[1] === 'start' ? pad : W - pad); t.setAttribute('y', H - 4); t.setAttribute('text-anchor', p[1]);
    t.textContent = fmt(values[p[0]]); svg.appendChild(t);
  });
  var top = document.createElementNS(SVGNS, 'text'); top.setAttribute('x', pad); top.setAttribute('y', 12); top.textContent = 'max ' + max; svg.appendChild(top);
  return svg;
}

function logitTable(cls, strs, vals){
  var t = el('table', { 'class': 'logits ' + cls });
  strs.forEach(function(s, i){ var tr = el('tr'); tr.appendChild(el('td', null, JSON.stringify(s))); tr.appendChild(el('td', { 'class': 'v' }, fmt(vals[i]))); t.appendChild(tr); });
  return t;
}

function example(a, scale){
  var div = el('div', { 'class': 'example' });
  var q = a.qualifyingTokenIndex;
  div.appendChild(el('span', { 'class': 'act' }, fmt(a.values[q])));
  a.tokens.forEach(function(s, i){
    var v = a.values[i];
    var alpha = scale > 0 ? Math.max(0, Math.min(1, v / scale)) : 0;
    var span = el('span', { 'class': 'tok' + (i === q ? ' hit' : ''), title: JSON.stringify(s) + ': ' + fmt(v) }, visible(s));
    if (alpha > 0) span.style.background = 'rgba(230,97,0,' + alpha.toFixed(3) + ')';
    div.appendChild(span);
  });
  return div;
}

function show(id){
  var f = byIndex.get(id);
  view.textContent = '';
  Array.prototype.forEach.call(listEl.children, function(li){ li.classList.toggle('selected', li.getAttribute('data-feature') === String(id)); });
  if (!f) { view.appendChild(el('p', { id: 'not-found' }, 'No feature ' + id + ' in this dashboard.')); return; }
  if (location.hash !== '#' + id) history.replaceState(null, '', '#' + id);
  view.appendChild(el('h2', { id: 'feature-title' }, 'Feature ' + f.feature_index));
  var st = el('div', { 'class': 'stats' });
  st.appendChild(el('span', null, 'density ' + pct(f.frac_nonzero)));
  st.appendChild(el('span', null, 'max ' + fmt(f.maxActApprox)));
  st.appendChild(el('span', null, 'mean (active) ' + fmt(f.hooklens.mean_active)));
  st.appendChild(el('span', null, 'active tokens ' + f.hooklens.n_active));
  view.appendChild(st);
  var row = el('div', { 'class': 'row' });
  var h1 = el('div'); h1.appendChild(el('h3', null, 'Activation density')); h1.appendChild(histogram('act-hist', f.freq_hist_data_bar_heights, f.freq_hist_data_bar_values)); row.appendChild(h1);
  var h2 = el('div'); h2.appendChild(el('h3', null, 'Logit effects'));
  h2.appendChild(histogram('logit-hist', f.logits_hist_data_bar_heights, f.logits_hist_data_bar_values, function(v){ return v < 0 ? 'neg' : 'pos'; })); row.appendChild(h2);
  view.appendChild(row);
  var lrow = el('div', { 'class': 'row', id: 'logit-lists' });
  var p = el('div'); p.appendChild(el('h3', null, 'Positive logits')); p.appendChild(logitTable('pos', f.pos_str, f.pos_values)); lrow.appendChild(p);
  var n = el('div'); n.appendChild(el('h3', null, 'Negative logits')); n.appendChild(logitTable('neg', f.neg_str, f.neg_values)); lrow.appendChild(n);
  view.appendChild(lrow);
  if (f.correlated_features_indices.length) {
    var c = el('div', { id: 'correlated' }); c.appendChild(el('h3', null, 'Correlated features (Pearson)'));
    f.correlated_features_indices.forEach(function(j, i){
      var a = el('a', { 'class': 'corr', href: '#' + j }, '#' + j + ' (' + fmt(f.correlated_features_pearson[i]) + ')');
      a.addEventListener('click', function(ev){ ev.preventDefault(); show(j); });
      c.appendChild(a);
    });
    view.appendChild(c);
  }
  var top = f.activations.filter(function(a){ return a.hooklens.kind === 'top'; });
  var scale = f.maxActApprox;
  var tdiv = el('div', { id: 'top-examples' }); tdiv.appendChild(el('h3', null, 'Top activations'));
  if (!top.length) tdiv.appendChild(el('p', { 'class': 'muted' }, 'This feature never fired on the corpus.'));
  top.forEach(function(a){ tdiv.appendChild(example(a, scale)); });
  view.appendChild(tdiv);
  var quant = f.activations.filter(function(a){ return a.hooklens.kind === 'quantile'; });
  if (quant.length) {
    var qdiv = el('div', { id: 'quantile-examples' }); qdiv.appendChild(el('h3', null, 'Quantile examples'));
    var last = null;
    quant.forEach(function(a){
      var key = a.bin_min + ':' + a.bin_max;
      if (key !== last) { qdiv.appendChild(el('div', { 'class': 'band-title' }, 'INTERVAL ' + fmt(a.bin_min) + ' – ' + fmt(a.bin_max) + ', CONTAINS ' + pct(a.bin_contains))); last = key; }
      qdiv.appendChild(example(a, scale));
    });
    view.appendChild(qdiv);
  }
}

function runSearch(){
  var q = search.value.trim();
  if (q === '') { renderList(feats); return; }
  if (/^\\d+$/.test(q)) { renderList(feats); show(Number(q)); return; }
  var lq = q.toLowerCase();
  var hits = feats.filter(function(f){ return f.activations.some(function(a){ return a.hooklens.kind === 'top' && a.tokens.join('').toLowerCase().indexOf(lq) >= 0; }); });
  renderList(hits);
  if (hits.length) show(hits[0].feature_index); else { view.textContent = ''; view.appendChild(el('p', { id: 'not-found' }, 'No top example contains ' + JSON.stringify(q) + '.')); }
}

document.getElementById('search-form').addEventListener('submit', function(ev){ ev.preventDefault(); runSearch(); });
window.addEventListener('hashchange', function(){ var m = /^#(\\d+)$/.exec(location.hash); if (m) show(Number(m[1])); });
renderList(feats);
var m = /^#(\\d+)$/.exec(location.hash);
if (m) show(Number(m[1])); else if (feats.length) show(feats[0].feature_index);
})();
`;

/** Marker file that identifies a directory written by exportDashboard (safe to replace). */
const MARKER = '.hooklens-dashboard';

/**
 * Write DIR/index.html and DIR/features/batch-{n}.json (n from 0). The directory is built beside
 * DIR under a temp name and swapped in whole; an existing DIR is replaced only when it is empty
 * or an earlier dashboard (has the marker file).
 */
export function exportDashboard(store: FeatureStore, outDir: string, opts: DashboardOptions = {}): { dir: string; batches: number; features: number } {
  const target = path.resolve(outDir);
  if (fs.existsSync(target)) {
    if (!fs.statSync(target).isDirectory()) fail(`${outDir}: exists and is not a directory`);
    const entries = fs.readdirSync(target);
    if (entries.length > 0 && !entries.includes(MARKER)) fail(`${outDir}: exists, is not empty and is not a hooklens dashboard; choose another --out`);
  }
  const batches = buildNeuronpediaBatches(store, opts);
  const html = dashboardHtml(store.meta(), batches, opts.title);
  const parent = path.dirname(target);
  if (!fs.existsSync(parent)) fail(`${outDir}: parent directory ${parent} does not exist`);
  try {
    writeDirAtomic(target, (tmp) => {
      fs.mkdirSync(path.join(tmp, 'features'));
      batches.forEach((b, i) => fs.writeFileSync(path.join(tmp, 'features', `batch-${i}.json`), JSON.stringify(b)));
      fs.writeFileSync(path.join(tmp, 'index.html'), html);
      fs.writeFileSync(path.join(tmp, MARKER), 'written by hooklens sae dashboard\n');
    });
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${outDir}: cannot write dashboard (${(e as NodeJS.ErrnoException).code ?? String(e).split('\n')[0]})`);
  }
  return { dir: target, batches: batches.length, features: batches.reduce((s, b) => s + b.features.length, 0) };
}

/**
 * Self-contained HTML report for a patching run: one static SVG heatmap per grid (rendered at
 * build time with vega-lite → vega in Node, no browser), laid out one row per component with the
 * methods side by side (activation | atp | relp), plus an agreement table and run metadata.
 *
 * The output has inline CSS only: no scripts, fonts, or external resources.
 */
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { fail } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { flattenScores } from './stats.js';
import type { Method, PatchingGrid, PatchingReportData } from './types.js';

/** Column order of the methods within a component row. */
const METHOD_ORDER: readonly Method[] = ['activation', 'atp', 'relp'];

/** Escape text for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** Fixed-point with `digits` decimals; non-finite (NaN, ±∞) → "n/a"; never "-0.000". */
function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return 'n/a';
  const s = x.toFixed(digits);
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s;
}

/** Heatmap title: `${component} · ${method}` plus ` [rules]` for RelP rules and AtP* variant options. */
export function gridTitle(grid: PatchingGrid): string {
  const opts = [...grid.rules, ...(grid.variant ?? [])];
  const rules = opts.length > 0 ? ` [${opts.join(', ')}]` : '';
  return `${grid.component} · ${grid.method}${rules}`;
}

/** Label of index `i` on an axis named `axis`: positions get their token when known ("3: ▁park"). */
function axisLabel(axis: string, i: number, tokenLabels: readonly string[]): string {
  if (axis === 'pos') {
    const tok = tokenLabels[i];
    return tok !== undefined ? `${i}: ${tok}` : String(i);
  }
  if (axis === 'head') return `h${i}`;
  return String(i);
}

interface Cell {
  row: number;
  x: string;
  score: number | null;
}

/** Flatten a grid into heatmap cells: y = first axis (layer), x = the remaining axes combined. */
function gridCells(grid: PatchingGrid, tokenLabels: readonly string[]): { cells: Cell[]; xDomain: string[]; xTitle: string; maxAbs: number } {
  const { shape, axes } = grid;
  const where = `${grid.component} · ${grid.method}`;
  if (shape.length < 2 || shape.length > 3) fail(`patching report: grid ${where} has ${shape.length} axes, expected 2 or 3`);
  if (axes.length !== shape.length) {
    fail(`patching report: grid ${where} names ${axes.length} axes [${axes.join(', ')}] for shape [${shape.join(', ')}]`);
  }
  const flat = flattenScores(grid.scores);
  const total = shape.reduce((p, d) => p * d, 1);
  if (flat.length !== total) {
    fail(`patching report: grid ${where} holds ${flat.length} scores, shape [${shape.join(', ')}] needs ${total}`);
  }
  const [rows, ...rest] = shape as [number, ...number[]];
  const xAxes = axes.slice(1);
  // Column labels: the cartesian product of the remaining axes, row-major.
  let xDomain: string[] = [''];
  for (let a = 0; a < rest.length; a++) {
    const next: string[] = [];
    for (const prefix of xDomain) {
      for (let i = 0; i < rest[a]!; i++) {
        const label = axisLabel(xAxes[a]!, i, tokenLabels);
        next.push(prefix === '' ? label : `${prefix} · ${label}`);
      }
    }
    xDomain = next;
  }
  const cols = xDomain.length;
  const cells: Cell[] = [];
  let maxAbs = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = flat[r * cols + c]!;
      const finite = Number.isFinite(v);
      if (finite) maxAbs = Math.max(maxAbs, Math.abs(v));
      cells.push({ row: r, x: xDomain[c]!, score: finite ? v : null });
    }
  }
  return { cells, xDomain, xTitle: xAxes.join(' · '), maxAbs };
}

/** The vega-lite spec of one grid's heatmap (exported for inspection and tests). */
export function heatmapSpec(grid: PatchingGrid, tokenLabels: readonly string[]): TopLevelSpec {
  const { cells, xDomain, xTitle, maxAbs } = gridCells(grid, tokenLabels);
  const m = maxAbs > 0 ? maxAbs : 1;
  const rows = grid.shape[0]!;
  const yTitle = grid.axes[0]!;
  const hasTokens = grid.axes.includes('pos') && tokenLabels.length > 0;
  const longLabels = hasTokens || grid.axes.length > 2;
  return {
    background: 'white',
    padding: 6,
    title: { text: gridTitle(grid), anchor: 'start', fontSize: 13 },
    data: { values: cells },
    // No per-cell aria-labels: they would triple the SVG size on long prompts (numbers are in the table/JSON).
    mark: { type: 'rect', aria: false },
    // Narrower cells for long prompts / pos × head grids so the SVG stays a reasonable width.
    width: { step: xDomain.length > 48 ? 12 : 22 },
    height: { step: 20 },
    encoding: {
      x: {
        field: 'x',
        type: 'ordinal',
        title: xTitle,
        scale: { domain: xDomain },
        axis: { labelAngle: longLabels ? -50 : 0, labelLimit: 140, labelOverlap: false },
      },
      y: {
        field: 'row',
        type: 'ordinal',
        title: yTitle,
        // Ascending domain on an ordinal y puts layer 0 at the top.
        scale: { domain: Array.from({ length: rows }, (_, i) => i) },
        axis: { labelOverlap: false },
      },
      color: {
        field: 'score',
        type: 'quantitative',
        title: 'score',
        scale: { scheme: 'redblue', domain: [-m, m] },
        // Explicit ends: vega's default labels round ±0.8 to "±1", which would misstate the scale.
        legend: { gradientLength: Math.max(60, Math.min(160, rows * 20)), values: [-m, 0, m], format: '.2~g' },
      },
    },
    config: { view: { stroke: null }, font: 'sans-serif' },
  };
}

/**
 * Make the ids inside one SVG unique within the page and independent of render order: vega numbers
 * its gradient and clip ids (gradient_15, clip3, …) with module-level counters, so the raw ids
 * depend on how many views rendered before and could repeat across SVGs. Each id is renamed to
 * `${prefix}${kind}${n}` with n counting within this SVG. Vega escapes `<`, `>` and `&` in text and
 * attribute values, so tags are delimited reliably.
 */
function renameSvgIds(svg: string, prefix: string): string {
  const renamed = new Map<string, string>();
  for (const tag of svg.match(/<[^>]*>/g) ?? []) {
    for (const m of tag.matchAll(/\sid="([^"]*)"/g)) {
      const old = m[1]!;
      if (!renamed.has(old)) renamed.set(old, `${prefix}${old.replace(/_?\d+$/, '') || 'id'}${renamed.size}`);
    }
  }
  const ref = (old: string): string => renamed.get(old) ?? old;
  let out = svg.replace(/<[^>]*>/g, (tag) =>
    tag
      .replace(/(\s)id="([^"]*)"/g, (_, sp: string, id: string) => `${sp}id="${ref(id)}"`)
      .replace(/url\(#([^)"]*)\)/g, (_, id: string) => `url(#${ref(id)})`)
      .replace(/(\s(?:xlink:)?href)="#([^"]*)"/g, (_, attr: string, id: string) => `${attr}="#${ref(id)}"`),
  );
  // xlink is only needed for image/href marks; drop the unused namespace declaration.
  if (!/\sxlink:/.test(out.replace(/\sxmlns:xlink="[^"]*"/, ''))) out = out.replace(/\sxmlns:xlink="[^"]*"/, '');
  return out;
}

/** Render one grid's heatmap to a static SVG string (no browser, no canvas). */
export async function renderHeatmapSvg(grid: PatchingGrid, tokenLabels: readonly string[], idPrefix = 'hm-'): Promise<string> {
  const spec = vl.compile(heatmapSpec(grid, tokenLabels)).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return renameSvgIds(await view.toSVG(), idPrefix);
  } finally {
    view.finalize();
  }
}

/** Component rows (first-appearance order), each with its grids in activation | atp | relp order. */
function gridRows(grids: readonly PatchingGrid[]): { component: string; slots: (PatchingGrid | Method)[] }[] {
  const byComponent = new Map<string, PatchingGrid[]>();
  for (const g of grids) {
    const list = byComponent.get(g.component) ?? [];
    list.push(g);
    byComponent.set(g.component, list);
  }
  return [...byComponent].map(([component, list]) => {
    const slots: (PatchingGrid | Method)[] = [];
    for (const method of METHOD_ORDER) {
      // Plain grids first, then variants (e.g. AtP*), otherwise in input order.
      const hasVariant = (g: PatchingGrid): number => ((g.variant?.length ?? 0) > 0 ? 1 : 0);
      const ofMethod = list.filter((g) => g.method === method).sort((a, b) => hasVariant(a) - hasVariant(b));
      // A missing method leaves a placeholder so the columns stay aligned.
      if (ofMethod.length === 0) slots.push(method);
      else slots.push(...ofMethod);
    }
    slots.push(...list.filter((g) => !METHOD_ORDER.includes(g.method)));
    return { component, slots };
  });
}

/** ld_clean / ld_corrupt for the header: one value when all grids agree, else per grid. */
function logitDiffRows(grids: readonly PatchingGrid[]): string {
  if (grids.length === 0) return '<tr><th>ld_clean</th><td>n/a</td></tr><tr><th>ld_corrupt</th><td>n/a</td></tr>';
  const same = (key: 'ld_clean' | 'ld_corrupt'): boolean =>
    grids.every((g) => fmt(g[key], 4) === fmt(grids[0]![key], 4));
  const row = (key: 'ld_clean' | 'ld_corrupt'): string => {
    if (same(key)) return `<tr><th>${key}</th><td class="num">${fmt(grids[0]![key])}</td></tr>`;
    const per = grids.map((g) => `${escapeHtml(`${g.component} · ${g.method}`)}: ${fmt(g[key])}`).join('<br>');
    return `<tr><th>${key}</th><td>${per}</td></tr>`;
  };
  return row('ld_clean') + row('ld_corrupt');
}

const CSS = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 12px}
h2{font-size:1.15em;margin:28px 0 8px}
table{border-collapse:collapse;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}
thead th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.meta th{background:#f8f8f8;font-weight:600}
.tokens code{background:#f3f3f3;border-radius:3px;padding:0 3px;margin-right:4px;white-space:pre}
.grid{display:grid;gap:16px 20px;align-items:start}
.grid figure{margin:0}
.grid figcaption{font-size:0.8em;color:#555}
.placeholder{border:1px dashed #bbb;color:#888;padding:24px;font-size:0.85em;text-align:center}
.note{color:#555;font-size:0.88em;max-width:70em}
`;

/**
 * The whole report as one HTML document. Asynchronous because vega renders SVG asynchronously
 * (`View.toSVG()` returns a Promise). All text from `data` is escaped.
 */
export async function renderPatchingReportHtml(data: PatchingReportData): Promise<string> {
  const rows = gridRows(data.grids);
  const svgs = new Map<PatchingGrid, string>();
  const ordered = rows.flatMap((r) => r.slots).filter((s): s is PatchingGrid => typeof s !== 'string');
  await Promise.all(
    ordered.map(async (grid, i) => {
      svgs.set(grid, await renderHeatmapSvg(grid, data.tokenLabels, `hm${i}-`));
    }),
  );
  const columns = Math.max(1, ...rows.map((r) => r.slots.length));

  const parts: string[] = [];
  parts.push('<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">');
  parts.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  parts.push(`<title>Patching report · ${escapeHtml(data.model)}</title>`);
  parts.push(`<style>${CSS}</style>`, '</head>', '<body>');

  parts.push('<h1>Patching report</h1>');
  parts.push('<table class="meta"><tbody>');
  parts.push(`<tr><th>model</th><td>${escapeHtml(data.model)}</td></tr>`);
  parts.push(logitDiffRows(data.grids));
  parts.push('</tbody></table>');
  if (data.tokenLabels.length > 0) {
    const toks = data.tokenLabels.map((t, i) => `<code>${i}: ${escapeHtml(t)}</code>`).join('');
    parts.push(`<p class="tokens">Clean prompt tokens: ${toks}</p>`);
  }

  parts.push('<h2>Heatmaps</h2>');
  parts.push(
    '<p class="note">Normalised score: 1 = the patch fully restores the clean logit difference, 0 = no effect ' +
      '(corrupt). Blue = positive, red = negative; each heatmap has its own colour scale, symmetric around 0 ' +
      '(±max |score| of that grid). One row per component: activation patching, then its cheap estimates (AtP, RelP).</p>',
  );
  if (rows.length === 0) parts.push('<p class="note">No grids.</p>');
  else {
    parts.push(`<div class="grid" style="grid-template-columns:repeat(${columns},max-content)">`);
    for (const row of rows) {
      for (let s = 0; s < columns; s++) {
        const slot = row.slots[s];
        if (slot === undefined) parts.push('<div></div>');
        else if (typeof slot === 'string') {
          parts.push(`<div class="placeholder">${escapeHtml(`${row.component} · ${slot}`)}<br>not computed</div>`);
        } else {
          const caption = `shape [${slot.shape.join(' × ')}] (${slot.axes.join(' × ')})`;
          parts.push(`<figure>${svgs.get(slot)!}<figcaption>${escapeHtml(caption)}</figcaption></figure>`);
        }
      }
    }
    parts.push('</div>');
  }

  parts.push('<h2>Agreement with activation patching</h2>');
  if (data.agreement.length === 0) parts.push('<p class="note">No agreement statistics.</p>');
  else {
    parts.push(
      '<table class="agreement"><thead><tr><th>component</th><th>method</th><th>Pearson</th><th>Spearman</th>' +
        '<th>relative L2</th><th>slope</th><th>top-k overlap</th><th>k</th></tr></thead><tbody>',
    );
    for (const a of data.agreement) {
      parts.push(
        `<tr><td>${escapeHtml(a.component)}</td><td>${escapeHtml(a.method)}</td>` +
          `<td class="num">${fmt(a.pearson)}</td><td class="num">${fmt(a.spearman)}</td>` +
          `<td class="num">${fmt(a.relL2)}</td><td class="num">${fmt(a.slope)}</td>` +
          `<td class="num">${fmt(a.topKOverlap)}</td><td class="num">${Number.isFinite(a.k) ? a.k : 'n/a'}</td></tr>`,
      );
    }
    parts.push('</tbody></table>');
    parts.push(
      '<p class="note">Relative L2: ‖estimate − activation‖ / ‖activation‖ (0 = equal). Slope: least-squares ' +
        'slope of the estimate on activation patching (1 = right scale). Top-k overlap: fraction of activation ' +
        'patching’s k largest |scores| that are also among the estimate’s k largest. n/a: undefined (a constant grid).</p>',
    );
  }

  if (data.conservation && data.conservation.length > 0) {
    parts.push('<h2>RelP relevance conservation</h2>');
    parts.push('<table class="conservation"><thead><tr><th>rules</th><th>logit difference</th><th>Σ relevance at the input / output</th><th>range over residual cuts</th></tr></thead><tbody>');
    for (const c of data.conservation) {
      const ratios = c.perCut.map((x) => x.ratio);
      parts.push(
        `<tr><td>${escapeHtml(c.rules.join(', ') || 'none (plain gradient)')}</td><td class="num">${fmt(c.output)}</td>` +
          `<td class="num">${fmt(c.input, 4)}</td><td class="num">${fmt(Math.min(...ratios), 4)} … ${fmt(Math.max(...ratios), 4)}</td></tr>`,
      );
    }
    parts.push('</tbody></table>');
    parts.push(
      '<p class="note">Σ over the residual stream of activation × RelP gradient of the logit difference, over the logit ' +
        'difference itself, on the first clean prompt. 1 = relevance conserved (LRP). On a model without biases ' +
        'LN + Identity + Half + AH conserves exactly; biases absorb relevance; the default rules pass the full gradient ' +
        'to both factors of Q·Kᵀ and pattern·V; AttnHalf splits them, but the softmax between them does not conserve.</p>',
    );
  }

  if (data.timings && Object.keys(data.timings).length > 0) {
    parts.push('<h2>Timings</h2>', '<table class="timings"><thead><tr><th>method</th><th>seconds</th></tr></thead><tbody>');
    for (const [name, secs] of Object.entries(data.timings)) {
      parts.push(`<tr><td>${escapeHtml(name)}</td><td class="num">${fmt(secs, 2)}</td></tr>`);
    }
    parts.push('</tbody></table>');
  }

  parts.push('</body>', '</html>', '');
  return parts.join('\n');
}

/** Render the report and write it to `file` atomically (temp file in the same directory, then rename). */
export async function writePatchingReport(file: string, data: PatchingReportData): Promise<void> {
  const html = await renderPatchingReportHtml(data);
  writeFileAtomic(file, html);
}

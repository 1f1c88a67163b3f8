import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { renderHeatmapSvg, renderPatchingReportHtml, writePatchingReport } from '../src/patching/report.js';
import type { Agreement, Component, Method, PatchingGrid, PatchingReportData } from '../src/patching/types.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-report-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function grid(component: Component, method: Method, f: (l: number, p: number) => number): PatchingGrid {
  return {
    component,
    method,
    rules: method === 'relp' ? ['LN', 'Identity', 'Half'] : [],
    ld_clean: 3.25,
    ld_corrupt: -1.5,
    shape: [3, 5],
    axes: ['layer', 'pos'],
    scores: Array.from({ length: 3 }, (_, l) => Array.from({ length: 5 }, (_, p) => f(l, p))),
  };
}

const TOKENS = ['<s>', '▁Once', '▁<b>&"', "▁it's", '▁park'];

function syntheticData(): PatchingReportData {
  const grids: PatchingGrid[] = [];
  for (const component of ['resid_pre', 'attn_out'] as const) {
    grids.push(grid(component, 'activation', (l, p) => (l === 0 && p === 4 ? 1 : (l * p) / 10)));
    grids.push(grid(component, 'atp', (l, p) => (l === 0 && p === 4 ? 0.8 : (l * p) / 12 - 0.1)));
    grids.push(grid(component, 'relp', (l, p) => (l === 0 && p === 4 ? 0.9 : -(l * p) / 11)));
  }
  const agreement: Agreement[] = [
    { component: 'resid_pre', method: 'atp', pearson: 0.98765, spearman: 0.91234, relL2: 0.25, slope: 0.8, topKOverlap: 0.5, k: 2 },
    { component: 'resid_pre', method: 'relp', pearson: -0.25, spearman: 1 / 3, relL2: 1.5, slope: -0.1, topKOverlap: 1, k: 2 },
    { component: 'attn_out', method: 'atp', pearson: NaN, spearman: NaN, relL2: NaN, slope: NaN, topKOverlap: 0, k: 2 },
    { component: 'attn_out', method: 'relp', pearson: 0.5, spearman: 0.4, relL2: 0.75, slope: 1.25, topKOverlap: 2 / 3, k: 3 },
  ];
  return { model: 'stories<260K> & "co"', tokenLabels: TOKENS, grids, agreement, timings: { activation: 1.234, atp: 0.056, relp: 0.1 } };
}

/** Text of the document outside the inline SVGs. */
function outsideSvg(html: string): string {
  return html.replace(/<svg[\s\S]*?<\/svg>/g, '');
}

/** Cells of the agreement table rows, as arrays of inner text. */
function agreementRows(html: string): string[][] {
  const table = /<table class="agreement">([\s\S]*?)<\/table>/.exec(html)![1]!;
  const body = /<tbody>([\s\S]*)<\/tbody>/.exec(table)![1]!;
  return [...body.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => [...m[1]!.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) => c[1]!));
}

describe('renderPatchingReportHtml', () => {
  let html: string;
  beforeAll(async () => {
    html = await renderPatchingReportHtml(syntheticData());
  }, 60_000);

  it('is one HTML document with one inline SVG per grid', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
    expect(html.match(/<svg\b/g)).toHaveLength(6);
    expect(html.match(/<\/svg>/g)).toHaveLength(6);
  });

  it('titles each heatmap and lays out activation | atp | relp per component row', () => {
    const titles = [...html.matchAll(/<text[^>]*font-weight="bold"[^>]*>([^<]*· [^<]*)<\/text>/g)].map((m) => m[1]);
    expect(titles).toEqual([
      'resid_pre · activation',
      'resid_pre · atp',
      'resid_pre · relp [LN, Identity, Half]',
      'attn_out · activation',
      'attn_out · atp',
      'attn_out · relp [LN, Identity, Half]',
    ]);
    expect(html).toContain('grid-template-columns:repeat(3,max-content)');
  });

  it('labels positions with escaped tokens and never emits raw markup from data', () => {
    // In the SVG axis labels (vega escapes) and in the token list (we escape).
    expect(html).toContain('2: ▁&lt;b&gt;&amp;"');
    expect(html).toContain('<code>2: ▁&lt;b&gt;&amp;&quot;</code>');
    expect(html).toContain('4: ▁park');
    expect(html).toContain('stories&lt;260K&gt; &amp; &quot;co&quot;');
    expect(html).not.toContain('<b>');
    expect(html).not.toContain('<260K>');
    expect(html).not.toMatch(/&(?!(amp|lt|gt|quot|#39|#x[0-9A-F]+);)/);
  });

  it('shows the agreement table with 3-decimal numbers and n/a for NaN', () => {
    expect(agreementRows(html)).toEqual([
      ['resid_pre', 'atp', '0.988', '0.912', '0.250', '0.800', '0.500', '2'],
      ['resid_pre', 'relp', '-0.250', '0.333', '1.500', '-0.100', '1.000', '2'],
      ['attn_out', 'atp', 'n/a', 'n/a', 'n/a', 'n/a', '0.000', '2'],
      ['attn_out', 'relp', '0.500', '0.400', '0.750', '1.250', '0.667', '3'],
    ]);
  });

  it('shows model, logit differences and timings in the header', () => {
    expect(html).toContain('<tr><th>ld_clean</th><td class="num">3.250</td></tr>');
    expect(html).toContain('<tr><th>ld_corrupt</th><td class="num">-1.500</td></tr>');
    expect(html).toContain('<tr><td>activation</td><td class="num">1.23</td></tr>');
    expect(html).toContain('<tr><td>atp</td><td class="num">0.06</td></tr>');
  });

  it('is self-contained: no URLs except the SVG namespace, no scripts or external resources', () => {
    const urls = html.match(/https?:\/\/[^\s"'<>)]*/g) ?? [];
    expect(urls.length).toBeGreaterThan(0);
    expect(new Set(urls)).toEqual(new Set(['http://www.w3.org/2000/svg']));
    expect(outsideSvg(html)).not.toMatch(/https?:/);
    expect(html).not.toMatch(/<script|<link|<img|@import|url\((?!#)/i);
  });

  it('gives every SVG definition a page-unique id', () => {
    const ids = [...html.matchAll(/\sid="([^"]*)"/g)].map((m) => m[1]);
    expect(ids.length).toBeGreaterThan(0);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [, ref] of html.matchAll(/url\(#([^)]*)\)/g)) expect(ids).toContain(ref);
  });

  it('uses a symmetric redblue colour domain: max positive is blue, max negative red', () => {
    const svg = html.match(/<svg[\s\S]*?<\/svg>/g)![2]!; // resid_pre · relp: max 0.9, min −8/11
    // Cells carry no aria-labels (size); find them by geometry: 22 × 20 px steps, layer 0 on top.
    const fillOf = (pos: number, layer: number): number[] => {
      const d = `M${pos * 22},${layer * 20}h22v20h-22Z`;
      const m = new RegExp(`<path[^>]*d="${d}"[^>]*fill="rgb\\((\\d+), (\\d+), (\\d+)\\)"`).exec(svg);
      expect(m, `cell ${layer},${pos}`).not.toBeNull();
      return [Number(m![1]), Number(m![2]), Number(m![3])];
    };
    const [r1, , b1] = fillOf(4, 0); // +0.9 = +m → the blue end
    const [r2, , b2] = fillOf(4, 2); // −0.727 → red
    const [r0, g0, b0] = fillOf(0, 0); // 0 → the neutral middle
    expect(b1!).toBeGreaterThan(r1! + 80);
    expect(r2!).toBeGreaterThan(b2! + 80);
    expect(Math.max(r0!, g0!, b0!) - Math.min(r0!, g0!, b0!)).toBeLessThan(10);
    expect(svg).toContain('values from −0.9 to 0.9');
  });

  it('is deterministic: the same data renders to the same bytes', async () => {
    expect(await renderPatchingReportHtml(syntheticData())).toBe(html);
  }, 60_000);
});

describe('heatmaps of other shapes', () => {
  it('renders a head grid [layer, head] with head labels', async () => {
    const heads: PatchingGrid = {
      component: 'head_out',
      method: 'activation',
      rules: [],
      ld_clean: 1,
      ld_corrupt: 0,
      shape: [2, 4],
      axes: ['layer', 'head'],
      scores: [
        [0.1, -0.2, 0.3, 0],
        [0.5, 0, -0.7, 0.05],
      ],
    };
    const html = await renderPatchingReportHtml({ model: 'm', tokenLabels: [], grids: [heads], agreement: [] });
    expect(html.match(/<svg\b/g)).toHaveLength(1);
    expect(html).toContain('head_out · activation');
    for (const h of ['h0', 'h1', 'h2', 'h3']) expect(html).toMatch(new RegExp(`>${h}</text>`));
    // The missing estimates get placeholders so columns stay aligned.
    expect(html).toContain('head_out · atp<br>not computed');
    expect(html).toContain('No agreement statistics.');
  }, 30_000);

  it('renders a 3-axis head_out_pos grid, a constant grid and NaN scores', async () => {
    const svg = await renderHeatmapSvg(
      {
        component: 'head_out_pos',
        method: 'atp',
        rules: [],
        ld_clean: 1,
        ld_corrupt: 0,
        shape: [2, 2, 3],
        axes: ['layer', 'pos', 'head'],
        scores: [
          [[1, 2, 3], [4, 5, 6]],
          [[0, NaN, -1], [0, 0, 0]],
        ],
      },
      ['a', 'b'],
    );
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('>1: b · h2</text>');
    // 2 layers × 6 columns, the NaN cell left blank (not drawn).
    expect(svg.match(/<path[^>]*d="M\d+,\d+h22v20h-22Z"[^>]*fill=/g)).toHaveLength(11);
    const flat = await renderHeatmapSvg(
      { component: 'mlp_out', method: 'relp', rules: [], ld_clean: 1, ld_corrupt: 1, shape: [1, 2], axes: ['layer', 'pos'], scores: [[0, 0]] },
      [],
    );
    expect(flat).toContain('mlp_out · relp</text>');
  }, 30_000);

  it('names AtP* variant options in the title, after the plain AtP column', async () => {
    const plain = grid('resid_pre', 'atp', () => 0.1);
    const star: PatchingGrid = { ...grid('resid_pre', 'atp', () => 0.2), variant: ['qk-fix', 'graddrop'] };
    const html = await renderPatchingReportHtml({ model: 'm', tokenLabels: [], grids: [star, plain], agreement: [] });
    const titles = [...html.matchAll(/<text[^>]*font-weight="bold"[^>]*>([^<]*· [^<]*)<\/text>/g)].map((m) => m[1]);
    expect(titles).toEqual(['resid_pre · atp', 'resid_pre · atp [qk-fix, graddrop]']);
    // activation placeholder, both AtP grids, relp placeholder.
    expect(html).toContain('grid-template-columns:repeat(4,max-content)');
    expect(html).toContain('resid_pre · activation<br>not computed');
  }, 30_000);

  it('fails clearly on inconsistent grids', async () => {
    const bad: PatchingGrid = { ...grid('resid_pre', 'atp', () => 0), shape: [3, 6] };
    await expect(renderHeatmapSvg(bad, [])).rejects.toThrow(HooklensError);
    await expect(renderHeatmapSvg(bad, [])).rejects.toThrow(/resid_pre · atp holds 15 scores, shape \[3, 6\] needs 18/);
  });
});

describe('writePatchingReport', () => {
  it('writes the report atomically, leaving no temp file', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'w-'));
    const file = path.join(dir, 'report.html');
    fs.writeFileSync(file, 'old');
    const data = syntheticData();
    await writePatchingReport(file, data);
    expect(fs.readdirSync(dir)).toEqual(['report.html']);
    const written = fs.readFileSync(file, 'utf8');
    expect(written).toBe(await renderPatchingReportHtml(data));
  }, 60_000);

  it('leaves nothing behind when the target directory does not exist', async () => {
    const file = path.join(tmp, 'missing-dir', 'report.html');
    await expect(writePatchingReport(file, syntheticData())).rejects.toThrow();
    expect(fs.existsSync(path.dirname(file))).toBe(false);
  }, 60_000);
});

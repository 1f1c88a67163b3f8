/** A sweep of probes (one per hook): the score-by-layer figure (vega-lite → SVG) and a text table. */
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { FittedProbe } from './fit.js';

/** Layer of a hook name (`blocks.3.…` → 3; `hook_embed` → -1 so it sorts first), or the index. */
export function hookLayer(hook: string, fallback: number): number {
  const m = /(?:^|\.)blocks\.(\d+)\./.exec(hook);
  if (m) return Number(m[1]);
  return /hook_embed$/.test(hook) ? -1 : fallback;
}

const scoreOf = (p: FittedProbe, split: 'train' | 'test'): number | null => {
  const m = p[split];
  return m ? (m.accuracy ?? m.r2 ?? null) : null;
};

export interface SweepRow {
  hook: string;
  layer: number;
  train: number | null;
  test: number | null;
  control_test: number | null;
  shuffled_test: number | null;
  majority_test: number | null;
  selectivity: number | null;
}

export function sweepRows(probes: readonly FittedProbe[]): SweepRow[] {
  return probes.map((p, i) => ({
    hook: p.hook,
    layer: hookLayer(p.hook, i),
    train: scoreOf(p, 'train'),
    test: scoreOf(p, 'test'),
    control_test: p.control?.task.test ? (p.control.task.test.accuracy ?? p.control.task.test.r2 ?? null) : null,
    shuffled_test: p.control?.shuffled.test ? (p.control.shuffled.test.accuracy ?? p.control.shuffled.test.r2 ?? null) : null,
    majority_test: p.test?.majority ?? null,
    selectivity: p.control ? p.control.selectivity : null,
  }));
}

export function sweepSpec(rows: readonly SweepRow[], metric: string, title: string): TopLevelSpec {
  const series: [keyof SweepRow, string][] = [['train', 'train'], ['test', 'test'], ['control_test', 'control task (test)'], ['shuffled_test', 'shuffled labels (test)'], ['majority_test', 'majority class (test)'], ['selectivity', 'selectivity']];
  const values = rows.flatMap((r) => series.filter(([k]) => r[k] !== null).map(([k, label]) => ({ layer: r.layer, hook: r.hook, series: label, value: r[k] as number })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 420,
    height: 240,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'layer', type: 'quantitative', title: 'layer', axis: { tickMinStep: 1 } },
      y: { field: 'value', type: 'quantitative', title: metric },
      color: { field: 'series', type: 'nominal', title: null, sort: series.map(([, l]) => l) },
      tooltip: [{ field: 'hook' }, { field: 'series' }, { field: 'value', format: '.3f' }],
    },
  };
}

export async function renderSweepSvg(rows: readonly SweepRow[], metric: string, title: string): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(sweepSpec(rows, metric, title)).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export function sweepTable(rows: readonly SweepRow[], metric: string): string {
  const f = (v: number | null) => (v === null ? '—' : v.toFixed(3));
  const head = ['hook', `train ${metric}`, `test ${metric}`, 'control task', 'shuffled', 'majority', 'selectivity'];
  const body = rows.map((r) => [r.hook, f(r.train), f(r.test), f(r.control_test), f(r.shuffled_test), f(r.majority_test), f(r.selectivity)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  return [line(head), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`, ...body.map(line)].join('\n');
}

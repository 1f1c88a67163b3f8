/**
 * Run several methods over several components on one session and measure how well the cheap
 * estimates (AtP, RelP) agree with activation patching — the comparison a report shows.
 */
import { PatchingSession, type GridOptions } from './session.js';
import { agreementFor } from './stats.js';
import type { Agreement, Component, Method, PatchingGrid } from './types.js';

export interface SuiteResult {
  grids: PatchingGrid[];
  agreement: Agreement[];
  /** Seconds per method (summed over components). */
  timings: Record<string, number>;
}

export function runSuite(session: PatchingSession, components: Component[], methods: Method[], opts: GridOptions = {}): SuiteResult {
  const grids: PatchingGrid[] = [];
  const timings: Record<string, number> = {};
  for (const component of components) {
    for (const method of methods) {
      const t0 = performance.now();
      // Each method gets only its own options: rules for RelP, the AtP* switches for AtP.
      const own: GridOptions = method === 'relp' ? { rules: opts.rules } : method === 'atp' ? { qkFix: opts.qkFix, gradDrop: opts.gradDrop } : {};
      grids.push(session.grid(component, method, own));
      timings[method] = (timings[method] ?? 0) + (performance.now() - t0) / 1000;
    }
  }
  const agreement: Agreement[] = [];
  for (const component of components) {
    const act = grids.find((g) => g.component === component && g.method === 'activation');
    if (!act) continue;
    for (const g of grids) if (g.component === component && g.method !== 'activation') agreement.push(agreementFor(g, act));
  }
  return { grids, agreement, timings };
}

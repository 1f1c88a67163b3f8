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
      grids.push(session.grid(component, method, ownOptions(method, opts)));
      timings[method] = (timings[method] ?? 0) + (performance.now() - t0) / 1000;
    }
  }
  return { grids, agreement: agreementOf(grids, components), timings };
}

/** runSuite through session.gridAsync (activation patching on onnxruntime where the session can). */
export async function runSuiteAsync(session: PatchingSession, components: Component[], methods: Method[], opts: GridOptions = {}): Promise<SuiteResult> {
  const grids: PatchingGrid[] = [];
  const timings: Record<string, number> = {};
  for (const component of components) {
    for (const method of methods) {
      const t0 = performance.now();
      grids.push(await session.gridAsync(component, method, ownOptions(method, opts)));
      timings[method] = (timings[method] ?? 0) + (performance.now() - t0) / 1000;
    }
  }
  return { grids, agreement: agreementOf(grids, components), timings };
}

/** Each method gets only its own options: rules for RelP, the AtP* switches for AtP. */
export function ownOptions(method: Method, opts: GridOptions): GridOptions {
  return method === 'relp' ? { rules: opts.rules } : method === 'atp' ? { qkFix: opts.qkFix, gradDrop: opts.gradDrop } : {};
}

function agreementOf(grids: PatchingGrid[], components: Component[]): Agreement[] {
  const agreement: Agreement[] = [];
  for (const component of components) {
    const act = grids.find((g) => g.component === component && g.method === 'activation');
    if (!act) continue;
    for (const g of grids) if (g.component === component && g.method !== 'activation') agreement.push(agreementFor(g, act));
  }
  return agreement;
}

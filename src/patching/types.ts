/** Shared shapes of the patching suite: components, methods, results. */

/** Where to patch inside one stack. Block components give [n_layers, n_pos] grids; head_out gives [n_layers, n_heads]. */
export type BaseComponent = 'resid_pre' | 'resid_mid' | 'resid_post' | 'attn_out' | 'mlp_out' | 'mlp_post' | 'head_out' | 'head_out_pos' | 'q' | 'k' | 'v' | 'pattern';

/** A language-model component, or the vision tower's ('vision.resid_pre': [tower layers, patch positions]). */
export type Component = BaseComponent | `vision.${BaseComponent}`;

export type Method = 'activation' | 'atp' | 'relp';

export type { RelpRule } from '../models/grad-rules.js';
import type { RelpRule } from '../models/grad-rules.js';
import type { Conservation } from './conservation.js';

export interface PatchingGrid {
  component: Component;
  method: Method;
  /** Rules used (RelP only; [] otherwise). */
  rules: RelpRule[];
  /** AtP* options used: 'qk-fix', 'graddrop'. */
  variant?: string[];
  ld_clean: number;
  ld_corrupt: number;
  /** Axis sizes, e.g. [n_layers, n_pos] or [n_layers, n_heads] (or [n_layers, n_pos, n_heads] for head_out_pos). */
  shape: number[];
  /** Axis names matching shape, e.g. ['layer', 'pos'] or ['layer', 'head']. */
  axes: string[];
  /** Normalised scores, nested row-major by shape. */
  scores: number[][] | number[][][];
}

/** Agreement of an estimate (AtP or RelP) with activation patching on one component. */
export interface Agreement {
  component: Component;
  method: Exclude<Method, 'activation'>;
  pearson: number;
  spearman: number;
  /** ‖estimate − activation‖ / ‖activation‖. */
  relL2: number;
  /** Least-squares slope of estimate on activation. */
  slope: number;
  /** |top-k(estimate) ∩ top-k(activation)| / k by absolute score. */
  topKOverlap: number;
  k: number;
}

/** Everything a report shows. */
export interface PatchingReportData {
  model: string;
  /** Token strings of the (first) clean prompt, for axis labels; may be empty. */
  tokenLabels: string[];
  grids: PatchingGrid[];
  agreement: Agreement[];
  /** RelP conservation of the rule sets used (first clean prompt). */
  conservation?: Conservation[];
  /** Seconds per method, for the report footer. */
  timings?: Record<string, number>;
}

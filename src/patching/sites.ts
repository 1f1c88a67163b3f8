/**
 * What each patchable component means in terms of hooks: which hook per layer, which axes of its
 * per-prompt activation index patch sites, and which are summed. One table drives activation
 * patching (masks) and attribution (reductions) alike.
 */
import { fail } from '../errors.js';
import type { ModelConfig } from '../models/config.js';
import type { Component } from './types.js';

export interface ComponentDef {
  /** Hook suffix within blocks.{l}. */
  suffix: string;
  /** Axes of the per-prompt activation (no batch axis) that index sites. */
  siteAxes: number[];
  axisNames: string[];
}

export const COMPONENTS: Record<Component, ComponentDef> = {
  resid_pre: { suffix: 'hook_resid_pre', siteAxes: [0], axisNames: ['pos'] },
  resid_mid: { suffix: 'hook_resid_mid', siteAxes: [0], axisNames: ['pos'] },
  resid_post: { suffix: 'hook_resid_post', siteAxes: [0], axisNames: ['pos'] },
  attn_out: { suffix: 'hook_attn_out', siteAxes: [0], axisNames: ['pos'] },
  mlp_out: { suffix: 'hook_mlp_out', siteAxes: [0], axisNames: ['pos'] },
  // A head's output is z·W_O: patching hook_z of head h patches exactly that head's write.
  head_out: { suffix: 'attn.hook_z', siteAxes: [1], axisNames: ['head'] },
  head_out_pos: { suffix: 'attn.hook_z', siteAxes: [0, 1], axisNames: ['pos', 'head'] },
  q: { suffix: 'attn.hook_q', siteAxes: [1], axisNames: ['head'] },
  k: { suffix: 'attn.hook_k', siteAxes: [1], axisNames: ['head'] },
  v: { suffix: 'attn.hook_v', siteAxes: [1], axisNames: ['head'] },
  pattern: { suffix: 'attn.hook_pattern', siteAxes: [0], axisNames: ['head'] },
};

export const COMPONENT_NAMES = Object.keys(COMPONENTS) as Component[];

export function componentDef(c: string): ComponentDef {
  const d = COMPONENTS[c as Component];
  if (!d) fail(`unknown component '${c}' (choose from ${COMPONENT_NAMES.join(', ')})`);
  return d;
}

export function componentHook(cfg: ModelConfig, c: Component, layer: number): string {
  return `${cfg.hookPrefix}blocks.${layer}.${COMPONENTS[c].suffix}`;
}

/** Per-prompt activation shape of the component's hook for sequence length T. */
export function perPromptShape(cfg: ModelConfig, c: Component, T: number): number[] {
  switch (COMPONENTS[c].suffix) {
    case 'attn.hook_z':
    case 'attn.hook_q':
      return [T, cfg.nHeads, cfg.dHead];
    case 'attn.hook_k':
    case 'attn.hook_v':
      return [T, cfg.nKvHeads, cfg.dHead];
    case 'attn.hook_pattern':
      return [cfg.nHeads, T, T];
    default:
      return [T, cfg.dModel];
  }
}

/** Grid shape [n_layers, ...site dims]. */
export function gridShape(cfg: ModelConfig, c: Component, T: number): number[] {
  const s = perPromptShape(cfg, c, T);
  return [cfg.nLayers, ...COMPONENTS[c].siteAxes.map((a) => s[a])];
}

/** Nest a flat row-major array by shape (for JSON output). */
export function nest(flat: ArrayLike<number>, shape: number[]): number[][] | number[][][] {
  const build = (offset: number, dims: number[]): unknown => {
    if (dims.length === 1) return Array.from({ length: dims[0] }, (_, i) => flat[offset + i]);
    const stride = dims.slice(1).reduce((a, b) => a * b, 1);
    return Array.from({ length: dims[0] }, (_, i) => build(offset + i * stride, dims.slice(1)));
  };
  return build(0, shape) as number[][] | number[][][];
}

/**
 * What each patchable component means in terms of hooks: which hook per layer, which axes of its
 * per-prompt activation index patch sites, and which are summed. One table drives activation
 * patching (masks) and attribution (reductions) alike, in any stack of blocks: `resid_pre` is the
 * language model's, `vision.resid_pre` the vision tower's (grid [tower layers, patch positions]).
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { BlockConfig } from '../models/config.js';
import type { BaseComponent, Component } from './types.js';

export interface ComponentDef {
  /** Hook suffix within blocks.{l}. */
  suffix: string;
  /** Axes of the per-prompt activation (no batch axis) that index sites. */
  siteAxes: number[];
  axisNames: string[];
}

export const COMPONENTS: Record<BaseComponent, ComponentDef> = {
  resid_pre: { suffix: 'hook_resid_pre', siteAxes: [0], axisNames: ['pos'] },
  resid_mid: { suffix: 'hook_resid_mid', siteAxes: [0], axisNames: ['pos'] },
  resid_post: { suffix: 'hook_resid_post', siteAxes: [0], axisNames: ['pos'] },
  attn_out: { suffix: 'hook_attn_out', siteAxes: [0], axisNames: ['pos'] },
  mlp_out: { suffix: 'hook_mlp_out', siteAxes: [0], axisNames: ['pos'] },
  // One MLP neuron (its activation after the nonlinearity, at every position).
  mlp_post: { suffix: 'mlp.hook_post', siteAxes: [1], axisNames: ['neuron'] },
  // A head's output is z·W_O: patching hook_z of head h patches exactly that head's write.
  head_out: { suffix: 'attn.hook_z', siteAxes: [1], axisNames: ['head'] },
  head_out_pos: { suffix: 'attn.hook_z', siteAxes: [0, 1], axisNames: ['pos', 'head'] },
  q: { suffix: 'attn.hook_q', siteAxes: [1], axisNames: ['head'] },
  k: { suffix: 'attn.hook_k', siteAxes: [1], axisNames: ['head'] },
  v: { suffix: 'attn.hook_v', siteAxes: [1], axisNames: ['head'] },
  pattern: { suffix: 'attn.hook_pattern', siteAxes: [0], axisNames: ['head'] },
};

export const BASE_COMPONENT_NAMES = Object.keys(COMPONENTS) as BaseComponent[];
/** Vision-tower components take the tower's stack: 'vision.resid_pre', … */
export const VISION_COMPONENT_NAMES = BASE_COMPONENT_NAMES.map((c) => `vision.${c}` as Component);
export const COMPONENT_NAMES: Component[] = [...BASE_COMPONENT_NAMES, ...VISION_COMPONENT_NAMES];

/** The stack a component lives in: hook prefix, its config, the component within it. */
export interface ComponentStack {
  prefix: string;
  cfg: BlockConfig;
  base: BaseComponent;
  def: ComponentDef;
  /** Sequence length of the stack for prompts of length T (the tower's patch positions for vision). */
  seqLen(T: number): number;
}

/** Components whose sites are single positions (the first per-prompt axis): resid_*, attn_out, mlp_out, head_out_pos. */
export function isPositionResolved(def: ComponentDef): boolean {
  return def.axisNames[0] === 'pos' && def.siteAxes[0] === 0;
}

/** Hook suffixes of the position-resolved components, each once (suffix patching's patch points). */
export const POSITION_RESOLVED_SUFFIXES: readonly string[] = [...new Set(Object.values(COMPONENTS).filter(isPositionResolved).map((d) => d.suffix))];

export function baseComponent(c: string): { prefix: string; base: BaseComponent } {
  const prefix = c.startsWith('vision.') ? 'vision.' : '';
  const base = c.slice(prefix.length) as BaseComponent;
  if (!COMPONENTS[base]) fail(`unknown component '${c}' (choose from ${COMPONENT_NAMES.join(', ')})`);
  return { prefix, base };
}

export function componentStack(model: HookedModel, c: Component): ComponentStack {
  const { prefix, base } = baseComponent(c);
  if (prefix === 'vision.') {
    const v = model.visionCfg;
    if (!v) fail(`component '${c}' needs a vision tower; ${model.source} is a ${model.graph.description}`);
    return { prefix, cfg: v, base, def: COMPONENTS[base], seqLen: () => v.nPositions };
  }
  return { prefix, cfg: model.cfg, base, def: COMPONENTS[base], seqLen: (T) => T };
}

export function componentDef(c: string): ComponentDef {
  return COMPONENTS[baseComponent(c).base];
}

export function componentHook(stack: ComponentStack, layer: number): string {
  return `${stack.prefix}blocks.${layer}.${stack.def.suffix}`;
}

/** Per-prompt activation shape of the component's hook for stack sequence length T. */
export function perPromptShape(cfg: BlockConfig, c: BaseComponent, T: number): number[] {
  switch (COMPONENTS[c].suffix) {
    case 'attn.hook_z':
    case 'attn.hook_q':
      return [T, cfg.nHeads, cfg.dHead];
    case 'attn.hook_k':
    case 'attn.hook_v':
      return [T, cfg.nKvHeads, cfg.dHead];
    case 'attn.hook_pattern':
      return [cfg.nHeads, T, T];
    case 'mlp.hook_post':
      return [T, cfg.dMlp];
    default:
      return [T, cfg.dModel];
  }
}

/** Grid shape [n_layers, ...site dims] of a component for prompts of length T. */
export function gridShape(stack: ComponentStack, T: number): number[] {
  const s = perPromptShape(stack.cfg, stack.base, stack.seqLen(T));
  return [stack.cfg.nLayers, ...stack.def.siteAxes.map((a) => s[a])];
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

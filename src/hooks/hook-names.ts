/**
 * TransformerLens hook names of one stack of blocks (a language model, or a vision tower whose
 * names the model graph prefixes with 'vision.'), their shapes, and glob matching. A model's
 * graph (models/graph.ts) puts its stages' lists together; the runtime fires exactly those
 * names and rejects others.
 */
import { fail } from '../errors.js';
import type { BlockConfig, ModelConfig, VisionConfig } from '../models/config.js';

/** Per-layer hook suffixes in forward order. `hook_result` is opt-in (costs a per-head projection). */
export function layerHookSuffixes(cfg: BlockConfig): string[] {
  const s = ['hook_resid_pre', 'ln1.hook_scale', 'ln1.hook_normalized', 'attn.hook_q', 'attn.hook_k', 'attn.hook_v'];
  if (cfg.positional === 'rope') s.push('attn.hook_rot_q', 'attn.hook_rot_k');
  s.push('attn.hook_attn_scores', 'attn.hook_pattern', 'attn.hook_z', 'attn.hook_result', 'hook_attn_out', 'hook_resid_mid');
  s.push('ln2.hook_scale', 'ln2.hook_normalized', 'mlp.hook_pre');
  if (cfg.mlp === 'gated') s.push('mlp.hook_pre_linear');
  s.push('mlp.hook_post', 'hook_mlp_out', 'hook_resid_post');
  return s;
}

function blockNames(cfg: BlockConfig, prefix: string): string[] {
  const names: string[] = [];
  for (let l = 0; l < cfg.nLayers; l++) for (const s of layerHookSuffixes(cfg)) names.push(`${prefix}blocks.${l}.${s}`);
  return names;
}

/** A language model's hook names, in the order the forward pass fires them. */
export function allHookNames(cfg: ModelConfig): string[] {
  const names = ['hook_embed'];
  if (cfg.positional === 'learned') names.push('hook_pos_embed');
  names.push(...blockNames(cfg, ''));
  names.push('ln_final.hook_scale', 'ln_final.hook_normalized');
  return names;
}

/** A vision tower's hook names under `prefix` ('vision.'); ln_post only where the tower's output uses it. */
export function visionHookNames(cfg: VisionConfig, prefix: string, withPostNorm: boolean): string[] {
  const names = [prefix + 'hook_embed'];
  if (cfg.preNorm) names.push(prefix + 'ln_pre.hook_scale', prefix + 'ln_pre.hook_normalized');
  names.push(...blockNames(cfg, prefix));
  if (withPostNorm) names.push(prefix + 'ln_post.hook_scale', prefix + 'ln_post.hook_normalized');
  return names;
}

/** Hooks that cost extra compute and are only produced when something asks for them. */
export function isOptInHook(name: string): boolean {
  return name.endsWith('attn.hook_result');
}

/**
 * Shape of a stack hook's activation for `b` sequences of length `T` (name without the stage
 * prefix). Attention tensors are [b, head, q, k]; q/k/v/z are [b, pos, head, d_head].
 */
export function stackHookShape(cfg: BlockConfig, name: string, b: number, T: number): number[] {
  const suffix = name.replace(/^(blocks\.\d+\.|ln_final\.|ln_pre\.|ln_post\.)?((ln\d|attn|mlp)\.)?(hook_\w+)$/, '$2$4');
  switch (suffix) {
    case 'hook_embed':
    case 'hook_pos_embed':
    case 'hook_resid_pre':
    case 'hook_resid_mid':
    case 'hook_resid_post':
    case 'hook_attn_out':
    case 'hook_mlp_out':
    case 'ln1.hook_normalized':
    case 'ln2.hook_normalized':
    case 'hook_normalized':
      return [b, T, cfg.dModel];
    case 'ln1.hook_scale':
    case 'ln2.hook_scale':
    case 'hook_scale':
      return [b, T, 1];
    case 'attn.hook_q':
    case 'attn.hook_rot_q':
    case 'attn.hook_z':
      return [b, T, cfg.nHeads, cfg.dHead];
    case 'attn.hook_k':
    case 'attn.hook_v':
    case 'attn.hook_rot_k':
      return [b, T, cfg.nKvHeads, cfg.dHead];
    case 'attn.hook_attn_scores':
    case 'attn.hook_pattern':
      return [b, cfg.nHeads, T, T];
    case 'attn.hook_result':
      return [b, T, cfg.nHeads, cfg.dModel];
    case 'mlp.hook_pre':
    case 'mlp.hook_pre_linear':
    case 'mlp.hook_post':
      return [b, T, cfg.dMlp];
    default:
      fail(`unknown hook '${name}'`);
  }
}

/** A language model's hook shape (the text-only special case of the graph's hookShape). */
export function hookShape(cfg: ModelConfig, name: string, b: number, T: number): number[] {
  return stackHookShape(cfg, name, b, T);
}

/** Axis that indexes sequence position (the query axis for attention patterns). */
export function positionAxis(name: string): number {
  return /attn\.hook_(attn_scores|pattern)$/.test(name) ? 2 : 1;
}

/** Compile a TransformerLens-style pattern (`*` matches one dotted segment or digits, `**` anything). */
export function globToRegExp(pattern: string): RegExp {
  const esc = pattern
    .split('**')
    .map((part) => part.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]*'))
    .join('.*');
  return new RegExp(`^${esc}$`);
}

export type HookSelector = string | RegExp | ((name: string) => boolean);

/** What name resolution needs of a model: its names and how to explain an unknown one. */
export interface HookSpace {
  hookNames(): string[];
  unknownHookMessage(name: string): string;
  /** For messages: 'gpt2 model', 'llava model', … */
  readonly description: string;
}

/**
 * Resolve selectors against a model's hook list. Literal names must exist; patterns must match
 * at least one hook — both fail with a one-line error naming the selector.
 */
export function resolveHookNames(space: HookSpace, selectors: HookSelector[] | HookSelector): string[] {
  const all = space.hookNames();
  const known = new Set(all);
  const sels = Array.isArray(selectors) ? selectors : [selectors];
  const picked = new Set<string>();
  for (const sel of sels) {
    let test: (n: string) => boolean;
    let label: string;
    if (typeof sel === 'string') {
      label = sel;
      if (sel.includes('*')) {
        const re = globToRegExp(sel);
        test = (n) => re.test(n);
      } else {
        if (!known.has(sel)) fail(space.unknownHookMessage(sel));
        test = (n) => n === sel;
      }
    } else if (sel instanceof RegExp) {
      label = String(sel);
      test = (n) => sel.test(n);
    } else {
      label = 'filter function';
      test = sel;
    }
    const before = picked.size;
    let matched = 0;
    for (const n of all) if (test(n)) (matched++, picked.add(n));
    if (matched === 0 && before === picked.size) fail(`hook pattern '${label}' matches no hook of this ${space.description}`);
  }
  return all.filter((n) => picked.has(n));
}

/** Message for a name that is not a hook of a stack with `nLayers` blocks under `prefix`. */
export function unknownStackHookMessage(nLayers: number, prefix: string, name: string, description: string): string {
  const m = /blocks\.(\d+)\./.exec(name);
  if (m && Number(m[1]) >= nLayers && name.startsWith(prefix + 'blocks.')) {
    const what = prefix ? `the ${prefix.replace(/\.$/, '')} stage` : 'the model';
    return `unknown hook '${name}': ${what} has ${nLayers} layers (${prefix}blocks.0 .. ${prefix}blocks.${nLayers - 1})`;
  }
  return `unknown hook '${name}' for this ${description} (try 'hooklens hooks --model PATH' or a pattern like '${prefix}blocks.*.hook_resid_post')`;
}

/**
 * Last block a forward must run for hooks of one stack (names local to the stack), or undefined
 * when one of them needs the stack's end — its final norm (`endMarkers`, e.g. 'ln_final').
 */
export function lastLayerNeeded(nLayers: number, localNames: readonly string[], endMarkers: readonly string[] = ['ln_final']): number | undefined {
  let last = 0;
  for (const n of localNames) {
    if (endMarkers.some((e) => n.includes(e))) return undefined;
    const m = /^blocks\.(\d+)\./.exec(n);
    if (m) last = Math.max(last, Number(m[1]));
  }
  return Math.min(last, nLayers - 1);
}

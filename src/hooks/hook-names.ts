/**
 * TransformerLens hook names for a config, their shapes, and glob matching.
 * The list is the single source of truth: the runtime fires exactly these names and rejects others.
 */
import { fail } from '../errors.js';
import type { ModelConfig } from '../models/config.js';

/** Per-layer hook suffixes in forward order. `hook_result` is opt-in (costs a per-head projection). */
export function layerHookSuffixes(cfg: ModelConfig): string[] {
  const s = ['hook_resid_pre', 'ln1.hook_scale', 'ln1.hook_normalized', 'attn.hook_q', 'attn.hook_k', 'attn.hook_v'];
  if (cfg.positional === 'rope') s.push('attn.hook_rot_q', 'attn.hook_rot_k');
  s.push('attn.hook_attn_scores', 'attn.hook_pattern', 'attn.hook_z', 'attn.hook_result', 'hook_attn_out', 'hook_resid_mid');
  s.push('ln2.hook_scale', 'ln2.hook_normalized', 'mlp.hook_pre');
  if (cfg.mlp === 'gated') s.push('mlp.hook_pre_linear');
  s.push('mlp.hook_post', 'hook_mlp_out', 'hook_resid_post');
  return s;
}

/** Every hook name of the model, in the order the forward pass fires them. */
export function allHookNames(cfg: ModelConfig): string[] {
  const p = cfg.hookPrefix;
  const names = [p + 'hook_embed'];
  if (cfg.positional === 'learned') names.push(p + 'hook_pos_embed');
  for (let l = 0; l < cfg.nLayers; l++) for (const s of layerHookSuffixes(cfg)) names.push(`${p}blocks.${l}.${s}`);
  names.push(p + 'ln_final.hook_scale', p + 'ln_final.hook_normalized');
  return names;
}

/** Hooks that cost extra compute and are only produced when something asks for them. */
export function isOptInHook(name: string): boolean {
  return name.endsWith('attn.hook_result');
}

/**
 * Shape of a hook's activation for a batch of `b` sequences of length `T`.
 * Attention tensors are [b, head, q, k]; q/k/v/z are [b, pos, head, d_head].
 */
export function hookShape(cfg: ModelConfig, name: string, b: number, T: number): number[] {
  const suffix = name.replace(/^.*?(blocks\.\d+\.|ln_final\.)?((ln\d|attn|mlp)\.)?(hook_\w+)$/, '$2$4');
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

/**
 * Resolve selectors against the model's hook list. Literal names must exist; patterns must match
 * at least one hook — both fail with a one-line error naming the selector.
 */
export function resolveHookNames(cfg: ModelConfig, selectors: HookSelector[] | HookSelector): string[] {
  const all = allHookNames(cfg);
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
        if (!all.includes(sel)) fail(unknownHookMessage(cfg, sel));
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
    if (matched === 0 && before === picked.size) fail(`hook pattern '${label}' matches no hook of this ${cfg.architecture} model`);
  }
  return all.filter((n) => picked.has(n));
}

export function unknownHookMessage(cfg: ModelConfig, name: string): string {
  const m = /blocks\.(\d+)\./.exec(name);
  if (m && Number(m[1]) >= cfg.nLayers) {
    return `unknown hook '${name}': the model has ${cfg.nLayers} layers (blocks.0 .. blocks.${cfg.nLayers - 1})`;
  }
  return `unknown hook '${name}' for this ${cfg.architecture} model (try 'hooklens hooks --model PATH' or a pattern like 'blocks.*.hook_resid_post')`;
}

/**
 * Last block a forward must run for `names` (later blocks, the final norm and the unembedding can
 * be skipped: pass it as stopAtLayer), or undefined when a name needs the whole model.
 */
export function lastLayerNeeded(cfg: ModelConfig, names: readonly string[]): number | undefined {
  let last = 0;
  for (const n of names) {
    if (n.includes('ln_final')) return undefined;
    const m = /blocks\.(\d+)\./.exec(n);
    if (m) last = Math.max(last, Number(m[1]));
  }
  return Math.min(last, cfg.nLayers - 1);
}

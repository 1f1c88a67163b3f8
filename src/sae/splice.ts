/**
 * Splicing SAEs into a HookedModel's forward pass, with the hook points of SAELens'
 * HookedSAETransformer: `{hook}.hook_sae_input|hook_sae_acts_pre|hook_sae_acts_post|
 * hook_sae_recons|hook_sae_error|hook_sae_output`. They can be hooked and cached like model hooks
 * (through runWithSae / runWithSaeCache, or spliceSae's options).
 *
 * Semantics follow SAELens (sae.py forward):
 * - hook_sae_input sees the activation, hook_sae_acts_pre the pre-activation, hook_sae_acts_post
 *   the latents, hook_sae_recons acts·W_dec + b_dec *before* de-normalisation; hook_sae_output is
 *   what flows on into the model.
 * - useErrorTerm: output = recons + error with error = x − SAE(x) computed from the unhooked SAE
 *   on the original input, so ablating latents changes the output by exactly the change in the
 *   reconstruction. Like SAELens (which computes it under torch.no_grad) the error is a constant
 *   in the backward pass: gradients reach upstream activations only through the SAE. When no hook
 *   changed anything, the forward value is the original activation bit for bit.
 * - hook_sae_error fires only with useErrorTerm (as in SAELens).
 * Hook tensors are [batch, pos, width]: the SAE works on rows [batch·pos, d_in]. hook_z-like
 * [batch, pos, head, d_head] hooks are flattened over heads (SAELens reshape_activations
 * "hook_z"), or one head is taken when cfg.json sets hook_head_index.
 * A model hook registered on the SAE's own hook name runs after the splice and sees its output.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { ActivationCache } from '../hooks/activation-cache.js';
import { globToRegExp, isOptInHook, positionAxis, type HookSelector } from '../hooks/hook-names.js';
import type { FwdHook, HookFn, HookedModel, ModelInput } from '../hooks/hooked-model.js';
import type { PaddingSide } from '../hooks/token-batch.js';
import { stopGradient, type RelpRule } from '../models/grad-rules.js';
import type { TokenBatch } from '../models/transformer.js';
import type { Sae } from './sae.js';

export const SAE_HOOK_SUFFIXES = [
  'hook_sae_input',
  'hook_sae_acts_pre',
  'hook_sae_acts_post',
  'hook_sae_recons',
  'hook_sae_error',
  'hook_sae_output',
] as const;
export type SaeHookSuffix = (typeof SAE_HOOK_SUFFIXES)[number];

/** The hook_sae_* names an SAE spliced this way fires, in forward order. */
export function saeHookNames(sae: Sae, useErrorTerm = false): string[] {
  return SAE_HOOK_SUFFIXES.filter((s) => useErrorTerm || s !== 'hook_sae_error').map((s) => `${sae.cfg.hookName}.${s}`);
}

/** How the hook's activation maps to SAE rows. */
export interface SaeHookLayout {
  hook: string;
  /** flat: [b,pos,d]; heads: [b,pos,h,dh] flattened to h·dh; head: one head of [b,pos,h,dh]. */
  kind: 'flat' | 'heads' | 'head';
  shape: number[];
  head?: number;
}

/** Check that the SAE fits the model's hook (name, position axis, d_in); one-line errors. */
export function saeHookLayout(model: HookedModel, sae: Sae): SaeHookLayout {
  const { hookName: hook, dIn, hookHeadIndex } = sae.cfg;
  if (!model.hookNames().includes(hook)) fail(`SAE hook_name: ${model.unknownHookMessage(hook)}`);
  const shape = model.hookShape(hook, { batch: 1, seqLen: 1, images: 1 }).slice(2);
  if (positionAxis(hook) !== 1) fail(`SAE hook '${hook}' is an attention-pattern hook ([batch, head, q, k]); SAEs splice only into [batch, pos, ...] hooks`);
  const where = `SAE d_in ${dIn} does not match hook '${hook}' (per-position shape [${shape.join(', ')}])`;
  if (shape.length === 1) {
    if (hookHeadIndex !== undefined) fail(`SAE hook_head_index ${hookHeadIndex} is set but hook '${hook}' has no head axis`);
    if (shape[0] !== dIn) fail(where);
    return { hook, kind: 'flat', shape };
  }
  if (shape.length === 2) {
    const [h, dh] = shape;
    if (hookHeadIndex !== undefined) {
      if (hookHeadIndex >= h) fail(`SAE hook_head_index ${hookHeadIndex} is out of range for hook '${hook}' with ${h} heads`);
      if (dh !== dIn) fail(`${where}: hook_head_index ${hookHeadIndex} selects one head of size ${dh}`);
      return { hook, kind: 'head', shape, head: hookHeadIndex };
    }
    if (h * dh !== dIn) fail(`${where}: heads flattened give ${h * dh}`);
    return { hook, kind: 'heads', shape };
  }
  fail(`SAE hook '${hook}' has per-position shape [${shape.join(', ')}]; only [d] and [head, d_head] hooks are supported`);
}

/** The activation's SAE rows [batch·pos, d_in]. */
export function toSaeRows(act: tf.Tensor, layout: SaeHookLayout): tf.Tensor2D {
  const [b, T] = act.shape;
  if (layout.kind === 'head') {
    const dh = layout.shape[1];
    return act.slice([0, 0, layout.head!, 0], [b, T, 1, dh]).reshape([b * T, dh]);
  }
  return act.reshape([b * T, -1]);
}

function fromRows(act: tf.Tensor, rows: tf.Tensor2D, layout: SaeHookLayout): tf.Tensor {
  if (layout.kind !== 'head') return rows.reshape(act.shape);
  const [b, T, h, dh] = act.shape;
  const i = layout.head!;
  const parts: tf.Tensor[] = [];
  if (i > 0) parts.push(act.slice([0, 0, 0, 0], [b, T, i, dh]));
  parts.push(rows.reshape([b, T, 1, dh]));
  if (i < h - 1) parts.push(act.slice([0, 0, i + 1, 0], [b, T, h - i - 1, dh]));
  return parts.length === 1 ? parts[0] : tf.concat(parts, 2);
}

/**
 * A model hook at the SAE's hook that replaces the part the SAE reads (see SaeHookLayout) by
 * fn(rows) — e.g. zero-ablation for CE baselines. Shapes are validated up front.
 */
export function replaceAtSaeHook(model: HookedModel, sae: Sae, fn: (rows: tf.Tensor2D, batch: number, pos: number) => tf.Tensor2D): FwdHook {
  const layout = saeHookLayout(model, sae);
  return [layout.hook, (act) => fromRows(act, fn(toSaeRows(act, layout), act.shape[0]!, act.shape[1]!), layout)];
}

/** Selector → matching names from `names` (literal, glob with *, RegExp or predicate). */
function matchSelector(sel: HookSelector, names: readonly string[]): string[] {
  if (typeof sel === 'string') {
    if (!sel.includes('*')) return names.includes(sel) ? [sel] : [];
    const re = globToRegExp(sel);
    return names.filter((n) => re.test(n));
  }
  if (sel instanceof RegExp) return names.filter((n) => sel.test(n));
  return names.filter((n) => sel(n));
}

export interface SpliceOptions {
  /** Add the SAE error so the output equals the original activation (see the module comment). */
  useErrorTerm?: boolean;
  /** Hooks on this SAE's hook_sae_* points (names or patterns). */
  fwdHooks?: FwdHook[];
  /** Cache these hook_sae_* names into `store` (kept tensors the caller disposes). */
  cache?: { names: ReadonlySet<string>; store: Map<string, tf.Tensor> };
}

/**
 * Model hooks that splice `sae` at its hook_name. Pass them to model.run / runWithHooks /
 * runWithCache / gradients (first, before hooks of your own).
 */
export function spliceSae(model: HookedModel, sae: Sae, opts: SpliceOptions = {}): FwdHook[] {
  const layout = saeHookLayout(model, sae);
  const useError = opts.useErrorTerm ?? false;
  const names = saeHookNames(sae, useError);
  const hooks = new Map<string, HookFn[]>();
  for (const [sel, fn] of opts.fwdHooks ?? []) {
    const matched = matchSelector(sel, names);
    if (matched.length === 0) fail(`hook '${typeof sel === 'string' ? sel : String(sel)}' matches no hook_sae_* point of the SAE at '${layout.hook}'`);
    for (const n of matched) hooks.set(n, [...(hooks.get(n) ?? []), fn]);
  }
  const cacheNames = opts.cache?.names ?? new Set<string>();
  const store = opts.cache?.store;

  const spliced: HookFn = (act) => {
    const [b, T] = act.shape;
    let dirty = false;
    // Run user hooks and caching at one SAE point; rows [b·T, w] in, rows out.
    const point = (suffix: SaeHookSuffix, rows: tf.Tensor2D): tf.Tensor2D => {
      const name = `${layout.hook}.${suffix}`;
      const fns = hooks.get(name);
      if (!fns && !cacheNames.has(name)) return rows;
      const w = rows.shape[1];
      let y = rows.reshape([b, T, w]);
      const before = y;
      for (const fn of fns ?? []) {
        const r = fn(y, { name });
        if (!r || r === y) continue;
        if (!tf.util.arraysEqual(r.shape, y.shape)) fail(`hook '${name}' returned shape [${r.shape}], expected [${y.shape}]`);
        y = r;
      }
      if (store && cacheNames.has(name)) store.set(name, tf.keep(y));
      if (y === before) return rows;
      dirty = true;
      return y.reshape([b * T, w]);
    };

    const x = toSaeRows(act, layout);
    const sin = point('hook_sae_input', x);
    const xn = sae.normalizeIn(sin);
    const pre = point('hook_sae_acts_pre', sae.preActivation(xn));
    const acts = point('hook_sae_acts_post', sae.activate(pre, xn));
    const recons = point('hook_sae_recons', sae.decodeNormalized(acts));
    const out = sae.denormalizeOut(recons, sin);
    let y = out;
    if (useError) {
      // SAELens recomputes the SAE without hooks for the true error; unchanged hooks mean out is it.
      const clean = dirty ? sae.decode(sae.encode(x), x) : out;
      const err = stopGradient(tf.sub(x, clean)) as tf.Tensor2D;
      const errOut = point('hook_sae_error', err);
      y = !dirty && errOut === err ? sumWithValue(out, errOut, x) : (tf.add(out, errOut) as tf.Tensor2D);
    }
    y = point('hook_sae_output', y);
    return fromRows(act, y, layout);
  };
  return [[layout.hook, spliced]];
}

type CustomFn = (...args: never[]) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor) => tf.Tensor[] };
/** Forward value `value` (which equals a + b mathematically); backward as for a + b. */
const sumWithValue = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, value: tf.Tensor) => ({
  value: value.clone(),
  gradFunc: (dy: tf.Tensor) => [dy, dy, tf.zerosLike(value)],
})) as CustomFn as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor, b: tf.Tensor, value: tf.Tensor) => tf.Tensor2D;

export interface RunWithSaeOptions {
  useErrorTerm?: boolean;
  /** Hooks on model hook names and on hook_sae_* names of the spliced SAEs. */
  fwdHooks?: FwdHook[];
  padding?: PaddingSide;
}

interface Plan {
  modelHooks: FwdHook[];
  saeHooks: Map<Sae, FwdHook[]>;
  saeNames: Map<Sae, string[]>;
}

function label(sel: HookSelector): string {
  return typeof sel === 'string' ? sel : sel instanceof RegExp ? String(sel) : 'filter function';
}

function noMatchMessage(model: HookedModel, sel: HookSelector, saes: readonly Sae[], useError: boolean): string {
  if (typeof sel !== 'string' || sel.includes('*')) return `hook pattern '${label(sel)}' matches no hook of this model or of its spliced SAEs`;
  const m = /^(.*)\.(hook_sae_\w+)$/.exec(sel);
  if (!m) return model.unknownHookMessage(sel);
  if (!saes.some((s) => s.cfg.hookName === m[1])) return `unknown hook '${sel}': no SAE is spliced at '${m[1]}'`;
  if (m[2] === 'hook_sae_error' && !useError) return `hook '${sel}' exists only with useErrorTerm`;
  return `unknown hook '${sel}' (SAE hook points: ${SAE_HOOK_SUFFIXES.join(', ')})`;
}

/** Split hook selectors between the model and each SAE (each must match something). */
function planHooks(model: HookedModel, saes: readonly Sae[], fwdHooks: FwdHook[], useError: boolean): Plan {
  const seen = new Set<string>();
  for (const s of saes) {
    if (seen.has(s.cfg.hookName)) fail(`two SAEs are spliced at '${s.cfg.hookName}'`);
    seen.add(s.cfg.hookName);
  }
  const modelNames = model.hookNames();
  const saeNames = new Map(saes.map((s) => [s, saeHookNames(s, useError)]));
  const plan: Plan = { modelHooks: [], saeHooks: new Map(saes.map((s) => [s, []])), saeNames };
  for (const [sel, fn] of fwdHooks) {
    let matched = 0;
    for (const n of matchSelector(sel, modelNames)) (plan.modelHooks.push([n, fn]), matched++);
    for (const s of saes) for (const n of matchSelector(sel, saeNames.get(s)!)) (plan.saeHooks.get(s)!.push([n, fn]), matched++);
    if (matched === 0) fail(noMatchMessage(model, sel, saes, useError));
  }
  return plan;
}

/** Logits [batch, pos, vocab] with `saes` spliced in. */
export function runWithSae(model: HookedModel, input: ModelInput, saes: Sae | readonly Sae[], opts: RunWithSaeOptions & { rules?: readonly RelpRule[] } = {}): tf.Tensor3D {
  const list = Array.isArray(saes) ? saes : [saes as Sae];
  const plan = planHooks(model, list, opts.fwdHooks ?? [], opts.useErrorTerm ?? false);
  const splices = list.flatMap((s) => spliceSae(model, s, { useErrorTerm: opts.useErrorTerm, fwdHooks: plan.saeHooks.get(s) }));
  return model.run(input, { fwdHooks: [...splices, ...plan.modelHooks], padding: opts.padding, rules: opts.rules });
}

/**
 * Value of a scalar metric of the spliced model and its gradient with respect to hook_sae_* points
 * (e.g. `blocks.2.hook_resid_post.hook_sae_acts_post` → ∂M/∂latents, [batch, pos, d_sae]), from
 * one forward and one backward pass. Each named point gets a zero delta added after its hooks;
 * d(metric)/d(delta) is the gradient. The error term is a constant (as in SAELens), so gradients
 * upstream of the SAE flow through the reconstruction only. `rules` are RelP rules for the model's
 * backward pass. Returned gradients belong to the caller.
 */
export function saeGradients(
  model: HookedModel,
  input: ModelInput,
  saes: Sae | readonly Sae[],
  names: readonly string[],
  metric: (logits: tf.Tensor3D, tokens: TokenBatch) => tf.Scalar,
  opts: RunWithSaeOptions & { rules?: readonly RelpRule[] } = {},
): { value: number; grads: Map<string, tf.Tensor> } {
  const list = Array.isArray(saes) ? saes : [saes as Sae];
  const useError = opts.useErrorTerm ?? false;
  const tokens = model.toTokens(input, opts.padding);
  const widths = names.map((name) => {
    const sae = list.find((s) => name.startsWith(s.cfg.hookName + '.'));
    if (!sae || !saeHookNames(sae, useError).includes(name)) fail(noMatchMessage(model, name, list, useError));
    return /hook_sae_acts_(pre|post)$/.test(name) ? sae.cfg.dSae : sae.cfg.dIn;
  });
  const deltas = names.map((_, i) => tf.zeros([tokens.batch, tokens.seqLen, widths[i]]));
  try {
    const { value, grads } = tf.tidy(() =>
      tf.valueAndGrads((...ds: tf.Tensor[]) => {
        const deltaHooks: FwdHook[] = names.map((n, i) => [n, (y: tf.Tensor) => tf.add(y, ds[i])]);
        // User hooks first, so the delta sits on the value the rest of the model sees.
        const logits = runWithSae(model, tokens, list, { ...opts, fwdHooks: [...(opts.fwdHooks ?? []), ...deltaHooks] });
        return metric(logits, tokens);
      })(deltas),
    );
    const v = value.dataSync()[0];
    value.dispose();
    return { value: v, grads: new Map(names.map((n, i) => [n, grads[i]])) };
  } finally {
    tf.dispose(deltas);
  }
}

export interface RunWithSaeCacheOptions extends RunWithSaeOptions {
  /** Model and hook_sae_* names or patterns to cache; default every hook (model opt-in hooks excepted). */
  names?: HookSelector[] | HookSelector;
}

/**
 * Logits and an ActivationCache holding model hooks and hook_sae_* tensors (in forward order).
 * The cache owns its tensors: dispose it.
 */
export function runWithSaeCache(
  model: HookedModel,
  input: ModelInput,
  saes: Sae | readonly Sae[],
  opts: RunWithSaeCacheOptions = {},
): { logits: tf.Tensor3D; cache: ActivationCache } {
  const list = Array.isArray(saes) ? saes : [saes as Sae];
  const useError = opts.useErrorTerm ?? false;
  const plan = planHooks(model, list, opts.fwdHooks ?? [], useError);
  const modelNames = model.hookNames();
  const allSae = list.flatMap((s) => plan.saeNames.get(s)!);
  let wantModel: string[];
  let wantSae: Set<string>;
  if (opts.names === undefined) {
    wantModel = modelNames.filter((n) => !isOptInHook(n));
    wantSae = new Set(allSae);
  } else {
    const sels = Array.isArray(opts.names) ? opts.names : [opts.names as HookSelector];
    const m = new Set<string>();
    wantSae = new Set();
    for (const sel of sels) {
      const a = matchSelector(sel, modelNames);
      const b = matchSelector(sel, allSae);
      if (a.length + b.length === 0) fail(noMatchMessage(model, sel, list, useError));
      a.forEach((n) => m.add(n));
      b.forEach((n) => wantSae.add(n));
    }
    wantModel = modelNames.filter((n) => m.has(n));
  }
  const saeStore = new Map<string, tf.Tensor>();
  const tokens = model.toTokens(input, opts.padding);
  try {
    const splices = list.flatMap((s) =>
      spliceSae(model, s, { useErrorTerm: useError, fwdHooks: plan.saeHooks.get(s), cache: { names: wantSae, store: saeStore } }),
    );
    const { logits, cache } = model.runWithCache(tokens, { names: wantModel, fwdHooks: [...splices, ...plan.modelHooks] });
    // Forward order: each SAE's points right after its hook.
    const merged = new Map<string, tf.Tensor>();
    for (const n of modelNames) {
      if (cache.has(n)) merged.set(n, cache.get(n));
      for (const s of list) if (s.cfg.hookName === n) for (const sn of plan.saeNames.get(s)!) if (saeStore.has(sn)) merged.set(sn, saeStore.get(sn)!);
    }
    return { logits, cache: new ActivationCache(model, merged, tokens) };
  } catch (e) {
    for (const t of saeStore.values()) t.dispose();
    throw e;
  }
}

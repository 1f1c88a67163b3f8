/**
 * Where in an IOI model the indirect object's identity becomes linearly readable: a logistic
 * probe for "which name is the IO" on the residual stream of every layer, at the four IOI roles
 * (IO, S1, S2, END), with Hewitt & Liang selectivity and a shuffled-label baseline.
 *
 * What to expect from a model that does IOI: at the IO token the identity is the token itself
 * (accuracy 1 from the embeddings on, selectivity ≈ 0 — the control task memorises word types
 * just as well); at S1/S2 it can only arrive by attention; at END it must be assembled before
 * the model can say the name. The embedding-layer probe at END sees one and the same token for
 * every prompt, so it must sit at the majority-class rate — a check on the pipeline itself.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { fitProbe } from '../probing/fit.js';
import { probeRowsFromArrays } from '../probing/rows.js';
import { generateIoiPrompts, singleTokenNames, type IoiPrompt, type IoiVocabulary } from '../../datasets/ioi.js';

export const IOI_PROBE_ROLES = ['IO', 'S1', 'S2', 'END'] as const;
export type IoiProbeRole = (typeof IOI_PROBE_ROLES)[number];

export interface IoiProbeCell {
  hook: string;
  /** Residual-stream index: l = input of block l; nLayers = output of the last block. */
  layer: number;
  role: IoiProbeRole;
  train: number;
  test: number;
  majority: number;
  shuffled: number;
  control: number;
  selectivity: number | null;
}

export interface IoiProbingResult {
  nPrompts: number;
  classes: number;
  hooks: string[];
  roles: readonly IoiProbeRole[];
  cells: IoiProbeCell[];
  l2: number;
  testFrac: number;
  seed: number;
  seconds: number;
}

/**
 * Prompts for the probe: the study's vocabulary with its names cut to the first `nNames` single-token
 * ones, so each IO class has tens of prompts (a 40-way probe on 300 prompts would be noise).
 */
export function ioiProbingPrompts(model: HookedModel, vocab: IoiVocabulary, opts: { n: number; seed: number; nNames?: number }): IoiPrompt[] {
  if (!model.tokenizer) fail('IOI probing: the model has no tokenizer');
  const names = singleTokenNames(model.tokenizer, vocab.names).slice(0, opts.nNames ?? 8);
  if (names.length < 3) fail(`IOI probing: only ${names.length} single-token names`);
  return generateIoiPrompts({ ...vocab, names, n: opts.n, seed: opts.seed, tokenizer: model.tokenizer, requireSameLength: true });
}

/** Token positions of IO, S1, S2 and END in one tokenized prompt. */
export function ioiRolePositions(model: HookedModel, ids: readonly number[], p: IoiPrompt): Record<IoiProbeRole, number> {
  const tokenOf = (name: string) => {
    const t = model.encode(` ${name}`).filter((id) => id !== model.cfg.bosTokenId);
    if (t.length !== 1) fail(`IOI probing: name '${name}' is not one token`);
    return t[0];
  };
  const io = tokenOf(p.io);
  const s = tokenOf(p.s);
  const ioPos = ids.indexOf(io);
  const s1 = ids.indexOf(s);
  const s2 = ids.lastIndexOf(s);
  if (ioPos < 0 || s1 < 0 || s2 === s1) fail(`IOI probing: cannot find IO / S1 / S2 in '${p.clean}'`);
  return { IO: ioPos, S1: s1, S2: s2, END: ids.length - 1 };
}

export function runIoiProbing(model: HookedModel, prompts: readonly IoiPrompt[], opts: { l2?: number; testFrac?: number; seed?: number; batch?: number } = {}): IoiProbingResult {
  const t0 = performance.now();
  const l2 = opts.l2 ?? 1e-3;
  const testFrac = opts.testFrac ?? 0.25;
  const seed = opts.seed ?? 0;
  const L = model.cfg.nLayers;
  const d = model.cfg.dModel;
  const hooks = [...Array.from({ length: L }, (_, l) => `blocks.${l}.hook_resid_pre`), `blocks.${L - 1}.hook_resid_post`];
  const encoded = prompts.map((p) => model.encode(p.clean));
  const roles = prompts.map((p, i) => ioiRolePositions(model, encoded[i], p));
  const n = prompts.length;
  // x[hook][role]: n × d rows, filled batch by batch.
  const x = hooks.map(() => IOI_PROBE_ROLES.map(() => new Float32Array(n * d)));
  const tokenAt = IOI_PROBE_ROLES.map(() => new Int32Array(n));
  const B = opts.batch ?? 32;
  for (let start = 0; start < n; start += B) {
    const ids = encoded.slice(start, start + B);
    const { logits, cache } = model.runWithCache(ids, { names: hooks });
    try {
      const T = cache.get(hooks[0]).shape[1]!;
      hooks.forEach((h, hi) => {
        const a = cache.get(h).dataSync() as Float32Array;
        for (let b = 0; b < ids.length; b++) {
          IOI_PROBE_ROLES.forEach((role, ri) => {
            const pos = roles[start + b][role];
            x[hi][ri].set(a.subarray((b * T + pos) * d, (b * T + pos + 1) * d), (start + b) * d);
            if (hi === 0) tokenAt[ri][start + b] = ids[b][pos];
          });
        }
      });
    } finally {
      cache.dispose();
      logits.dispose();
    }
  }
  const labels = prompts.map((p) => p.io);
  const promptIdx = Array.from({ length: n }, (_, i) => i);
  const cells: IoiProbeCell[] = [];
  hooks.forEach((hook, hi) => {
    IOI_PROBE_ROLES.forEach((role, ri) => {
      const rows = probeRowsFromArrays(hook, x[hi][ri], d, promptIdx, labels, undefined, tokenAt[ri]);
      const p = fitProbe(rows, { method: 'logistic', l2, testFrac, seed, control: true });
      const c = p.control!;
      cells.push({
        hook,
        layer: hi,
        role,
        train: p.train.accuracy!,
        test: p.test!.accuracy!,
        majority: p.test!.majority!,
        shuffled: c.shuffled.test!.accuracy!,
        control: c.task.test!.accuracy!,
        selectivity: c.selectivity,
      });
    });
  });
  return { nPrompts: n, classes: new Set(labels).size, hooks, roles: IOI_PROBE_ROLES, cells, l2, testFrac, seed, seconds: (performance.now() - t0) / 1000 };
}

/** Heatmap of one measure over residual layer × IOI role (vega-lite spec). */
export function ioiProbingSpec(r: IoiProbingResult, measure: 'test' | 'selectivity'): import('vega-lite').TopLevelSpec {
  const values = r.cells.map((c) => ({ layer: c.layer === r.hooks.length - 1 ? `${c.layer} (out)` : String(c.layer), hook: c.hook, role: c.role, value: c[measure], label: c[measure] === null ? '—' : (c[measure] as number).toFixed(2) }));
  const title = measure === 'test' ? `IO identity probe: test accuracy (${r.classes} classes)` : 'selectivity (test accuracy − control task)';
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values },
    width: 220,
    height: 30 * r.hooks.length,
    encoding: {
      x: { field: 'role', type: 'nominal', sort: [...r.roles], title: 'position' },
      y: { field: 'layer', type: 'ordinal', title: 'residual before block' },
    },
    layer: [
      {
        mark: 'rect',
        encoding: {
          color: { field: 'value', type: 'quantitative', scale: measure === 'test' ? { domain: [0, 1], scheme: 'blues' } : { domain: [-1, 1], scheme: 'redblue' }, title: measure },
          tooltip: [{ field: 'hook' }, { field: 'role' }, { field: 'label', title: measure }],
        },
      },
      {
        mark: { type: 'text', fontSize: 10 },
        encoding: {
          text: { field: 'label' },
          color: { condition: { test: measure === 'test' ? 'datum.value > 0.6' : 'abs(datum.value) > 0.6', value: 'white' }, value: 'black' },
        },
      },
    ],
  };
}

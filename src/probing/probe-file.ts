/**
 * Probes on disk: `probe.json` (everything, weights as nested arrays) and a sibling
 * `probe.safetensors` (`weight` [outputs, d], `bias` [outputs]; `<hook>.weight` / `<hook>.bias`
 * when one file holds a probe per hook). Both written atomically.
 */
import fs from 'node:fs';
import { fail } from '../errors.js';
import { tempPathFor, writeFileAtomic } from '../io/atomic.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { FittedProbe } from './fit.js';
import type { LabelValue } from './labels.js';
import type { PositionSpec } from './rows.js';
import type { LinearProbeWeights } from './solvers.js';

/** What a probe needs to be applied (steering, ablation, scoring). */
export interface SavedProbe {
  hook: string;
  method: string;
  classes: LabelValue[] | null;
  position?: PositionSpec;
  weights: LinearProbeWeights;
}

const round = (v: number) => (Number.isFinite(v) ? v : null);

export function probeJson(p: FittedProbe, position: PositionSpec): Record<string, unknown> {
  const { weight, bias, outputs, d } = p.weights;
  return {
    hook: p.hook,
    position,
    method: p.method,
    l2: p.l2,
    standardize: p.standardize,
    classes: p.classes,
    d,
    weights: Array.from({ length: outputs }, (_, k) => Array.from(weight.subarray(k * d, (k + 1) * d))),
    bias: Array.from(bias),
    solver: { objective: round(p.solver.objective), ...(p.solver.gradNorm !== undefined ? { grad_norm: p.solver.gradNorm, iterations: p.solver.iterations } : {}), converged: p.solver.converged },
    split: p.split,
    train: p.train,
    test: p.test,
    ...(p.control ? { control: p.control } : {}),
  };
}

/** Write the JSON (one probe, or {hook: pattern, probes: [...]}) and its safetensors sibling. */
export function writeProbeFiles(out: string, probes: FittedProbe[], position: PositionSpec, pattern?: string): { json: string; safetensors: string } {
  const st = out.replace(/\.json$/, '') + '.safetensors';
  const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const p of probes) {
    const key = probes.length === 1 && !pattern ? '' : `${p.hook}.`;
    tensors[`${key}weight`] = { data: Float32Array.from(p.weights.weight), shape: [p.weights.outputs, p.weights.d] };
    tensors[`${key}bias`] = { data: Float32Array.from(p.weights.bias), shape: [p.weights.outputs] };
  }
  const body = probes.length === 1 && !pattern ? probeJson(probes[0], position) : { hook: pattern, position, probes: probes.map((p) => probeJson(p, position)) };
  const tmp = tempPathFor(st);
  try {
    writeSafetensors(tmp, tensors);
    writeFileAtomic(out, JSON.stringify(body) + '\n');
    fs.renameSync(tmp, st);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return { json: out, safetensors: st };
}

function asProbe(o: Record<string, unknown>, file: string): SavedProbe {
  const w = o.weights;
  const b = o.bias;
  if (typeof o.hook !== 'string' || !Array.isArray(w) || !Array.isArray(b) || w.length === 0 || !Array.isArray(w[0])) fail(`${file}: not a hooklens probe (needs "hook", "weights", "bias")`);
  const d = (w[0] as unknown[]).length;
  const weight = new Float64Array(w.length * d);
  (w as unknown[][]).forEach((row, k) => {
    if (!Array.isArray(row) || row.length !== d || row.some((v) => typeof v !== 'number')) fail(`${file}: "weights" row ${k} is not ${d} numbers`);
    weight.set(row as number[], k * d);
  });
  if (b.length !== w.length || b.some((v) => typeof v !== 'number')) fail(`${file}: "bias" must be ${w.length} numbers`);
  return { hook: o.hook, method: String(o.method ?? 'logistic'), classes: (o.classes as LabelValue[] | null) ?? null, ...(o.position !== undefined ? { position: o.position as PositionSpec } : {}), weights: { weight, bias: Float64Array.from(b as number[]), outputs: w.length, d } };
}

/** Read a probe JSON; `hook` picks one probe of a per-hook file. */
export function readProbe(file: string, hook?: string): SavedProbe {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    fail(`cannot read probe ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (Array.isArray(o.probes)) {
    const all = (o.probes as Record<string, unknown>[]).map((p) => asProbe(p, file));
    if (!hook) fail(`${file} holds ${all.length} probes (${all.map((p) => p.hook).join(', ')}); pick one with --probe-hook`);
    const p = all.find((q) => q.hook === hook);
    if (!p) fail(`${file}: no probe for hook ${hook} (hooks: ${all.map((q) => q.hook).join(', ')})`);
    return p;
  }
  const p = asProbe(o, file);
  if (hook && hook !== p.hook) fail(`${file}: the probe is for ${p.hook}, not ${hook}`);
  return p;
}

/**
 * Using a probe's direction causally: add α·û at its hook (steering) or project the probe's
 * directions out of the activation (ablation), during any forward — so a probe can be checked for
 * being *used* by the model, not only decodable from it.
 *
 * û is the unit direction towards a class: the weight row for binary logistic / mean-diff / ridge
 * (towards classes[1] or larger targets); for a K-way softmax, row c minus the mean row (softmax
 * is invariant to a shared shift, so that is the part that favours c). Unit length keeps α in
 * the activation's own units whatever the probe's regularisation made ‖w‖.
 */
import * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import type { FwdHook } from '../hooks/hooked-model.js';
import type { LabelValue } from './labels.js';
import type { SavedProbe } from './probe-file.js';

export function probeDirection(p: SavedProbe, cls?: LabelValue): Float32Array {
  const { weight, outputs, d } = p.weights;
  const dir = new Float64Array(d);
  if (outputs === 1) {
    if (cls !== undefined && p.classes && String(cls) !== String(p.classes[1])) {
      if (String(cls) !== String(p.classes[0])) fail(`probe on ${p.hook}: no class ${JSON.stringify(cls)} (classes: ${p.classes.map((c) => JSON.stringify(c)).join(', ')})`);
      for (let j = 0; j < d; j++) dir[j] = -weight[j];
    } else for (let j = 0; j < d; j++) dir[j] = weight[j];
  } else {
    if (cls === undefined) fail(`probe on ${p.hook} has ${outputs} classes: name the class to steer towards (--steer-class)`);
    const c = (p.classes ?? []).findIndex((v) => String(v) === String(cls));
    if (c < 0) fail(`probe on ${p.hook}: no class ${JSON.stringify(cls)} (classes: ${(p.classes ?? []).map((v) => JSON.stringify(v)).join(', ')})`);
    for (let j = 0; j < d; j++) {
      let mean = 0;
      for (let k = 0; k < outputs; k++) mean += weight[k * d + j];
      dir[j] = weight[c * d + j] - mean / outputs;
    }
  }
  const n = Math.hypot(...dir);
  if (!(n > 0)) fail(`probe on ${p.hook}: zero direction`);
  return Float32Array.from(dir, (v) => v / n);
}

/** Orthonormal basis of the probe's weight rows (Gram–Schmidt in float64; dependent rows dropped). */
export function probeBasis(p: SavedProbe): Float32Array[] {
  const { weight, outputs, d } = p.weights;
  const basis: Float64Array[] = [];
  for (let k = 0; k < outputs; k++) {
    const v = Float64Array.from(weight.subarray(k * d, (k + 1) * d));
    const n0 = Math.hypot(...v);
    for (const b of basis) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += v[j] * b[j];
      for (let j = 0; j < d; j++) v[j] -= dot * b[j];
    }
    const n = Math.hypot(...v);
    if (n > 1e-6 * n0 && n > 0) basis.push(v.map((x) => x / n));
  }
  return basis.map((b) => Float32Array.from(b));
}

/** Positions a hook edits: all, or one index (negative from the end). */
export type EditPositions = 'all' | number;

/**
 * A probe intervention as data, so that either runtime can apply it: tfjs through a forward hook
 * (editHook), onnxruntime as graph inputs (lm-graph's `edits`).
 *   add      x + vector at the chosen positions (steering: α·û);
 *   project  x − (x·Bᵀ)·B with B's rows orthonormal (direction ablation).
 */
export type DirectionEdit =
  | { hook: string; kind: 'add'; vector: Float32Array; positions: EditPositions }
  | { hook: string; kind: 'project'; basis: Float32Array; rank: number; positions: EditPositions };

export function steeringEdit(p: SavedProbe, alpha: number, opts: { cls?: LabelValue; positions?: EditPositions } = {}): DirectionEdit {
  if (!Number.isFinite(alpha)) fail(`--alpha must be a number, got ${alpha}`);
  const u = probeDirection(p, opts.cls);
  return { hook: p.hook, kind: 'add', vector: u.map((v) => alpha * v), positions: opts.positions ?? 'all' };
}

export function ablationEdit(p: SavedProbe, opts: { positions?: EditPositions } = {}): DirectionEdit {
  const basis = probeBasis(p);
  return { hook: p.hook, kind: 'project', basis: concat(basis), rank: basis.length, positions: opts.positions ?? 'all' };
}

/**
 * The positions of a pass an edit touches, as a [T] 0/1 mask: all, or one index counted within the
 * pass (negative from its end). An index outside the pass leaves it alone — with a KV cache a
 * generation step's pass holds only its new token, so −1 is "the newest token" throughout.
 */
export function editPositionMask(positions: EditPositions, T: number): Float32Array {
  const m = new Float32Array(T);
  if (positions === 'all') return m.fill(1);
  const t = positions < 0 ? T + positions : positions;
  if (t >= 0 && t < T) m[t] = 1;
  return m;
}

/** The edit as a forward hook on the tfjs runtime. */
export function editHook(e: DirectionEdit): FwdHook {
  const width = e.kind === 'add' ? e.vector.length : e.basis.length / e.rank;
  return [e.hook, (act) => {
    const d = act.shape[act.shape.length - 1]!;
    if (d !== width) fail(`probe on ${e.hook} has d ${width}, the activation there has ${d}`);
    const T = act.shape[1]!;
    const mask = tf.tensor3d(editPositionMask(e.positions, T), [1, T, 1]);
    let delta: tf.Tensor;
    if (e.kind === 'add') delta = tf.tensor1d(e.vector);
    else {
      // −(x·Bᵀ)·B, with the basis as an [r, d] matrix.
      const B = tf.tensor2d(e.basis, [e.rank, d]);
      const flat = act.reshape([-1, d]);
      delta = tf.neg(tf.matMul(tf.matMul(flat, B, false, true), B)).reshape(act.shape);
    }
    return tf.add(act, tf.mul(mask, delta));
  }];
}

export function steeringHook(p: SavedProbe, alpha: number, opts: { cls?: LabelValue; positions?: EditPositions } = {}): FwdHook {
  return editHook(steeringEdit(p, alpha, opts));
}

export function directionAblationHook(p: SavedProbe, opts: { positions?: EditPositions } = {}): FwdHook {
  return editHook(ablationEdit(p, opts));
}

function concat(rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((s, r) => s + r.length, 0));
  let at = 0;
  for (const r of rows) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

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

function checkHookWidth(p: SavedProbe, act: tf.Tensor): void {
  const d = act.shape[act.shape.length - 1];
  if (d !== p.weights.d) fail(`probe on ${p.hook} has d ${p.weights.d}, the activation there has ${d}`);
}

/** Apply `edit` to the [batch, pos, d] activation at the chosen positions only. */
function atPositions(act: tf.Tensor, positions: EditPositions, edit: (x: tf.Tensor) => tf.Tensor): tf.Tensor {
  if (positions === 'all') return edit(act);
  const T = act.shape[1]!;
  const t = positions < 0 ? T + positions : positions;
  if (t < 0 || t >= T) fail(`steering position ${positions} is outside the ${T} positions`);
  const mask = tf.oneHot([t], T).reshape([1, T, 1]);
  return tf.add(act, tf.mul(mask, tf.sub(edit(act), act)));
}

export function steeringHook(p: SavedProbe, alpha: number, opts: { cls?: LabelValue; positions?: EditPositions } = {}): FwdHook {
  if (!Number.isFinite(alpha)) fail(`--alpha must be a number, got ${alpha}`);
  const u = probeDirection(p, opts.cls);
  return [p.hook, (act) => {
    checkHookWidth(p, act);
    return atPositions(act, opts.positions ?? 'all', (x) => tf.add(x, tf.mul(alpha, tf.tensor1d(u))));
  }];
}

export function directionAblationHook(p: SavedProbe, opts: { positions?: EditPositions } = {}): FwdHook {
  const basis = probeBasis(p);
  return [p.hook, (act) => {
    checkHookWidth(p, act);
    return atPositions(act, opts.positions ?? 'all', (x) => {
      // x − Σ_b (x·b) b, with the basis as a [d, r] matrix.
      const d = p.weights.d;
      const B = tf.tensor2d(concat(basis), [basis.length, d]);
      const flat = x.reshape([-1, d]);
      const coords = tf.matMul(flat, B, false, true);
      return tf.sub(flat, tf.matMul(coords, B)).reshape(x.shape);
    });
  }];
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

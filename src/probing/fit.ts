/**
 * Fit one probe on labelled rows: split by prompt, solve, score train and test, and (optionally)
 * the two controls that say whether the accuracy means anything:
 *   shuffled  the same probe on training labels permuted across rows (a chance baseline);
 *   task      Hewitt & Liang's control task — every word type (token id; patch position for rows
 *             without a token) gets a random fixed label drawn from the label distribution, and
 *             selectivity = test accuracy − control-task test accuracy (R² for ridge).
 */
import { fail } from '../errors.js';
import { mulberry32 } from '../util/random.js';
import type { RowMatrix } from './design-matrix.js';
import type { LbfgsOptions } from './lbfgs.js';
import { classesOf, type LabelValue } from './labels.js';
import type { ProbeRows } from './rows.js';
import { fitLogistic, fitMeanDiff, fitRidge, probeOutputs, type LinearProbeWeights, type SolverReport } from './solvers.js';
import { splitByPrompt } from './split.js';

export type ProbeMethod = 'logistic' | 'ridge' | 'mean-diff';
export const PROBE_METHODS: readonly ProbeMethod[] = ['logistic', 'ridge', 'mean-diff'];

export interface ProbeOptions {
  method: ProbeMethod;
  /** L2 strength λ in (λ/2)·‖W‖². Default 1e-3 (logistic), 1e-3 (ridge); unused by mean-diff. */
  l2?: number;
  standardize?: boolean;
  testFrac?: number;
  seed?: number;
  control?: boolean;
  lbfgs?: LbfgsOptions;
}

export interface SplitMetrics {
  n: number;
  /** Classification probes. */
  accuracy?: number;
  /** Ridge. */
  r2?: number;
  /** Mean log-loss (logistic), mean squared error (ridge); null for mean-diff. */
  loss: number | null;
  /** Classification: accuracy of always answering the training split's most frequent class. */
  majority?: number;
}

export interface ControlMetrics {
  shuffled: { train: SplitMetrics; test: SplitMetrics | null };
  task: { train: SplitMetrics; test: SplitMetrics | null };
  /**
   * Test score − control-task test score (train scores when there is no test split); null when
   * the rows hold a single word type, so the control task is one constant label and says nothing.
   */
  selectivity: number | null;
  word_types: number;
}

export interface FittedProbe {
  hook: string;
  method: ProbeMethod;
  l2: number;
  standardize: boolean;
  /** Class values (index = output class); null for ridge. Binary: output > 0 means classes[1]. */
  classes: LabelValue[] | null;
  weights: LinearProbeWeights;
  solver: SolverReport;
  split: { test_frac: number; seed: number; train_prompts: number; test_prompts: number };
  train: SplitMetrics;
  test: SplitMetrics | null;
  control?: ControlMetrics;
}

function subset(rows: RowMatrix, idx: Int32Array): RowMatrix {
  const { x, d } = rows;
  const out = new Float32Array(idx.length * d);
  idx.forEach((r, i) => out.set(x.subarray(r * d, (r + 1) * d), i * d));
  return { x: out, n: idx.length, d };
}

/** Accuracy and log-loss of class logits (binary: one logit). */
function classMetrics(z: Float32Array, y: Int32Array, outputs: number, withLoss: boolean): SplitMetrics {
  const n = y.length;
  let correct = 0;
  let loss = 0;
  for (let r = 0; r < n; r++) {
    if (outputs === 1) {
      const v = z[r];
      if ((v > 0 ? 1 : 0) === y[r]) correct++;
      // −log σ(±v), stably.
      const s = y[r] === 1 ? v : -v;
      loss += s > 0 ? Math.log1p(Math.exp(-s)) : -s + Math.log1p(Math.exp(s));
    } else {
      let best = 0;
      let mx = -Infinity;
      for (let k = 0; k < outputs; k++) {
        const v = z[r * outputs + k];
        if (v > mx) {
          mx = v;
          best = k;
        }
      }
      if (best === y[r]) correct++;
      let se = 0;
      for (let k = 0; k < outputs; k++) se += Math.exp(z[r * outputs + k] - mx);
      loss += mx + Math.log(se) - z[r * outputs + y[r]];
    }
  }
  return { n, accuracy: correct / n, loss: withLoss ? loss / n : null };
}

function regressionMetrics(pred: Float32Array, t: Float64Array): SplitMetrics {
  const n = t.length;
  let mean = 0;
  for (const v of t) mean += v;
  mean /= n;
  let sse = 0;
  let sst = 0;
  for (let r = 0; r < n; r++) {
    sse += (t[r] - pred[r]) ** 2;
    sst += (t[r] - mean) ** 2;
  }
  return { n, r2: sst > 0 ? 1 - sse / sst : Number.NaN, loss: sse / n };
}

interface Targets {
  /** Class indices (classification) or values (ridge). */
  y: Int32Array | Float64Array;
}

function solve(method: ProbeMethod, m: RowMatrix, t: Targets, classes: number, opts: Required<Pick<ProbeOptions, 'l2' | 'standardize'>> & { lbfgs?: LbfgsOptions }): { weights: LinearProbeWeights; solver: SolverReport } {
  const r =
    method === 'ridge'
      ? fitRidge(m, t.y as Float64Array, opts)
      : method === 'mean-diff'
        ? fitMeanDiff(m, t.y as Int32Array, opts)
        : fitLogistic(m, t.y as Int32Array, classes, opts);
  return { weights: r.probe, solver: r.report };
}

function score(method: ProbeMethod, w: LinearProbeWeights, m: RowMatrix, t: Targets): SplitMetrics {
  const z = probeOutputs(m, w);
  return method === 'ridge' ? regressionMetrics(z, t.y as Float64Array) : classMetrics(z, t.y as Int32Array, w.outputs, method === 'logistic');
}

function pick<T extends Int32Array | Float64Array>(y: T, idx: Int32Array): T {
  const out = new (y.constructor as new (n: number) => T)(idx.length);
  idx.forEach((r, i) => (out[i] = y[r]));
  return out;
}

export function fitProbe(rows: ProbeRows, opts: ProbeOptions): FittedProbe {
  const method = opts.method;
  if (!PROBE_METHODS.includes(method)) fail(`unknown probe method '${method}' (methods: ${PROBE_METHODS.join(', ')})`);
  const l2 = opts.l2 ?? 1e-3;
  if (!(l2 >= 0) || !Number.isFinite(l2)) fail(`--l2 must be a non-negative number, got ${l2}`);
  if (method === 'logistic' && l2 === 0) fail('--l2 0: logistic regression on separable activations has no minimiser; use --l2 > 0');
  const standardize = opts.standardize ?? false;
  const testFrac = opts.testFrac ?? 0.2;
  const seed = opts.seed ?? 0;

  let classes: LabelValue[] | null = null;
  let y: Int32Array | Float64Array;
  if (method === 'ridge') {
    if (rows.labels.some((l) => typeof l !== 'number')) fail(`${rows.hook}: ridge needs numeric labels`);
    y = Float64Array.from(rows.labels as number[]);
  } else {
    classes = classesOf(rows.labels);
    if (classes.length < 2) fail(`${rows.hook}: only one class (${JSON.stringify(classes[0])}) among ${rows.n} labelled rows; a probe needs at least two`);
    if (method === 'mean-diff' && classes.length !== 2) fail(`${rows.hook}: mean-diff is for two classes, got ${classes.length}`);
    const index = new Map(classes.map((c, i) => [c, i]));
    y = Int32Array.from(rows.labels, (l) => index.get(l)!);
  }
  const K = classes?.length ?? 0;
  const split = splitByPrompt(rows.prompt, testFrac, seed);
  const train = subset(rows, split.train);
  const test = split.test.length ? subset(rows, split.test) : null;
  if (classes) {
    const present = new Set(pick(y as Int32Array, split.train));
    if (present.size < 2) fail(`${rows.hook}: the training split holds one class only; use more prompts or another --seed`);
  }
  const yTrain = { y: pick(y, split.train) };
  const yTest = { y: pick(y, split.test) };
  const solverOpts = { l2, standardize, ...(opts.lbfgs ? { lbfgs: opts.lbfgs } : {}) };
  const { weights, solver } = solve(method, train, yTrain, K, solverOpts);
  const result: FittedProbe = {
    hook: rows.hook,
    method,
    l2,
    standardize,
    classes,
    weights,
    solver,
    split: { test_frac: testFrac, seed, train_prompts: split.trainPrompts, test_prompts: split.testPrompts },
    train: score(method, weights, train, yTrain),
    test: test ? score(method, weights, test, yTest) : null,
  };
  if (classes) {
    const counts = new Map<number, number>();
    for (const v of yTrain.y) counts.set(v, (counts.get(v) ?? 0) + 1);
    const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
    const rate = (t: ArrayLike<number>) => (t.length ? Array.from(t).filter((v) => v === top).length / t.length : Number.NaN);
    result.train.majority = rate(yTrain.y);
    if (result.test) result.test.majority = rate(yTest.y);
  }
  if (opts.control) result.control = controls(rows, y, split, train, test, method, K, solverOpts, seed, result);
  return result;
}

function controls(rows: ProbeRows, y: Int32Array | Float64Array, split: { train: Int32Array; test: Int32Array }, train: RowMatrix, test: RowMatrix | null, method: ProbeMethod, K: number, solverOpts: Required<Pick<ProbeOptions, 'l2' | 'standardize'>>, seed: number, real: FittedProbe): ControlMetrics {
  const rng = mulberry32(seed ^ 0x5eed);
  // Shuffled: permute the training labels; evaluate against the true labels.
  const shuffled = pick(y, split.train);
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  const sh = safeSolve(method, train, { y: shuffled }, K, solverOpts);
  // Control task: a random fixed label per word type, drawn from the empirical label distribution.
  const typeOf = (r: number) => (rows.token[r] >= 0 ? `t${rows.token[r]}` : `p${rows.pos[r]}`);
  const typeLabel = new Map<string, number>();
  const ctl = new (y.constructor as new (n: number) => Int32Array | Float64Array)(y.length);
  for (let r = 0; r < y.length; r++) {
    const ty = typeOf(r);
    if (!typeLabel.has(ty)) typeLabel.set(ty, y[Math.floor(rng() * y.length)]);
    ctl[r] = typeLabel.get(ty)!;
  }
  const ctlTrain = { y: pick(ctl, split.train) };
  const ctlTest = { y: pick(ctl, split.test) };
  const ct = safeSolve(method, train, ctlTrain, K, solverOpts);
  const scoreOf = (m: SplitMetrics | null) => (m ? (m.accuracy ?? m.r2 ?? Number.NaN) : Number.NaN);
  const taskTrain = score(method, ct, train, ctlTrain);
  const taskTest = test ? score(method, ct, test, ctlTest) : null;
  const realScore = real.test ? scoreOf(real.test) : scoreOf(real.train);
  return {
    shuffled: { train: score(method, sh, train, { y: shuffled }), test: test ? score(method, sh, test, { y: pick(y, split.test) }) : null },
    task: { train: taskTrain, test: taskTest },
    selectivity: typeLabel.size > 1 ? realScore - scoreOf(real.test ? taskTest : taskTrain) : null,
    word_types: typeLabel.size,
  };
}

/** A control can legitimately collapse to one class (few word types): then it predicts that class. */
function safeSolve(method: ProbeMethod, m: RowMatrix, t: Targets, K: number, opts: Required<Pick<ProbeOptions, 'l2' | 'standardize'>>): LinearProbeWeights {
  if (method !== 'ridge' && new Set(t.y).size < 2) return constantProbe(m.d, method === 'logistic' ? K : 2, (t.y as Int32Array)[0]);
  return solve(method, m, t, K, opts).weights;
}

function constantProbe(d: number, K: number, cls: number): LinearProbeWeights {
  const outputs = K === 2 ? 1 : K;
  const bias = new Float64Array(outputs);
  if (outputs === 1) bias[0] = cls === 1 ? 1 : -1;
  else bias[cls] = 1;
  return { weight: new Float64Array(outputs * d), bias, outputs, d };
}

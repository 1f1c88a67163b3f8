/**
 * L-BFGS for smooth convex objectives, in float64 on the host.
 *
 * Written here because npm has no maintained L-BFGS (the few packages are unmaintained ports) and
 * the probes need one specific property: the objective's value comes from float32 matmuls, so
 * near the optimum function differences sink below its rounding noise long before the gradient
 * norm reaches 1e-6. The line search therefore accepts Hager & Zhang's *approximate* Wolfe
 * conditions (gradient-only, valid while f has not risen by more than ε|f|), which is what
 * CG_DESCENT does for the same reason; otherwise it is the textbook two-loop recursion with a
 * strong-Wolfe bracketing/zoom line search (Nocedal & Wright, Alg. 7.4, 3.5, 3.6).
 */

export interface Objective {
  /** Value and gradient at x (g is written into `grad`). */
  (x: Float64Array, grad: Float64Array): number;
}

export interface LbfgsOptions {
  /** Stop when ‖∇f‖₂ ≤ gradTol. Default 1e-6. */
  gradTol?: number;
  maxIter?: number;
  /** History pairs kept. Default 10. */
  memory?: number;
  /** Called after every iteration (progress, cancellation by throwing). */
  onIter?: (iter: number, f: number, gradNorm: number) => void;
}

export interface LbfgsResult {
  x: Float64Array;
  f: number;
  gradNorm: number;
  iterations: number;
  evaluations: number;
  converged: boolean;
  /** Why it stopped: 'gradient' (converged), 'max-iter', or 'line-search' (no further progress possible). */
  reason: 'gradient' | 'max-iter' | 'line-search';
}

const dot = (a: Float64Array, b: Float64Array): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const norm = (a: Float64Array): number => Math.sqrt(dot(a, a));

const C1 = 1e-4;
const C2 = 0.9;
/** Approximate-Wolfe slack on f, relative (Hager & Zhang's ε). */
const EPS_F = 1e-6;

export function minimizeLbfgs(f: Objective, x0: Float64Array, opts: LbfgsOptions = {}): LbfgsResult {
  const gradTol = opts.gradTol ?? 1e-6;
  const maxIter = opts.maxIter ?? 2000;
  const m = opts.memory ?? 10;
  const n = x0.length;
  let x: Float64Array = Float64Array.from(x0);
  let g: Float64Array = new Float64Array(n);
  let fx = f(x, g);
  let evaluations = 1;
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  const rho: number[] = [];
  const p = new Float64Array(n);
  const alpha = new Float64Array(m);
  let iter = 0;
  let gn = norm(g);
  while (gn > gradTol) {
    if (iter >= maxIter) return { x, f: fx, gradNorm: gn, iterations: iter, evaluations, converged: false, reason: 'max-iter' };
    // Two-loop recursion: p = −H·g.
    for (let i = 0; i < n; i++) p[i] = -g[i];
    for (let k = S.length - 1; k >= 0; k--) {
      alpha[k] = rho[k] * dot(S[k], p);
      const y = Y[k];
      for (let i = 0; i < n; i++) p[i] -= alpha[k] * y[i];
    }
    const gamma = S.length ? dot(S[S.length - 1], Y[Y.length - 1]) / dot(Y[Y.length - 1], Y[Y.length - 1]) : 1 / Math.max(gn, 1e-12);
    for (let i = 0; i < n; i++) p[i] *= gamma;
    for (let k = 0; k < S.length; k++) {
      const beta = rho[k] * dot(Y[k], p);
      const s = S[k];
      for (let i = 0; i < n; i++) p[i] += (alpha[k] - beta) * s[i];
    }
    let dphi0 = dot(g, p);
    if (!(dphi0 < 0)) {
      // Not a descent direction (lost curvature information): restart from steepest descent.
      S.length = Y.length = rho.length = 0;
      for (let i = 0; i < n; i++) p[i] = -g[i] / Math.max(gn, 1e-12);
      dphi0 = dot(g, p);
    }
    const ls = lineSearch(f, x, fx, g, p, dphi0);
    evaluations += ls.evaluations;
    if (!ls.ok) {
      if (S.length === 0) return { x, f: fx, gradNorm: gn, iterations: iter, evaluations, converged: false, reason: 'line-search' };
      S.length = Y.length = rho.length = 0; // retry once from steepest descent
      continue;
    }
    const s = new Float64Array(n);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = ls.x[i] - x[i];
      y[i] = ls.g[i] - g[i];
    }
    const sy = dot(s, y);
    if (sy > 1e-16 * norm(s) * norm(y)) {
      if (S.length === m) {
        S.shift();
        Y.shift();
        rho.shift();
      }
      S.push(s);
      Y.push(y);
      rho.push(1 / sy);
    }
    x = ls.x;
    g = ls.g;
    fx = ls.f;
    gn = norm(g);
    iter++;
    opts.onIter?.(iter, fx, gn);
  }
  return { x, f: fx, gradNorm: gn, iterations: iter, evaluations, converged: true, reason: 'gradient' };
}

interface Trial {
  a: number;
  f: number;
  dphi: number;
  x: Float64Array;
  g: Float64Array;
}

function lineSearch(f: Objective, x: Float64Array, f0: number, g0: Float64Array, p: Float64Array, dphi0: number): { ok: boolean; x: Float64Array; g: Float64Array; f: number; evaluations: number } {
  const n = x.length;
  let evaluations = 0;
  const evalAt = (a: number): Trial => {
    const xa = new Float64Array(n);
    for (let i = 0; i < n; i++) xa[i] = x[i] + a * p[i];
    const ga = new Float64Array(n);
    const fa = f(xa, ga);
    evaluations++;
    return { a, f: fa, dphi: dot(ga, p), x: xa, g: ga };
  };
  const fTol = EPS_F * Math.abs(f0);
  const acceptable = (t: Trial): boolean => {
    if (!Number.isFinite(t.f)) return false;
    const wolfe = t.f <= f0 + C1 * t.a * dphi0 && Math.abs(t.dphi) <= -C2 * dphi0;
    const approx = t.f <= f0 + fTol && (2 * C1 - 1) * dphi0 >= t.dphi && t.dphi >= C2 * dphi0;
    return wolfe || approx;
  };
  const done = (t: Trial) => ({ ok: true, x: t.x, g: t.g, f: t.f, evaluations });
  const fail = () => ({ ok: false, x, g: g0, f: f0, evaluations });

  let prev: Trial = { a: 0, f: f0, dphi: dphi0, x, g: g0 };
  let a = 1;
  for (let i = 0; i < 30; i++) {
    const t = evalAt(a);
    if (acceptable(t)) return done(t);
    if (!Number.isFinite(t.f) || t.f > f0 + C1 * a * dphi0 + fTol || (i > 0 && t.f >= prev.f) || t.dphi >= 0) {
      const z = zoom(evalAt, acceptable, prev, t, f0, dphi0, fTol);
      return z ? done(z) : fail();
    }
    prev = t;
    a *= 2;
  }
  return fail();
}

/** Shrink [lo, hi] (lo: lower f and still descending) until a trial is acceptable. */
function zoom(evalAt: (a: number) => Trial, acceptable: (t: Trial) => boolean, lo: Trial, hi: Trial, f0: number, dphi0: number, fTol: number): Trial | null {
  for (let i = 0; i < 50; i++) {
    let a = cubicMin(lo, hi);
    const left = Math.min(lo.a, hi.a);
    const width = Math.abs(hi.a - lo.a);
    // Safeguard: stay well inside the bracket, else bisect.
    if (!Number.isFinite(a) || a < left + 0.1 * width || a > left + 0.9 * width) a = (lo.a + hi.a) / 2;
    if (width < 1e-16 * Math.max(1, Math.abs(lo.a))) return null;
    const t = evalAt(a);
    if (acceptable(t)) return t;
    if (!Number.isFinite(t.f) || t.f > f0 + C1 * a * dphi0 + fTol || t.f >= lo.f) {
      hi = t;
    } else {
      if (t.dphi * (hi.a - lo.a) >= 0) hi = lo;
      lo = t;
    }
  }
  return null;
}

/** Minimiser of the cubic through two trials' values and slopes (NaN when it has none). */
function cubicMin(p: Trial, q: Trial): number {
  const d1 = p.dphi + q.dphi - (3 * (p.f - q.f)) / (p.a - q.a);
  const disc = d1 * d1 - p.dphi * q.dphi;
  if (!(disc >= 0) || !Number.isFinite(p.f) || !Number.isFinite(q.f)) return NaN;
  const d2 = Math.sign(q.a - p.a) * Math.sqrt(disc);
  return q.a - (q.a - p.a) * ((q.dphi + d2 - d1) / (q.dphi - p.dphi + 2 * d2));
}

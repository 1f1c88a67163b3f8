/**
 * Token-level IOI-shaped prompt pairs for any vocabulary (no tokenizer needed): smoke tests and
 * sanity checks of the circuit tools on models that were never trained on IOI.
 *
 * Layout (one fixed filler sequence per template, so positions line up within a template):
 *   [BOS] f0 X f1 Y f2 f3 S2 f4      with {X, Y} = {IO, S} in ABBA or BABA order
 * answer = IO, wrong = S; corrupt = clean with S2 replaced by a third name C (ABC corruption).
 * Names are drawn from `names` (default: 12 seeded ids), fillers from the remaining ids.
 */
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { PromptPair } from '../patching/pairs.js';
import { mulberry32 } from '../util/random.js';

export interface SyntheticIoiOptions {
  n: number;
  seed?: number;
  /** Name token ids (at least 3). */
  names?: number[];
  /** Number of filler templates (default 3). */
  templates?: number;
  /** Prepend BOS when the model has one (default true). */
  bos?: boolean;
}

export function syntheticIoiPairs(model: HookedModel, opts: SyntheticIoiOptions): { pairs: PromptPair[]; template: number[] } {
  const { cfg } = model;
  const rand = mulberry32(opts.seed ?? 0);
  const special = new Set([cfg.bosTokenId, cfg.eosTokenId, cfg.padTokenId].filter((x): x is number => x !== null));
  const pool = Array.from({ length: cfg.dVocab }, (_, i) => i).filter((i) => !special.has(i));
  const pick = (xs: number[]) => xs.splice(Math.floor(rand() * xs.length), 1)[0]!;
  const names = opts.names ? [...opts.names] : Array.from({ length: 12 }, () => pick(pool));
  if (names.length < 3) fail('synthetic IOI: need at least 3 names');
  const nameSet = new Set(names);
  const fillers = pool.filter((i) => !nameSet.has(i));
  const nT = opts.templates ?? 3;
  const templates = Array.from({ length: nT }, () => Array.from({ length: 5 }, () => fillers[Math.floor(rand() * fillers.length)]!));
  const prefix = (opts.bos ?? true) && cfg.bosTokenId !== null ? [cfg.bosTokenId] : [];
  const pairs: PromptPair[] = [];
  const template: number[] = [];
  for (let i = 0; i < opts.n; i++) {
    const t = Math.floor(rand() * nT);
    const ns = [...names];
    const io = pick(ns);
    const s = pick(ns);
    const c = pick(ns);
    const [x, y] = rand() < 0.5 ? [io, s] : [s, io];
    const f = templates[t]!;
    const clean = [...prefix, f[0]!, x, f[1]!, y, f[2]!, f[3]!, s, f[4]!];
    const corrupt = [...clean];
    corrupt[prefix.length + 6] = c;
    pairs.push({ clean, corrupt, answer: io, wrong: s });
    template.push(t);
  }
  return { pairs, template };
}

/**
 * The IOI mechanism at the level of SAE latents: the shipped IOI-model SAE (datasets/ioi-gpt2-sae,
 * made by scripts/train-ioi-sae.ts) at `blocks.0.hook_resid_post`, on held-out IOI prompt pairs
 * (test split names and templates, ABC corruption: S2 → a third name C; as scripts/ioi-circuit.ts).
 *
 *   npx tsx scripts/ioi-sae-latents.ts [--model datasets/ioi-gpt2] [--sae datasets/ioi-gpt2-sae]
 *       [--n 64] [--seed 0] [--top 10] [--out SAE_DIR/latents.json]
 *
 * Scores are on the patching suite's scale (denoising, normalised: 1 = restores the clean logit
 * difference IO − S at the final position; the SAE is spliced with its error term, which stays
 * the corrupt run's when a latent is patched):
 *  - AtP and RelP for every latent and for the error term (latentAttribution), with the check that
 *    Σ latents + error = the whole hook's AtP (RelP) — the resid_pre grid of layer 1 summed over
 *    positions;
 *  - exact activation patching of the top latents by |AtP| (latentActivationPatching), and of
 *    groups: the top latents together, every latent (error kept corrupt), the error term alone
 *    (latents kept corrupt), the whole activation;
 *  - where the AtP of each top latent comes from: its per-position terms summed by the position's
 *    role (IO, S1, S2, END = the final token "to", other tokens);
 *  - what the top latents respond to: mean activation and firing rate by role on the clean and the
 *    corrupt prompts, feature statistics (computeFeatureStats) over 256 held-out IOI prompts
 *    (with their answer token) and over 1000 corpus documents (the SAE's training distribution:
 *    IOI sentences, name lists, filler), top-activating contexts, the share of activation mass on
 *    name tokens, and the direct logit effects of the decoder direction.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { generateIoiPrompts, mulberry32, type IoiPrompt } from '../datasets/ioi.js';
import { IOI_MODEL_SPLIT, MODEL_NAMES, sampleDocument } from '../datasets/ioi-corpus.js';
import { ioiPromptPairs, namesKnownTo } from '../src/circuits/ioi-report.js';
import { mean, pairBatches, rowMetrics } from '../src/circuits/common.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { loadModel } from '../src/models/load.js';
import { finalRow, metricPerPrompt, normalise } from '../src/patching/metrics.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { PatchingSession } from '../src/patching/session.js';
import { latentActivationPatching, latentAttribution, topLatents } from '../src/sae/attribution.js';
import { computeFeatureStats, vocabStrings, type FeatureRecord } from '../src/sae/feature-stats.js';
import { loadSae } from '../src/sae/io.js';
import { replaceAtSaeHook, toSaeRows, saeHookLayout } from '../src/sae/splice.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'datasets/ioi-gpt2' },
    sae: { type: 'string', default: 'datasets/ioi-gpt2-sae' },
    n: { type: 'string', default: '64' },
    seed: { type: 'string', default: '0' },
    top: { type: 'string', default: '10' },
    out: { type: 'string' },
  },
});
const N = Number(values.n);
const SEED = Number(values.seed);
const TOP = Number(values.top);
if (!Number.isInteger(N) || N < 2) throw new Error(`--n must be an integer ≥ 2, got ${values.n}`);
if (!Number.isInteger(SEED) || SEED < 0) throw new Error(`--seed must be a non-negative integer, got ${values.seed}`);
if (!Number.isInteger(TOP) || TOP < 1) throw new Error(`--top must be a positive integer, got ${values.top}`);
const OUT = values.out ?? path.join(values.sae!, 'latents.json');

const round = (x: number, d = 4) => (Number.isFinite(x) ? Number(x.toFixed(d)) : x);
const t0 = performance.now();
const model = await loadModel(values.model!);
const tokenizer = model.tokenizer!;
const { sae } = loadSae(values.sae!);
const layout = saeHookLayout(model, sae);
const HOOK = layout.hook;
const layerAfter = Number(/^blocks\.(\d+)\.hook_resid_post$/.exec(HOOK)?.[1] ?? NaN) + 1;
if (!Number.isInteger(layerAfter)) throw new Error(`this script expects an SAE at blocks.L.hook_resid_post, got ${HOOK}`);

// ---- prompt pairs (held-out names and templates; one token length)
const testNames = namesKnownTo(tokenizer, IOI_MODEL_SPLIT.test.names);
const prompts = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names: testNames, n: N, seed: SEED, tokenizer, requireSameLength: true });
const pairs = ioiPromptPairs(model, prompts);
const T = pairs[0].clean.length;

type Role = 'BOS' | 'IO' | 'S1' | 'S2' | 'END' | 'other';
const ROLES: Role[] = ['BOS', 'IO', 'S1', 'S2', 'END', 'other'];
/** Role of each position of a pair's prompts (clean and corrupt share positions; corrupt has C at S2). */
function roles(p: PromptPair): Role[] {
  const r: Role[] = p.clean.map(() => 'other');
  r[0] = 'BOS';
  const sPos = p.clean.flatMap((id, i) => (id === p.wrong ? [i] : []));
  const ioPos = p.clean.indexOf(p.answer);
  if (sPos.length !== 2 || ioPos < 0) throw new Error(`pair with ${sPos.length} S tokens / IO at ${ioPos}`);
  r[ioPos] = 'IO';
  r[sPos[0]] = 'S1';
  r[sPos[1]] = 'S2';
  r[p.clean.length - 1] = 'END';
  return r;
}
const pairRoles = pairs.map(roles);

// ---- AtP / RelP of every latent and of the error term; whole-hook check
const atp = latentAttribution(model, sae, pairs, 'atp');
const relp = latentAttribution(model, sae, pairs, 'relp');
const session = new PatchingSession(model, pairs);
const wholeGrid = {
  atp: (session.grid('resid_pre', 'atp').scores as number[][])[layerAfter],
  relp: (session.grid('resid_pre', 'relp').scores as number[][])[layerAfter],
  activation: (session.grid('resid_pre', 'activation').scores as number[][])[layerAfter],
};
session.dispose();
const sum = (xs: ArrayLike<number>) => Array.from(xs).reduce((a, b) => a + b, 0);
const conservation = {
  atp: { latents: sum(atp.scores), error: atp.error, latents_plus_error: sum(atp.scores) + atp.error, whole_hook: sum(wholeGrid.atp) },
  relp: { latents: sum(relp.scores), error: relp.error, latents_plus_error: sum(relp.scores) + relp.error, whole_hook: sum(wholeGrid.relp) },
};

// ---- activation patching: top latents one at a time, then groups
const top = topLatents(atp, TOP);
const topIds = top.map((t) => t.latent);
const act = latentActivationPatching(model, sae, pairs, topIds);

const { clean, corrupt, targets } = pairBatches(model, pairs);
function hookRows(tokens: typeof clean): tf.Tensor2D {
  const { logits, cache } = model.runWithCache(tokens, { names: [HOOK], finalPositionOnly: true });
  logits.dispose();
  const rows = tf.tidy(() => toSaeRows(cache.get(HOOK), layout));
  cache.dispose();
  return rows;
}
const xClean = hookRows(clean);
const xCorrupt = hookRows(corrupt);
const aClean = sae.encode(xClean);
const aCorrupt = sae.encode(xCorrupt);
const errClean = tf.tidy(() => tf.sub(xClean, sae.decode(aClean, xClean))) as tf.Tensor2D;
const ldOf = (hooks: ReturnType<typeof replaceAtSaeHook>[]) => {
  const logits = model.run(corrupt, { finalPositionOnly: true, fwdHooks: hooks });
  const m = mean(rowMetrics('logit_diff', logits, targets));
  logits.dispose();
  return normalise(m, atp.mClean, atp.mCorrupt);
};
/** Corrupt run with the listed latents (null: all) set to their clean values; error term from `errFrom`. */
function patchGroup(latents: number[] | null, errFrom: 'corrupt' | 'clean'): number {
  const dSae = sae.cfg.dSae;
  const mask = tf.tidy(() => {
    const m = new Float32Array(dSae);
    if (latents === null) m.fill(1);
    else latents.forEach((f) => (m[f] = 1));
    return tf.tensor1d(m);
  });
  try {
    return ldOf([
      replaceAtSaeHook(model, sae, (rows) =>
        tf.tidy(() => {
          const a = sae.encode(rows);
          const err = errFrom === 'clean' ? errClean : tf.sub(rows, sae.decode(a, rows));
          const patched = tf.add(a, tf.mul(tf.sub(aClean, a), mask)) as tf.Tensor2D;
          return tf.add(sae.decode(patched, rows), err) as tf.Tensor2D;
        }),
      ),
    ]);
  } finally {
    mask.dispose();
  }
}
const groups = {
  [`top_${TOP}_latents_together`]: patchGroup(topIds, 'corrupt'),
  top_3_latents_together: patchGroup(topIds.slice(0, 3), 'corrupt'),
  all_latents_error_corrupt: patchGroup(null, 'corrupt'),
  error_only_latents_corrupt: patchGroup([], 'clean'),
  whole_activation: patchGroup(null, 'clean'),
  whole_activation_by_position_sum: sum(wholeGrid.activation),
};

// ---- per-position AtP terms of the top latents, summed by role
const g = model.gradients(corrupt, [HOOK], (logits) => tf.mean(metricPerPrompt('logit_diff', finalRow(logits), targets)), { finalPositionOnly: true });
const terms = tf.tidy(() => {
  const gRows = toSaeRows(g.grads.get(HOOK)!, layout);
  const dMda = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(gRows, sae.decode(a as tf.Tensor2D, xCorrupt))))(aCorrupt);
  return tf.gather(tf.mul(tf.sub(aClean, aCorrupt), dMda), topIds, 1);
});
const termData = terms.dataSync();
terms.dispose();
g.grads.get(HOOK)!.dispose();
const denom = atp.mClean - atp.mCorrupt;
const atpByRole = topIds.map((_, j) => {
  const byRole = Object.fromEntries(ROLES.map((r) => [r, 0])) as Record<Role, number>;
  pairRoles.forEach((rs, b) => rs.forEach((r, t) => (byRole[r] += termData[(b * T + t) * topIds.length + j] / denom)));
  return Object.fromEntries(ROLES.map((r) => [r, round(byRole[r])]));
});

// ---- activation by role on the pairs (clean and corrupt)
function actByRole(a: tf.Tensor2D): { mean: Record<Role, number>; rate: Record<Role, number> }[] {
  const sub = tf.gather(a, topIds, 1);
  const d = sub.dataSync();
  sub.dispose();
  return topIds.map((_, j) => {
    const s = Object.fromEntries(ROLES.map((r) => [r, 0])) as Record<Role, number>;
    const fired = { ...s };
    const n = { ...s };
    pairRoles.forEach((rs, b) =>
      rs.forEach((r, t) => {
        const v = d[(b * T + t) * topIds.length + j];
        s[r] += v;
        n[r]++;
        if (v > 0) fired[r]++;
      }),
    );
    return {
      mean: Object.fromEntries(ROLES.map((r) => [r, round(s[r] / n[r], 3)])) as Record<Role, number>,
      rate: Object.fromEntries(ROLES.map((r) => [r, round(fired[r] / n[r], 3)])) as Record<Role, number>,
    };
  });
}
const byRoleClean = actByRole(aClean);
const byRoleCorrupt = actByRole(aCorrupt);
tf.dispose([xClean, xCorrupt, aClean, aCorrupt, errClean]);

// ---- feature statistics over held-out IOI prompts (+ answer) and over corpus documents
const heldOut: IoiPrompt[] = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names: testNames, n: 256, seed: 1, tokenizer, requireSameLength: false });
const heldOutTokens = heldOut.map((p) => model.encode(p.clean + p.answer));
const rand = mulberry32(1000 + SEED);
const docs = Array.from({ length: 1000 }, () => sampleDocument(rand, IOI_MODEL_SPLIT.train, 0.6));
const docTokens = docs.map((d) => model.encode(d));
const statOpts = { topK: 12, context: 6, correlationTopN: 0, logitTopN: 6, quantileExamples: 1, quantileBands: 2 };
const statsIoi = await computeFeatureStats(model, sae, heldOutTokens, statOpts);
const statsDocs = await computeFeatureStats(model, sae, docTokens, statOpts);
const nameIds = new Set(MODEL_NAMES.map((n) => tokenizer.encode(' ' + n, { addSpecialTokens: false })).filter((ids) => ids.length === 1).map((ids) => ids[0]));

/** Share of a feature's activation mass on name tokens, and its mean activation on names / other tokens. */
function nameShare(prompts: number[][], f: number): { mass_on_names: number; mean_on_names: number; mean_on_other: number; rate_on_names: number; rate_on_other: number } {
  let onN = 0, onO = 0, nN = 0, nO = 0, fN = 0, fO = 0;
  for (const p of prompts) {
    const held: tf.Tensor[] = [];
    model.run([p], { stopAtLayer: layerAfter - 1, fwdHooks: [[HOOK, (x) => void held.push(tf.keep(toSaeRows(x, layout)))]] }).dispose();
    const a = tf.tidy(() => tf.gather(sae.encode(held[0] as tf.Tensor2D), [f], 1));
    const d = a.dataSync();
    tf.dispose([a, ...held]);
    p.forEach((id, t) => {
      if (nameIds.has(id)) ((onN += d[t]), nN++, d[t] > 0 && fN++);
      else ((onO += d[t]), nO++, d[t] > 0 && fO++);
    });
  }
  return { mass_on_names: round(onN / (onN + onO || 1), 3), mean_on_names: round(onN / nN, 3), mean_on_other: round(onO / nO, 3), rate_on_names: round(fN / nN, 3), rate_on_other: round(fO / nO, 3) };
}

// ---- which name drives each top latent at END: IO or S? (1024 more held-out prompts, clean and corrupt)
// η²(name) = share of the variance of the END activation explained by which name fills the role
// (chance level ≈ (names − 1)/(prompts − 1) ≈ 0.04); r = Pearson correlation of the END activation
// with the latent's direct logit effect on that name (W_dec[f] through ln_final, linearised, and W_U).
const nameProbe = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names: testNames, n: 1024, seed: 3, tokenizer, requireSameLength: false });
/** END-position activations of every latent, [prompt][latent]. */
function endActs(texts: string[]): number[][] {
  const byLen = new Map<number, number[]>();
  const ids = texts.map((t) => model.encode(t));
  ids.forEach((p, i) => byLen.set(p.length, [...(byLen.get(p.length) ?? []), i]));
  const out: number[][] = new Array(texts.length);
  for (const [len, idx] of byLen) {
    for (let i0 = 0; i0 < idx.length; i0 += 64) {
      const chunk = idx.slice(i0, i0 + 64);
      const held: tf.Tensor[] = [];
      model.run(chunk.map((i) => ids[i]), { stopAtLayer: layerAfter - 1, fwdHooks: [[HOOK, (x) => void held.push(tf.keep(toSaeRows(x, layout)))]] }).dispose();
      const a = tf.tidy(() => {
        const rows = tf.gather(held[0] as tf.Tensor2D, chunk.map((_, b) => b * len + len - 1));
        return sae.encode(rows as tf.Tensor2D);
      });
      const d = a.dataSync();
      tf.dispose([a, ...held]);
      const D = sae.cfg.dSae;
      chunk.forEach((i, b) => (out[i] = Array.from(d.subarray(b * D, (b + 1) * D))));
    }
  }
  return out;
}
const probeClean = endActs(nameProbe.map((p) => p.clean));
const probeCorrupt = endActs(nameProbe.map((p) => p.corrupt));
const logitEff = tf.tidy(() => {
  let x = tf.gather(sae.W_dec, topIds) as tf.Tensor2D;
  if (model.cfg.norm === 'layernorm') x = tf.sub(x, tf.mean(x, -1, true));
  return tf.matMul(tf.mul(x, model.weight('ln_final.w')), model.weight('unembed.W_U') as tf.Tensor2D);
});
const E = logitEff.arraySync() as number[][];
logitEff.dispose();
const nameId = (n: string) => tokenizer.encode(' ' + n, { addSpecialTokens: false })[0];
function eta2(vals: number[], keys: string[]): number {
  const m = vals.reduce((a, b) => a + b, 0) / vals.length;
  const g = new Map<string, number[]>();
  keys.forEach((k, i) => g.set(k, [...(g.get(k) ?? []), vals[i]]));
  let between = 0;
  let total = 0;
  for (const xs of g.values()) between += xs.length * (xs.reduce((a, b) => a + b, 0) / xs.length - m) ** 2;
  for (const v of vals) total += (v - m) ** 2;
  return total > 0 ? between / total : 0;
}
function pearson(a: number[], b: number[]): number {
  const ma = a.reduce((x, y) => x + y, 0) / a.length;
  const mb = b.reduce((x, y) => x + y, 0) / b.length;
  let ab = 0, aa = 0, bb = 0;
  a.forEach((x, i) => ((ab += (x - ma) * (b[i] - mb)), (aa += (x - ma) ** 2), (bb += (b[i] - mb) ** 2)));
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}
const nameDriven = topIds.map((f, j) => {
  const clean = probeClean.map((r) => r[f]);
  const corr = probeCorrupt.map((r) => r[f]);
  const io = nameProbe.map((p) => p.io);
  const s = nameProbe.map((p) => p.s);
  const c = nameProbe.map((p) => p.corruptName);
  const byIo = new Map<string, number[]>();
  io.forEach((n, i) => byIo.set(n, [...(byIo.get(n) ?? []), clean[i]]));
  const ranked = [...byIo.entries()].map(([n, xs]) => ({ name: n, mean: xs.reduce((a, b) => a + b, 0) / xs.length })).sort((a, b) => b.mean - a.mean);
  return {
    latent: f,
    prompts: nameProbe.length,
    end_fire_rate_clean: round(clean.filter((x) => x > 0).length / clean.length, 3),
    end_mean_clean: round(clean.reduce((a, b) => a + b, 0) / clean.length, 3),
    end_mean_corrupt: round(corr.reduce((a, b) => a + b, 0) / corr.length, 3),
    clean_eta2: { IO: round(eta2(clean, io), 3), S: round(eta2(clean, s), 3) },
    corrupt_eta2: { IO: round(eta2(corr, io), 3), S: round(eta2(corr, s), 3), C: round(eta2(corr, c), 3) },
    clean_r_with_logit_effect: { IO: round(pearson(clean, io.map((n) => E[j][nameId(n)])), 3), S: round(pearson(clean, s.map((n) => E[j][nameId(n)])), 3) },
    corrupt_r_with_logit_effect: { IO: round(pearson(corr, io.map((n) => E[j][nameId(n)])), 3), S: round(pearson(corr, s.map((n) => E[j][nameId(n)])), 3), C: round(pearson(corr, c.map((n) => E[j][nameId(n)])), 3) },
    io_names_highest: ranked.slice(0, 6).map((r) => `${r.name} ${round(r.mean, 2)} (logit effect ${round(E[j][nameId(r.name)], 2)})`),
    io_names_lowest: ranked.slice(-3).map((r) => `${r.name} ${round(r.mean, 2)} (logit effect ${round(E[j][nameId(r.name)], 2)})`),
  };
});
// Every latent that fires at END on ≥ 10 % of the clean prompts: which one is most driven by S, which by IO?
const endScan = Array.from({ length: sae.cfg.dSae }, (_, f) => f)
  .map((f) => {
    const v = probeClean.map((r) => r[f]);
    const rate = v.filter((x) => x > 0).length / v.length;
    return { latent: f, rate, io: eta2(v, nameProbe.map((p) => p.io)), s: eta2(v, nameProbe.map((p) => p.s)) };
  })
  .filter((r) => r.rate >= 0.1);
const atpRank = new Map(topLatents(atp, sae.cfg.dSae).map((t, i) => [t.latent, i + 1]));
const fmtScan = (r: (typeof endScan)[number]) => ({
  latent: r.latent,
  end_fire_rate: round(r.rate, 3),
  eta2_IO: round(r.io, 3),
  eta2_S: round(r.s, 3),
  atp: round(atp.scores[r.latent]),
  atp_rank: atpRank.get(r.latent),
});
const endLatentScan = {
  latents_firing_at_end: endScan.length,
  most_S_driven: [...endScan].sort((a, b) => b.s - a.s).slice(0, 5).map(fmtScan),
  most_IO_driven: [...endScan].sort((a, b) => b.io - a.io).slice(0, 5).map(fmtScan),
  median_eta2_IO: round([...endScan].map((r) => r.io).sort((a, b) => a - b)[endScan.length >> 1], 3),
  median_eta2_S: round([...endScan].map((r) => r.s).sort((a, b) => a - b)[endScan.length >> 1], 3),
};

const vocab = vocabStrings(tokenizer, Array.from({ length: model.cfg.dVocab }, (_, i) => i));
const str = (id: number) => (vocab.get(id) ?? `<${id}>`).trim();
function describe(rec: FeatureRecord, nShow = 8) {
  const tokenCounts = new Map<string, number>();
  for (const e of rec.top) {
    const s = str(e.tokens[e.pos - e.start]);
    tokenCounts.set(s, (tokenCounts.get(s) ?? 0) + 1);
  }
  return {
    density: round(rec.density, 4),
    max_act: round(rec.maxAct, 3),
    mean_active: round(rec.meanActive, 3),
    top_tokens: [...tokenCounts.entries()].sort((a, b) => b[1] - a[1]).map(([t, c]) => `${t} ×${c}`),
    top_examples: rec.top.slice(0, nShow).map((e) => ({
      act: round(e.act, 3),
      pos: e.pos,
      token: str(e.tokens[e.pos - e.start]),
      context: e.tokens.map((t, i) => (i === e.pos - e.start ? `[[${str(t)}]]` : str(t))).join(' '),
    })),
    logit_pos: rec.logits?.pos.map((l) => `${str(l.token)} ${round(l.value, 2)}`) ?? [],
    logit_neg: rec.logits?.neg.map((l) => `${str(l.token)} ${round(l.value, 2)}`) ?? [],
  };
}

const rows = top.map((t, j) => ({
  rank: j + 1,
  latent: t.latent,
  atp: round(atp.scores[t.latent]),
  relp: round(relp.scores[t.latent]),
  activation_patching: round(act.scores[t.latent]),
  atp_by_role: atpByRole[j],
  clean_by_role: byRoleClean[j],
  corrupt_by_role: byRoleCorrupt[j],
}));
const topN = 3;
const descriptions = topIds.slice(0, topN).map((f) => ({
  latent: f,
  heldout_ioi: { ...describe(statsIoi.features[f]), ...nameShare(heldOutTokens, f) },
  corpus_documents: { ...describe(statsDocs.features[f], 6), ...nameShare(docTokens, f) },
}));

const sortedAbs = (xs: Float32Array) => Array.from(xs).map(Math.abs).sort((a, b) => b - a);
const absAtp = sortedAbs(atp.scores);
const out = {
  description: `Latent-level IOI analysis of ${values.sae} at ${HOOK} on held-out IOI pairs (ABC corruption); scores normalised, denoising (1 = clean LD restored)`,
  command: `npx tsx scripts/ioi-sae-latents.ts --n ${N} --seed ${SEED} --top ${TOP}`,
  pairs: {
    n: pairs.length,
    tokens: T,
    seed: SEED,
    split: 'IOI_MODEL_SPLIT.test (names known to the tokenizer, templates)',
    ld_clean: round(atp.mClean),
    ld_corrupt: round(atp.mCorrupt),
    example: { clean: prompts[0].clean, corrupt: prompts[0].corrupt, answer: prompts[0].answer },
  },
  active_latents: atp.active.length,
  d_sae: sae.cfg.dSae,
  error_term: { atp: round(atp.error), relp: round(relp.error) },
  conservation: Object.fromEntries(Object.entries(conservation).map(([k, v]) => [k, Object.fromEntries(Object.entries(v).map(([a, b]) => [a, round(b, 6)]))])),
  atp_concentration: {
    sum_abs: round(sum(absAtp)),
    top1_share_of_sum_abs: round(absAtp[0] / sum(absAtp), 3),
    [`top${TOP}_share_of_sum_abs`]: round(sum(absAtp.slice(0, TOP)) / sum(absAtp), 3),
  },
  whole_hook_by_position: {
    roles_of_first_pair: pairRoles[0],
    activation: wholeGrid.activation.map((x) => round(x)),
    atp: wholeGrid.atp.map((x) => round(x)),
  },
  group_patching: Object.fromEntries(Object.entries(groups).map(([k, v]) => [k, round(v)])),
  top_latents: rows,
  end_activation_by_name: nameDriven,
  end_latent_scan: endLatentScan,
  top3_descriptions: descriptions,
  seconds: round((performance.now() - t0) / 1000, 1),
};
writeFileAtomic(OUT, JSON.stringify(out, null, 2) + '\n');
sae.dispose();
model.dispose();

// Text summary.
console.log(`pairs ${pairs.length} × ${T} tokens, LD clean ${out.pairs.ld_clean} corrupt ${out.pairs.ld_corrupt}; ${atp.active.length} of ${sae.cfg.dSae} latents active`);
console.log(`error term: AtP ${out.error_term.atp}, RelP ${out.error_term.relp}; Σ latents + error: AtP ${conservation.atp.latents_plus_error.toFixed(5)} vs whole hook ${conservation.atp.whole_hook.toFixed(5)}, RelP ${conservation.relp.latents_plus_error.toFixed(5)} vs ${conservation.relp.whole_hook.toFixed(5)}`);
console.log('group patching', out.group_patching);
console.log('rank latent     AtP    RelP   act.patch | AtP by role (IO S1 S2 END other)');
for (const r of rows) {
  const br = r.atp_by_role;
  console.log(`${String(r.rank).padStart(4)} ${String(r.latent).padStart(6)} ${r.atp.toFixed(3).padStart(7)} ${r.relp.toFixed(3).padStart(7)} ${r.activation_patching.toFixed(3).padStart(9)} | ${[br.IO, br.S1, br.S2, br.END, br.other].map((x) => x.toFixed(3)).join(' ')}`);
}
console.log('\nEND activation explained by the name (η², 1024 prompts): latent  clean IO / S   corrupt IO / S / C   r(clean act, logit effect on IO)');
for (const d of nameDriven) console.log(`  ${String(d.latent).padStart(4)}  ${d.clean_eta2.IO.toFixed(2)} / ${d.clean_eta2.S.toFixed(2)}   ${d.corrupt_eta2.IO.toFixed(2)} / ${d.corrupt_eta2.S.toFixed(2)} / ${d.corrupt_eta2.C.toFixed(2)}   ${d.clean_r_with_logit_effect.IO.toFixed(2)}`);
console.log('END latent scan', JSON.stringify(endLatentScan));
for (const d of descriptions) {
  console.log(`\nlatent ${d.latent}:`, JSON.stringify({ ioi: { ...d.heldout_ioi, top_examples: d.heldout_ioi.top_examples.slice(0, 4) }, docs: { ...d.corpus_documents, top_examples: d.corpus_documents.top_examples.slice(0, 3) } }, null, 1));
}
console.log(`\nwrote ${OUT} (${out.seconds} s)`);
process.exit(0);

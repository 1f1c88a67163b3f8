/**
 * The IOI circuit study end to end, as one reusable orchestration on top of the patching and
 * circuit tools (the thin CLI driver is scripts/ioi-circuit.ts):
 *
 *  1. accuracy and mean logit difference (LD) of the model on the prompt pairs;
 *  2. activation patching, AtP and RelP on resid_pre / attn_out / mlp_out / head_out (one
 *     PatchingSession, `runSuite`; denoising, normalised: 1 = restores the clean LD) and the
 *     agreement of the estimates with activation patching;
 *  3. IOI head roles (path patching + attention + pattern scores), EAP edges (AtP and RelP,
 *     noising: negative = the edge carries the behaviour);
 *  4. circuit extraction: greedy over the activation-patching head_out scores until faithfulness
 *     (LD_circuit / LD_full, every other head mean-ablated over the pairs' corrupted ABC prompts)
 *     reaches the target (default 0.8), then a pruning pass (last-added first: drop a head when
 *     the rest still reaches the target; `prune: false` keeps the greedy prefix), plus top-n
 *     circuits by each method's head_out scores. Pruning matters because ABC patching scores only
 *     see what changes with S2, while mean ablation also removes what every prompt shares, so a
 *     head can rank low and still be needed — the prefix then drags in the heads ranked above it;
 *  5. the LD drop when the circuit's answer-writing heads are mean-ablated: its name movers, or —
 *     when none is classified — its heads with a direct effect ≥ the name-mover threshold (at
 *     least the one with the largest direct effect);
 *  6. attention patterns of the key heads on the first prompt.
 *
 * `renderIoiReport` turns the result into a self-contained HTML page (heatmaps from the patching
 * report renderer, vega-lite attention heatmaps, the hand-drawn circuit graph SVG, tables) and
 * `writeIoiReport` writes it with circuit.json and summary.json into a directory, atomically.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { evaluateIoi, type IoiScore } from '../../datasets/ioi-eval.js';
import type { IoiPrompt } from '../../datasets/ioi.js';
import { ioiProbingSpec, type IoiProbingResult } from './ioi-probing.js';
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { writeFileAtomic } from '../io/atomic.js';
import { tokenizePairs, type PromptPair } from '../patching/pairs.js';
import { escapeHtml, renderHeatmapSvg, renderPatchingReportHtml } from '../patching/report.js';
import { PatchingSession } from '../patching/session.js';
import { componentStack, gridShape } from '../patching/sites.js';
import { runSuite, type SuiteResult } from '../patching/suite.js';
import type { Agreement, Component, Method, PatchingGrid } from '../patching/types.js';
import { allHeads, headId, hookName, isMlp, logitDiffScore, nodeId, pairBatches, type HeadRef, type NodeScore } from './common.js';
import { mlpActivationScores, mlpScoresFromGrid, nodeScoreList } from './node-scores.js';
import { edgeAttributionPatching, topEdges, eapGraph, type EapResult, type EdgeScore } from './eap.js';
import { ablationCurve, circuitGraph, greedyFromCurve, topNHeads, type AblationCurve, type GreedyResult, type RankBy } from './extract.js';
import { ablateHeads, ablationValues, complement, evaluateAblations, faithfulness, type AblationOptions, type AblationResult, type FaithfulnessResult } from './faithfulness.js';
import { graphToJson, graphToSvg, LOGITS_ID, type CircuitEdge, type CircuitGraph } from './graph.js';
import { relevanceConservation, type Conservation } from '../patching/conservation.js';
import { DEFAULT_RELP_RULES, type RelpRule } from '../models/grad-rules.js';
import { ioiHeadEvidence, ioiPositions, rolesFromEvidence, type HeadRole, type IoiEvidence, type IoiEvidenceOptions } from './roles.js';
import { backupNameMoverTest, duplicateTokenPathTest, repeatSensitivityTest, sInhibitionAttentionTest, type BackupTest, type DuplicateTokenPathTest, type RepeatSensitivityTest, type SInhibitionAttentionTest } from './ioi-classes.js';

export const IOI_COMPONENTS: readonly Component[] = ['resid_pre', 'attn_out', 'mlp_out', 'head_out'];
export const IOI_METHODS: readonly Method[] = ['activation', 'atp', 'relp'];

export interface IoiStudyOptions {
  /** Label of the model in the report (default model.source). */
  modelName?: string;
  /** Faithfulness the greedy circuit must reach (default 0.8). */
  target?: number;
  /** How head scores rank heads for the circuits (default 'abs', the extract.ts default). */
  rankBy?: RankBy;
  /** Prune the greedy prefix (default true; see the file comment). */
  prune?: boolean;
  /** Size of the top-n circuits (default: the circuit's size). */
  topN?: number;
  /** Number of top EAP edges kept per method (default 20). */
  topEdges?: number;
  /** Components patched (default resid_pre, attn_out, mlp_out, head_out; head_out is required). */
  components?: readonly Component[];
  /** Ablation used for faithfulness, the greedy search and the answer-head ablation (default: mean over the pairs' corrupt prompts). */
  ablation?: AblationOptions;
  /** Passed to the head-role classification (thresholds, pattern prompts, …). */
  roles?: IoiEvidenceOptions;
  /** At most this many heads get an attention-pattern heatmap (default 8). */
  maxPatternHeads?: number;
  /** A phase starts ('evaluate', 'patching', 'roles', 'eap', 'circuit', 'ablation', 'attention'). */
  onPhase?: (phase: string) => void;
  /** Activation-patching progress over all components (sites done / total). */
  onProgress?: (done: number, total: number) => void;
}

/** A circuit node (head or whole MLP layer) with its score, graph id and IOI roles. */
export type IoiCircuitHead = NodeScore & { id: string; roles: string[] };

export interface IoiTopNCircuit {
  /** Scores the heads were ranked by (head_out grid of this method). */
  method: Method;
  n: number;
  heads: IoiCircuitHead[];
  faithfulness: FaithfulnessResult;
}

export interface IoiHeadRow {
  id: string;
  layer: number;
  head: number;
  /** head_out scores per method (denoising, normalised). */
  activation: number;
  atp: number;
  relp: number;
  /** Path patching sender → logits (negative = writes the answer). */
  directEffect: number;
  attnToIo: number;
  attnToS: number;
  /** OV copy / negative copy scores (copy-scores.ts). */
  copy: number;
  negativeCopy: number;
  /** Attention-pattern scores (head-scores.ts): previous-token and duplicate-token on the clean prompts, induction on repeated random tokens. */
  previousToken: number;
  duplicateToken: number;
  induction: number;
  roles: string[];
  inCircuit: boolean;
}

export interface IoiAttentionPattern {
  head: HeadRef;
  id: string;
  roles: string[];
  /** Attention weights [query][key] on the example prompt. */
  pattern: number[][];
}

export interface IoiStudyResult {
  model: string;
  nPairs: number;
  seqLen: number;
  nLayers: number;
  nHeads: number;
  totalHeads: number;
  /** Text of the example prompt (the first pair), when the pairs came as text. */
  example: { clean: string | null; corrupt: string | null; answer: string | null; wrong: string | null };
  /** Token strings of the example's clean prompt (axis labels). */
  tokenLabels: string[];
  score: IoiScore;
  /** Mean LD on the corrupt prompts. */
  ldCorrupt: number;
  patching: SuiteResult;
  evidence: IoiEvidence;
  roles: HeadRole[];
  heads: IoiHeadRow[];
  /** Whole-layer MLP node scores per method (activation: all positions patched at once; AtP/RelP: sum of the mlp_out grid). [L] */
  mlps: Record<Method, number[]>;
  eap: { atp: EapResult; relp: EapResult; top: { atp: EdgeScore[]; relp: EdgeScore[] }; graphs: { atp: CircuitGraph; relp: CircuitGraph } };
  circuit: {
    method: 'greedy' | 'greedy+prune';
    scoredBy: 'activation';
    rankBy: RankBy;
    target: number;
    reached: boolean;
    heads: IoiCircuitHead[];
    /** The greedy prefix before pruning, its faithfulness, and the heads pruning removed. */
    greedy: { heads: IoiCircuitHead[]; faithfulness: FaithfulnessResult; pruned: IoiCircuitHead[] };
    curve: GreedyResult['curve'];
    faithfulness: FaithfulnessResult;
    graph: CircuitGraph;
  };
  topN: IoiTopNCircuit[];
  ablation: {
    /** The circuit's name movers; else its S-suppression heads; else its heads with the largest direct effect. */
    basis: 'name_mover' | 's_suppression' | 'direct_effect';
    heads: IoiCircuitHead[];
    result: AblationResult;
  };
  attention: { tokens: string[]; patterns: IoiAttentionPattern[] };
  /** The IOI paper's intervention tests of circuit classes (ioi-classes.ts). */
  classes: {
    /** S-inhibition heads' END output from the corrupted run: the name movers' attention before and after (null without both classes). */
    sInhibition: SInhibitionAttentionTest | null;
    /** Name movers mean-ablated: every head's direct effect before and after, and the heads that take over (null without name movers). */
    backup: BackupTest | null;
    /** Duplicate-token / induction heads path-patched into the S-inhibition heads' values (null without both classes). */
    duplicateToken: DuplicateTokenPathTest | null;
    /** The answer-writing heads' attention END → S2 position on clean vs corrupted prompts: repeat or position? */
    repeat: RepeatSensitivityTest | null;
  };
  /** Faithfulness keeping each prefix of the activation-patching order (all nodes), with the steps where it falls. */
  curve: AblationCurve;
  /** RelP conservation on the first pair for the rules the study uses and for each attention rule. */
  conservation: Conservation[];
  /** Conditions under which some numbers are not meaningful (e.g. the model does not do the task). */
  warnings: string[];
  /** Seconds per phase (the caller may add its own, e.g. load). */
  timings: Record<string, number>;
  /** Seconds for the whole study. */
  runSeconds: number;
  /** Linear probes for the IO's identity per layer and role (attached by the caller; optional). */
  probing?: IoiProbingResult;
  /** The circuit re-checked on prompts it was not found on (attached by the caller; optional). */
  transfer?: IoiTransferCheck;
}

export interface IoiTransferCheck {
  /** What the prompts are (e.g. other templates). */
  label: string;
  nPairs: number;
  score: IoiScore;
  /** The study's circuit, mean-ablated around, on these prompts. */
  faithfulness: FaithfulnessResult;
  /** The name movers' (or answer writers') ablation on these prompts. */
  ablation: AblationResult;
}

/** Faithfulness of `r`'s circuit and its answer-head ablation on other prompts (same-length pairs). */
export function ioiTransferCheck(model: HookedModel, r: IoiStudyResult, prompts: readonly IoiPrompt[], label: string, ablation: AblationOptions = {}): IoiTransferCheck {
  const pairs = ioiPromptPairs(model, prompts);
  return {
    label,
    nPairs: pairs.length,
    score: evaluateIoi(model, [...prompts]),
    faithfulness: faithfulness(model, pairs, r.circuit.heads, ablation),
    ablation: ablateHeads(model, pairs, r.ablation.heads, ablation),
  };
}

function isTextPrompts(xs: readonly IoiPrompt[] | readonly PromptPair[]): xs is readonly IoiPrompt[] {
  return xs.length > 0 && typeof (xs[0] as IoiPrompt).clean === 'string';
}

/**
 * Names the tokenizer really knows: ' ' + name is one token that decodes back to the name. Drops
 * names a word-level tokenizer maps to its unknown token (they would all be the same token, so IO
 * and S could coincide) — e.g. held-out names added to the corpus after a checkpoint was trained.
 */
export function namesKnownTo(tokenizer: Tokenizer, names: readonly string[]): string[] {
  return names.filter((n) => {
    const ids = tokenizer.encode(' ' + n, { addSpecialTokens: false });
    return ids.length === 1 && tokenizer.decode(ids, { skipSpecialTokens: false }).trim() === n;
  });
}

/** Tokenize IOI prompts into prompt pairs (answer/wrong = the tokens continuing the clean prompt). */
export function ioiPromptPairs(model: HookedModel, prompts: readonly IoiPrompt[]): PromptPair[] {
  const { pairs, warnings } = tokenizePairs(
    model,
    prompts.map((p) => ({ clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong })),
    'ioi',
  );
  if (warnings.length > 0) fail(`ioi: ${warnings[0]} (IOI names must be single tokens; generate prompts with the model's tokenizer)`);
  const same = pairs.findIndex((p) => p.answer === p.wrong);
  if (same >= 0) {
    fail(`ioi: prompt ${same + 1}: IO '${prompts[same].io}' and S '${prompts[same].s}' are the same token (names unknown to the tokenizer? filter them with namesKnownTo)`);
  }
  return pairs;
}

function tokenLabel(model: HookedModel, id: number): string {
  return model.tokenizer ? model.tokenizer.decode([id], { skipSpecialTokens: false }) : String(id);
}

/** Run the whole study on IOI prompts (text, as generated by datasets/ioi.ts) or on token-level prompt pairs. */
export async function runIoiCircuitStudy(model: HookedModel, prompts: readonly IoiPrompt[] | readonly PromptPair[], opts: IoiStudyOptions = {}): Promise<IoiStudyResult> {
  if (prompts.length === 0) fail('ioi study: no prompts given');
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  let phaseStart = performance.now();
  let phaseName = '';
  const phase = (name: string) => {
    if (phaseName) timings[phaseName] = (timings[phaseName] ?? 0) + (performance.now() - phaseStart) / 1000;
    phaseName = name;
    phaseStart = performance.now();
    if (name) opts.onPhase?.(name);
  };
  const { cfg } = model;
  const L = cfg.nLayers;
  const H = cfg.nHeads;
  const target = opts.target ?? 0.8;
  const rankBy = opts.rankBy ?? 'abs';
  const components = [...(opts.components ?? IOI_COMPONENTS)];
  if (!components.includes('head_out')) fail('ioi study: the head_out component is needed (the circuit is scored by it)');
  const ablationOpts: AblationOptions = opts.ablation ?? {};

  // ---- 1. task performance
  phase('evaluate');
  const text = isTextPrompts(prompts) ? prompts : null;
  const pairs: PromptPair[] = text ? ioiPromptPairs(model, text) : [...(prompts as readonly PromptPair[])];
  const { clean, corrupt, T, targets } = pairBatches(model, pairs);
  const score: IoiScore = text ? evaluateIoi(model, [...text]) : logitDiffScore(model, clean, targets);
  const ldCorrupt = logitDiffScore(model, corrupt, targets).meanLogitDiff;

  // ---- 2. patching grids (one session, every method) and agreement
  phase('patching');
  const siteTotals = components.map((c) => gridShape(componentStack(model, c), T).reduce((a, b) => a * b, 1));
  const grandTotal = siteTotals.reduce((a, b) => a + b, 0);
  let offset = 0;
  let gridIndex = -1;
  let lastDone = Infinity;
  const session = new PatchingSession(model, pairs, {
    onProgress: (done) => {
      // Called per activation grid with its own totals; a reset of `done` means the next component.
      if (done <= lastDone) {
        if (gridIndex >= 0) offset += siteTotals[gridIndex] ?? 0;
        gridIndex++;
      }
      lastDone = done;
      opts.onProgress?.(Math.min(grandTotal, offset + done), grandTotal);
    },
  });
  let patching: SuiteResult;
  try {
    patching = runSuite(session, components, [...IOI_METHODS]);
  } finally {
    session.dispose();
  }
  const headGridOf = (m: Method): number[][] => {
    const g = patching.grids.find((x) => x.component === 'head_out' && x.method === m);
    if (!g) fail(`ioi study: no head_out grid for ${m}`);
    return (g.scores as number[][]).map((r) => [...r]);
  };
  const headScores = { activation: headGridOf('activation'), atp: headGridOf('atp'), relp: headGridOf('relp') };
  // MLP layers are circuit nodes unless the ablation keeps them.
  const mlpsAreNodes = ablationOpts.mlps !== 'kept';
  const mlpGridOf = (m: Exclude<Method, 'activation'>): number[] => {
    const g = patching.grids.find((x) => x.component === 'mlp_out' && x.method === m);
    return g ? mlpScoresFromGrid(g) : new Array<number>(L).fill(NaN);
  };
  const mlpScores: Record<Method, number[]> = { activation: mlpActivationScores(model, pairs, { metric: ablationOpts.metric }), atp: mlpGridOf('atp'), relp: mlpGridOf('relp') };
  const nodeScores = Object.fromEntries(IOI_METHODS.map((m) => [m, nodeScoreList(headScores[m], mlpsAreNodes ? mlpScores[m] : [])])) as Record<Method, NodeScore[]>;

  // ---- 3. roles and EAP edges
  phase('roles');
  const evidence = ioiHeadEvidence(model, pairs, opts.roles ?? {});
  const roles = rolesFromEvidence(evidence);
  const rolesOf = (h: HeadRef): string[] => roles.filter((r) => r.layer === h.layer && r.head === h.head).map((r) => r.role);
  const withRoles = (hs: readonly NodeScore[]): IoiCircuitHead[] => hs.map((h) => ({ ...h, id: nodeId(h), roles: isMlp(h) ? [] : rolesOf(h) }));
  const headsOnly = (ns: readonly IoiCircuitHead[]) => ns.filter((n): n is IoiCircuitHead & HeadRef => !isMlp(n));

  phase('eap');
  const nTop = opts.topEdges ?? 20;
  const eapAtp = edgeAttributionPatching(model, pairs, { method: 'atp', mlps: mlpsAreNodes });
  const eapRelp = edgeAttributionPatching(model, pairs, { method: 'relp', mlps: mlpsAreNodes });
  const top = { atp: topEdges(eapAtp, nTop), relp: topEdges(eapRelp, nTop) };
  const eapGraphs = { atp: eapGraph(eapAtp, top.atp, { topEdges: nTop }), relp: eapGraph(eapRelp, top.relp, { topEdges: nTop }) };

  // ---- 4. circuits and faithfulness
  phase('circuit');
  // One ablation curve over every prefix of the score order: the greedy circuit is its first prefix at the target.
  const curve = ablationCurve(model, pairs, nodeScores.activation, { ...ablationOpts, by: rankBy });
  const greedy = greedyFromCurve(curve, target);
  const values = ablationValues(model, pairs, ablationOpts);
  let circuitFaith: FaithfulnessResult;
  let greedyFaith: FaithfulnessResult;
  const topN: IoiTopNCircuit[] = [];
  let ablation: IoiStudyResult['ablation'];
  let kept: NodeScore[] = [...greedy.heads];
  let circuitHeads: IoiCircuitHead[] = [];
  const pruned: NodeScore[] = [];
  try {
    if (greedy.reached && (opts.prune ?? true)) {
      // Last-added (lowest-ranked) first: drop a head when the others still reach the target.
      const [ldFull] = evaluateAblations(model, pairs, [[]], values, ablationOpts);
      for (const h of [...greedy.heads].reverse()) {
        const rest = kept.filter((k) => k !== h);
        const [ld] = evaluateAblations(model, pairs, [complement(model, rest, ablationOpts)], values, ablationOpts);
        if (ld / ldFull >= target) {
          kept = rest;
          pruned.push(h);
        }
      }
    }
    circuitHeads = withRoles(kept);
    circuitFaith = faithfulness(model, pairs, kept, { ...ablationOpts, values });
    greedyFaith = pruned.length > 0 ? faithfulness(model, pairs, greedy.heads, { ...ablationOpts, values }) : circuitFaith;
    const n = opts.topN ?? Math.max(1, kept.length);
    for (const m of IOI_METHODS) {
      const hs = topNHeads(nodeScores[m], n, rankBy);
      topN.push({ method: m, n, heads: withRoles(hs), faithfulness: faithfulness(model, pairs, hs, { ...ablationOpts, values }) });
    }

    // ---- 5. ablate the circuit's answer-writing heads
    phase('ablation');
    const de = (h: HeadRef) => evidence.directEffect[h.layer][h.head];
    let basis: IoiStudyResult['ablation']['basis'] = 'name_mover';
    const circuitHeadNodes = headsOnly(circuitHeads);
    let writers: IoiCircuitHead[] = circuitHeadNodes.filter((h) => h.roles.includes('name_mover'));
    if (writers.length === 0) {
      basis = 's_suppression';
      writers = circuitHeadNodes.filter((h) => h.roles.includes('s_suppression'));
    }
    if (writers.length === 0) {
      basis = 'direct_effect';
      const byDe = [...circuitHeadNodes].sort((a, b) => de(a) - de(b));
      writers = byDe.filter((h) => -de(h) >= evidence.thresholds.nameMoverEffect);
      if (writers.length === 0 && byDe.length > 0) writers = [byDe[0]];
    }
    if (writers.length === 0) {
      // An empty circuit (target reached with nothing kept): fall back to the model's strongest direct writer.
      const best = allHeads(cfg).sort((a, b) => de(a) - de(b))[0];
      writers = withRoles([{ ...best, score: headScores.activation[best.layer][best.head] }]);
    }
    ablation = { basis, heads: writers, result: ablateHeads(model, pairs, writers, { ...ablationOpts, values }) };
  } finally {
    values.dispose();
  }

  // ---- 5b. class tests: S-inhibition moves the name movers' attention; backup name movers
  phase('classes');
  const roleHeads = (role: string) => roles.filter((r) => r.role === role).map((r) => ({ layer: r.layer, head: r.head }));
  const movers = roleHeads('name_mover');
  const inhibitors = roleHeads('s_inhibition').filter((h) => movers.some((m) => m.layer > h.layer));
  const positions = opts.roles?.positions ?? pairs.map((p, i) => ioiPositions(p, i));
  const answerHeads = headsOnly(ablation.heads);
  const classes: IoiStudyResult['classes'] = {
    sInhibition: movers.length && inhibitors.length ? sInhibitionAttentionTest(model, pairs, positions, inhibitors, movers) : null,
    backup: movers.length ? backupNameMoverTest(model, pairs, movers, ablationOpts) : null,
    duplicateToken: null,
    repeat: answerHeads.length ? repeatSensitivityTest(model, pairs, positions, answerHeads) : null,
  };
  const sInhibitionHeads = roleHeads('s_inhibition');
  const duplicates = [...roleHeads('duplicate_token'), ...roleHeads('induction')].filter((h, i, xs) => xs.findIndex((x) => x.layer === h.layer && x.head === h.head) === i && sInhibitionHeads.some((r) => r.layer > h.layer));
  if (duplicates.length && sInhibitionHeads.length) classes.duplicateToken = duplicateTokenPathTest(model, pairs, duplicates, sInhibitionHeads);
  const ruleSets: RelpRule[][] = [[...DEFAULT_RELP_RULES], [...DEFAULT_RELP_RULES, 'AH'], [...DEFAULT_RELP_RULES, 'AttnHalf']];
  const conservation = ruleSets.map((rules) => relevanceConservation(model, pairs[0].clean, pairs[0].answer, pairs[0].wrong, rules));

  // Circuit graph: circuit heads with roles and scores, AtP edges among them and into the logits.
  const inCircuit = new Set(circuitHeads.map((h) => h.id));
  const edges: CircuitEdge[] = [];
  eapAtp.scores.forEach((row, si) => {
    const from = eapAtp.senders[si].id;
    if (!inCircuit.has(from)) return;
    row.forEach((w, ri) => {
      if (Number.isNaN(w)) return;
      const r = eapAtp.receivers[ri];
      for (const to of r.nodes) if (to === LOGITS_ID || inCircuit.has(to)) edges.push({ from, to, kind: r.kind, weight: w });
    });
  });
  const graph = circuitGraph(circuitHeads, {
    roles,
    edges,
    nLayers: L,
    nHeads: H,
    meta: {
      model: opts.modelName ?? model.source,
      method: (opts.prune ?? true) ? 'greedy+prune' : 'greedy',
      scoredBy: 'activation patching head_out (denoising)',
      edges: 'EAP AtP (noising; negative = carries the behaviour)',
      target,
      faithfulness: circuitFaith.fraction,
      ablation: circuitFaith.kind,
    },
  });

  // ---- 6. attention patterns of the key heads on the example prompt
  phase('attention');
  const keyIds = new Set<string>();
  const key: HeadRef[] = [];
  const addKey = (h: HeadRef) => {
    const id = headId(h.layer, h.head);
    if (!keyIds.has(id)) (keyIds.add(id), key.push({ layer: h.layer, head: h.head }));
  };
  headsOnly(circuitHeads).forEach(addKey);
  headsOnly(ablation.heads).forEach(addKey);
  roles.filter((r) => r.role === 'name_mover' || r.role === 'negative_name_mover' || r.role === 's_suppression' || r.role === 's_inhibition').forEach(addKey);
  const maxPat = opts.maxPatternHeads ?? 8;
  const keyHeads = key.slice(0, maxPat).sort((a, b) => a.layer - b.layer || a.head - b.head);
  const example = pairs[0];
  const tokens = example.clean.map((id) => tokenLabel(model, id));
  const patterns: IoiAttentionPattern[] = [];
  if (keyHeads.length > 0) {
    const layers = [...new Set(keyHeads.map((h) => h.layer))];
    const names = layers.map((l) => hookName(cfg, l, 'attn.hook_pattern'));
    const { logits, cache } = model.runWithCache([example.clean], { names, finalPositionOnly: true });
    logits.dispose();
    try {
      for (const h of keyHeads) {
        const p = tf.tidy(() => cache.get(hookName(cfg, h.layer, 'attn.hook_pattern')).slice([0, h.head, 0, 0], [1, 1, T, T]).reshape([T, T]));
        const pattern = p.arraySync() as number[][];
        p.dispose();
        patterns.push({ head: h, id: headId(h.layer, h.head), roles: rolesOf(h), pattern });
      }
    } finally {
      cache.dispose();
    }
  }
  phase('');
  // Per-method patching times right after the patching phase.
  const ordered: Record<string, number> = {};
  for (const [k, v] of Object.entries(timings)) {
    ordered[k] = v;
    if (k === 'patching') for (const [m, s] of Object.entries(patching.timings)) ordered[`patching.${m}`] = s;
  }

  const warnings: string[] = [];
  if (!(score.meanLogitDiff > 0)) {
    warnings.push(`the model does not prefer the IO over S on these prompts (mean logit difference ${score.meanLogitDiff.toFixed(3)} ≤ 0): faithfulness and ablation fractions are not meaningful`);
  }
  if (!greedy.reached) warnings.push(`the greedy circuit did not reach faithfulness ${target} (best ${greedy.fraction.toFixed(3)} with ${greedy.heads.length} heads)`);
  if (greedy.reached && kept.length === 0) warnings.push(`every head ablated already keeps ≥ ${target} of the logit difference: the circuit is empty (heads are not what solves the task here)`);

  const heads: IoiHeadRow[] = allHeads(cfg).map((h) => ({
    id: headId(h.layer, h.head),
    layer: h.layer,
    head: h.head,
    activation: headScores.activation[h.layer][h.head],
    atp: headScores.atp[h.layer][h.head],
    relp: headScores.relp[h.layer][h.head],
    directEffect: evidence.directEffect[h.layer][h.head],
    attnToIo: evidence.attnToIo[h.layer][h.head],
    attnToS: evidence.attnToS[h.layer][h.head],
    copy: evidence.copy[h.layer][h.head],
    negativeCopy: evidence.negativeCopy[h.layer][h.head],
    previousToken: evidence.previousToken[h.layer][h.head],
    duplicateToken: evidence.duplicateToken[h.layer][h.head],
    induction: evidence.induction[h.layer][h.head],
    roles: rolesOf(h),
    inCircuit: inCircuit.has(headId(h.layer, h.head)),
  }));

  return {
    model: opts.modelName ?? model.source,
    nPairs: pairs.length,
    seqLen: T,
    nLayers: L,
    nHeads: H,
    totalHeads: L * H,
    example: text ? { clean: text[0].clean, corrupt: text[0].corrupt, answer: text[0].answer, wrong: text[0].wrong } : { clean: null, corrupt: null, answer: null, wrong: null },
    tokenLabels: tokens,
    score,
    ldCorrupt,
    patching,
    evidence,
    roles,
    heads,
    mlps: mlpScores,
    eap: { atp: eapAtp, relp: eapRelp, top, graphs: eapGraphs },
    circuit: {
      method: (opts.prune ?? true) ? 'greedy+prune' : 'greedy',
      scoredBy: 'activation',
      rankBy,
      target,
      reached: greedy.reached,
      heads: circuitHeads,
      greedy: { heads: withRoles(greedy.heads), faithfulness: greedyFaith, pruned: withRoles(pruned) },
      curve: greedy.curve,
      faithfulness: circuitFaith,
      graph,
    },
    topN,
    ablation,
    attention: { tokens, patterns },
    classes,
    curve,
    conservation,
    warnings,
    timings: ordered,
    runSeconds: (performance.now() - t0) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// Summary (summary.json) and text output

const r4 = (x: number): number | null => (Number.isFinite(x) ? Math.round(x * 1e4) / 1e4 : null);
const r6 = (x: number): number | null => (Number.isFinite(x) ? Math.round(x * 1e6) / 1e6 : null);

function faithJson(f: FaithfulnessResult) {
  return {
    fraction: r6(f.fraction),
    normalized: r6(f.normalized),
    ldFull: r6(f.ldFull),
    ldCircuit: r6(f.ldCircuit),
    ldAblated: r6(f.ldAblated),
    size: f.circuitSize,
    heads: f.circuitHeads,
    mlps: f.circuitMlps,
    mlpsAblated: f.mlps === 'nodes',
    kind: f.kind,
  };
}

const headJson = (h: IoiCircuitHead) => ({ id: h.id, layer: h.layer, head: isMlp(h) ? null : h.head, mlp: isMlp(h), score: r6(h.score), roles: h.roles });
const edgeJson = (e: EdgeScore) => ({ from: e.from, to: e.to, kind: e.kind, score: r6(e.score) });

/** Every number of the study as plain JSON (non-finite values become null). */
export function ioiSummary(r: IoiStudyResult) {
  return {
    model: r.model,
    nPairs: r.nPairs,
    seqLen: r.seqLen,
    nLayers: r.nLayers,
    nHeads: r.nHeads,
    totalHeads: r.totalHeads,
    example: r.example,
    accuracy: r6(r.score.accuracy),
    meanLogitDiff: r6(r.score.meanLogitDiff),
    ldCorrupt: r6(r.ldCorrupt),
    agreement: r.patching.agreement.map((a) => ({ component: a.component, method: a.method, pearson: r6(a.pearson), spearman: r6(a.spearman), relL2: r6(a.relL2), slope: r6(a.slope), topKOverlap: r6(a.topKOverlap), k: a.k })),
    roles: r.roles.map((x) => ({ role: x.role, id: headId(x.layer, x.head), layer: x.layer, head: x.head, score: r6(x.score) })),
    heads: r.heads.map((h) => ({
      id: h.id,
      layer: h.layer,
      head: h.head,
      activation: r6(h.activation),
      atp: r6(h.atp),
      relp: r6(h.relp),
      directEffect: r6(h.directEffect),
      attnToIo: r6(h.attnToIo),
      attnToS: r6(h.attnToS),
      copy: r6(h.copy),
      negativeCopy: r6(h.negativeCopy),
      previousToken: r6(h.previousToken),
      duplicateToken: r6(h.duplicateToken),
      induction: r6(h.induction),
      roles: h.roles,
      inCircuit: h.inCircuit,
    })),
    mlps: Object.fromEntries(Object.entries(r.mlps).map(([m, xs]) => [m, xs.map(r6)])),
    ...(r.probing
      ? {
          probing: {
            nPrompts: r.probing.nPrompts,
            classes: r.probing.classes,
            cells: r.probing.cells.map((c) => ({ ...c, train: r6(c.train), test: r6(c.test), majority: r6(c.majority), shuffled: r6(c.shuffled), control: r6(c.control), selectivity: c.selectivity === null ? null : r6(c.selectivity) })),
          },
        }
      : {}),
    eap: {
      atp: { ldClean: r6(r.eap.atp.ldClean), ldCorrupt: r6(r.eap.atp.ldCorrupt), direction: r.eap.atp.direction, topEdges: r.eap.top.atp.map(edgeJson) },
      relp: { ldClean: r6(r.eap.relp.ldClean), ldCorrupt: r6(r.eap.relp.ldCorrupt), direction: r.eap.relp.direction, rules: r.eap.relp.rules, topEdges: r.eap.top.relp.map(edgeJson) },
    },
    circuit: {
      method: r.circuit.method,
      scoredBy: r.circuit.scoredBy,
      rankBy: r.circuit.rankBy,
      target: r.circuit.target,
      reached: r.circuit.reached,
      heads: r.circuit.heads.map(headJson),
      size: r.circuit.heads.length,
      nHeads: r.circuit.heads.filter((h) => !isMlp(h)).length,
      nMlps: r.circuit.heads.filter(isMlp).length,
      greedy: { heads: r.circuit.greedy.heads.map(headJson), faithfulness: faithJson(r.circuit.greedy.faithfulness), pruned: r.circuit.greedy.pruned.map(headJson) },
      totalHeads: r.totalHeads,
      faithfulness: faithJson(r.circuit.faithfulness),
      curve: r.circuit.curve.map((c) => ({ size: c.size, ld: r6(c.ld), fraction: r6(c.fraction) })),
    },
    topN: r.topN.map((t) => ({ method: t.method, n: t.n, heads: t.heads.map(headJson), faithfulness: faithJson(t.faithfulness) })),
    ablation: {
      basis: r.ablation.basis,
      heads: r.ablation.heads.map(headJson),
      ldBefore: r6(r.ablation.result.ldBefore),
      ldAfter: r6(r.ablation.result.ldAfter),
      drop: r6(r.ablation.result.drop),
      fractionKept: r6(r.ablation.result.fractionKept),
      kind: r.ablation.result.kind,
    },
    classes: {
      sInhibition: r.classes.sInhibition
        ? {
            senders: r.classes.sInhibition.senders.map((h) => headId(h.layer, h.head)),
            shift: r6(r.classes.sInhibition.shift),
            receivers: r.classes.sInhibition.receivers.map((x) => ({ id: x.id, ioBefore: r6(x.ioBefore), ioAfter: r6(x.ioAfter), sBefore: r6(x.sBefore), sAfter: r6(x.sAfter) })),
          }
        : null,
      repeat: r.classes.repeat ? r.classes.repeat.heads.map((h) => ({ id: h.id, clean: r6(h.clean), corrupt: r6(h.corrupt), ratio: r6(h.ratio) })) : null,
      duplicateToken: r.classes.duplicateToken ? { receivers: r.classes.duplicateToken.receivers.map((h) => headId(h.layer, h.head)), effects: r.classes.duplicateToken.effects.map((e) => ({ id: e.id, effect: r6(e.effect) })) } : null,
      backup: r.classes.backup
        ? {
            ablated: r.classes.backup.ablated.map((h) => headId(h.layer, h.head)),
            ldBefore: r6(r.classes.backup.ldBefore),
            ldAfter: r6(r.classes.backup.ldAfter),
            backup: r.classes.backup.backup.map((h) => ({ id: headId(h.layer, h.head), growth: r6(h.score), before: r6(r.classes.backup!.before[h.layer][h.head]), after: r6(r.classes.backup!.after[h.layer][h.head]) })),
          }
        : null,
    },
    ...(r.transfer
      ? {
          transfer: {
            label: r.transfer.label,
            nPairs: r.transfer.nPairs,
            accuracy: r6(r.transfer.score.accuracy),
            meanLogitDiff: r6(r.transfer.score.meanLogitDiff),
            faithfulness: faithJson(r.transfer.faithfulness),
            ablation: { ldBefore: r6(r.transfer.ablation.ldBefore), ldAfter: r6(r.transfer.ablation.ldAfter), fractionKept: r6(r.transfer.ablation.fractionKept) },
          },
        }
      : {}),
    conservation: r.conservation.map((c) => ({ rules: c.rules, input: r6(c.input), perCut: c.perCut.map((x) => ({ hook: x.hook, ratio: r6(x.ratio) })) })),
    ablationCurve: {
      order: r.curve.order.map((n) => nodeId(n)),
      points: r.curve.points.map((x) => ({ size: x.size, ld: r6(x.ld), fraction: r6(x.fraction) })),
      drops: r.curve.drops.map((d) => ({ size: d.size, node: nodeId(d.node), before: r6(d.before), after: r6(d.after), directEffect: isMlp(d.node) ? null : r6(r.evidence.directEffect[d.node.layer][d.node.head]) })),
    },
    warnings: r.warnings,
    timings: Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, r4(v)])),
    /** The study itself (runIoiCircuitStudy). */
    runSeconds: r4(r.runSeconds),
    /** Every top-level phase timed, including the caller's (load, generate) and the report. */
    totalSeconds: r4(Object.entries(r.timings).filter(([k]) => !k.includes('.')).reduce((a, [, v]) => a + v, 0)),
  };
}

export type IoiSummary = ReturnType<typeof ioiSummary>;

function f3(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  const s = x.toFixed(3);
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s;
}

/** Columns padded to their widest cell; numbers right-aligned. */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[], numeric: readonly boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The agreement table (component × method: Pearson, Spearman, relative L2, slope, top-k overlap) as aligned text. */
export function formatAgreementTable(agreement: readonly Agreement[]): string {
  return textTable(
    ['component', 'method', 'Pearson', 'Spearman', 'rel. L2', 'slope', 'top-k', 'k'],
    agreement.map((a) => [a.component, a.method, f3(a.pearson), f3(a.spearman), f3(a.relL2), f3(a.slope), f3(a.topKOverlap), String(a.k)]),
    [false, false, true, true, true, true, true, true],
  );
}

const BASIS_TEXT: Record<IoiStudyResult['ablation']['basis'], string> = {
  name_mover: 'name movers',
  s_suppression: 'S-suppression heads; no name mover in the circuit',
  direct_effect: 'largest direct effect; no name mover or S-suppression head in the circuit',
};

const headList = (hs: readonly IoiCircuitHead[]) => (hs.length ? hs.map((h) => (h.roles.length ? `${h.id} (${h.roles.join('+')})` : h.id)).join(', ') : '(none)');
const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : 'n/a');

/** The human-readable summary the script prints. */
export function formatIoiSummary(r: IoiStudyResult): string {
  const out: string[] = [];
  out.push(`model ${r.model}: ${r.nPairs} held-out IOI pairs of ${r.seqLen} tokens, ${r.nLayers} layers × ${r.nHeads} heads`);
  out.push(`accuracy ${pct(r.score.accuracy)}, mean logit difference ${f3(r.score.meanLogitDiff)} (corrupt ${f3(r.ldCorrupt)})`);
  for (const w of r.warnings) out.push(`warning: ${w}`);
  out.push('', 'Agreement with activation patching:', formatAgreementTable(r.patching.agreement));
  out.push('', `RelP conservation (Σ relevance at the input / LD, first pair): ${r.conservation.map((c) => `${c.rules.join('+')} ${f3(c.input)}`).join('; ')}`);
  out.push('', 'Head roles:');
  if (r.roles.length === 0) out.push('  (none above the thresholds)');
  else out.push(textTable(['role', 'head', 'score'], r.roles.map((x) => [x.role, headId(x.layer, x.head), f3(x.score)]), [false, false, true]));
  for (const m of ['atp', 'relp'] as const) {
    out.push('', `Top EAP edges (${m}, noising; negative = carries the behaviour):`);
    out.push(r.eap.top[m].slice(0, 8).map((e) => `  ${e.from} → ${e.to}  ${f3(e.score)}`).join('\n'));
  }
  const c = r.circuit;
  const f = c.faithfulness;
  const mlpNodes = f.mlps === 'nodes';
  out.push('', `Circuit (greedy by activation-patching node scores: head_out${mlpNodes ? ', whole MLP layers' : ''}${c.method === 'greedy+prune' ? '; then pruned' : ''}; target ${f3(c.target)}${c.reached ? '' : ', NOT reached'}):`);
  out.push(`  nodes ${headList(c.heads)}`);
  if (c.greedy.pruned.length > 0) out.push(`  (greedy prefix: ${c.greedy.heads.length} nodes at ${pct(c.greedy.faithfulness.fraction)}; pruned ${c.greedy.pruned.map((h) => h.id).join(', ')})`);
  out.push(
    `  ${f.circuitHeads} / ${r.totalHeads} heads${mlpNodes ? ` + ${f.circuitMlps} / ${r.nLayers} MLPs` : ' (MLPs always kept)'} keep ${pct(f.fraction)} of the logit difference under ${f.kind} ablation of everything else (LD ${f3(f.ldCircuit)} of ${f3(f.ldFull)}; all ablated ${f3(f.ldAblated)}; normalised ${f3(f.normalized)})`,
  );
  if (mlpNodes) out.push(`  MLP node scores (activation, whole layer): ${r.mlps.activation.map((x, l) => `m${l} ${f3(x)}`).join(', ')}`);
  for (const t of r.topN) out.push(`  top-${t.n} by ${t.method}: ${headList(t.heads)} → ${pct(t.faithfulness.fraction)}`);
  const a = r.ablation;
  out.push('', `Ablating the circuit's answer-writing heads (${BASIS_TEXT[a.basis]}): ${headList(a.heads)}`);
  out.push(`  LD ${f3(a.result.ldBefore)} → ${f3(a.result.ldAfter)} (drop ${f3(a.result.drop)}, keeps ${pct(a.result.fractionKept)})`);
  out.push('', ...classLines(r));
  if (r.transfer) {
    const t = r.transfer;
    out.push('', `On prompts the circuit was not found on (${t.label}, ${t.nPairs} pairs): accuracy ${pct(t.score.accuracy)}, LD ${f3(t.score.meanLogitDiff)}; the circuit keeps ${pct(t.faithfulness.fraction)}; ablating ${headList(r.ablation.heads)} keeps ${pct(t.ablation.fractionKept)}`);
  }
  out.push('', 'Timings (s):', textTable(['phase', 'seconds'], Object.entries(r.timings).map(([k, v]) => [k, v.toFixed(2)]), [false, true]));
  return out.join('\n');
}

/** The class tests and the ablation curve's non-monotone steps, in plain words. */
function classLines(r: IoiStudyResult): string[] {
  const out: string[] = [];
  const si = r.classes.sInhibition;
  if (si) {
    out.push(`S-inhibition test: the END output of ${si.senders.map((h) => headId(h.layer, h.head)).join(', ')} taken from the corrupted prompts shifts the name movers' attention (S − IO) by ${f3(si.shift)} (> 0: they steer attention away from S)`);
    for (const x of si.receivers) out.push(`  ${x.id}: to IO ${f3(x.ioBefore)} → ${f3(x.ioAfter)}, to S ${f3(x.sBefore)} → ${f3(x.sAfter)}`);
  } else out.push('S-inhibition test: not run (needs both name movers and S-inhibition heads before them)');
  const dt = r.classes.duplicateToken;
  if (dt) out.push(`Duplicate-token / induction heads → S-inhibition heads' values (path patching): ${dt.effects.map((e) => `${e.id} ${f3(e.effect)}`).join(', ')} (negative = the path carries the behaviour)`);
  else out.push('Duplicate-token path test: not run (needs duplicate-token or induction heads before S-inhibition heads)');
  const b = r.classes.backup;
  if (b) {
    out.push(`Backup test: mean-ablating the name movers ${b.ablated.map((h) => headId(h.layer, h.head)).join(', ')} takes LD ${f3(b.ldBefore)} → ${f3(b.ldAfter)}; heads whose direct effect grows: ${b.backup.length ? b.backup.map((h) => `${headId(h.layer, h.head)} (+${f3(h.score)})`).join(', ') : 'none'}`);
  } else out.push('Backup test: not run (no name movers found)');
  const rep = r.classes.repeat;
  if (rep) {
    out.push(
      `Repeat or position? Attention END → the S2 position, clean prompts vs corrupted ones (there that name is said once): ${rep.heads.map((h) => `${h.id} ${f3(h.clean)} → ${f3(h.corrupt)} (×${f3(h.ratio)})`).join(', ')}` +
        (rep.heads.some((h) => h.ratio >= 0.5) ? ' — a ratio near 1 means the head attends to that place whether or not the name there repeats: it finds S by position or syntax, not by duplicate detection' : ' — attention falls when the name is not repeated: the head finds S by its repetition'),
    );
  }
  const drops = r.curve.drops;
  out.push(
    drops.length
      ? `Ablation curve (keeping nodes in activation-patching order): not monotone at ${drops.map((d) => `${nodeId(d.node)} (${pct(d.before)} → ${pct(d.after)}${isMlp(d.node) ? '' : `, direct effect ${f3(r.evidence.directEffect[d.node.layer][d.node.head])}`})`).join(', ')} — keeping a node that writes against the answer (positive direct effect) or whose input is ablated lowers the logit difference`
      : 'Ablation curve (keeping nodes in activation-patching order): monotone',
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// HTML report

/** Prefix every id (and its references) in an SVG so several SVGs can share a page. */
function prefixSvgIds(svg: string, prefix: string): string {
  return svg.replace(/<[^>]*>/g, (tag) =>
    tag
      .replace(/(\s)id="([^"]*)"/g, (_, sp: string, id: string) => `${sp}id="${prefix}${id}"`)
      .replace(/url\(#([^)"]*)\)/g, (_, id: string) => `url(#${prefix}${id})`)
      .replace(/(\s(?:xlink:)?href)="#([^"]*)"/g, (_, attr: string, id: string) => `${attr}="#${prefix}${id}"`),
  );
}

/** Vega-lite spec of one head's attention pattern: query (rows) × key (columns), token labels. */
export function attentionSpec(p: IoiAttentionPattern, tokens: readonly string[]): TopLevelSpec {
  const labels = tokens.map((t, i) => `${i}: ${t}`);
  const values: { q: string; k: string; w: number }[] = [];
  // Causal: keys after the query are masked (weight 0) and left blank.
  p.pattern.forEach((row, q) => row.forEach((w, k) => k <= q && values.push({ q: labels[q] ?? String(q), k: labels[k] ?? String(k), w })));
  return {
    background: 'white',
    padding: 6,
    title: { text: `${p.id}${p.roles.length ? ` · ${p.roles.join('+')}` : ''}`, anchor: 'start', fontSize: 13 },
    data: { values },
    mark: { type: 'rect', aria: false },
    width: { step: 16 },
    height: { step: 16 },
    encoding: {
      x: { field: 'k', type: 'ordinal', title: 'key', scale: { domain: labels }, axis: { labelAngle: -50, labelLimit: 120, labelOverlap: false } },
      y: { field: 'q', type: 'ordinal', title: 'query', scale: { domain: labels }, axis: { labelLimit: 120, labelOverlap: false } },
      color: { field: 'w', type: 'quantitative', title: 'attention', scale: { domain: [0, 1], range: ['#ffffff', '#08306b'] }, legend: { values: [0, 0.5, 1], format: '.1f' } },
    },
    config: { view: { stroke: null }, font: 'sans-serif' },
  };
}

export async function renderAttentionSvg(p: IoiAttentionPattern, tokens: readonly string[], idPrefix: string): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(attentionSpec(p, tokens)).spec), { renderer: 'none' });
  try {
    return prefixSvgIds(await view.toSVG(), idPrefix);
  } finally {
    view.finalize();
  }
}

/** The patching report's stylesheet (rendered from an empty report, so it stays in sync). */
async function patchingCss(): Promise<string> {
  const html = await renderPatchingReportHtml({ model: '', tokenLabels: [], grids: [], agreement: [] });
  return /<style>([\s\S]*?)<\/style>/.exec(html)?.[1] ?? '';
}

const EXTRA_CSS = `
.patterns{display:flex;flex-wrap:wrap;gap:16px 24px;align-items:flex-start}
.patterns figure{margin:0}
tr.in-circuit td{background:#fff8e6}
table+table{margin-top:14px}
.warning{background:#fff3f3;border:1px solid #e0a0a0;padding:6px 10px;max-width:70em}
h3{font-size:1.02em;margin:20px 0 6px}
.grid.heatmaps{display:grid;gap:12px 16px;max-width:100%}
.grid.heatmaps figure{margin:0;min-width:0}
.grid.heatmaps svg{max-width:100%;height:auto}
`;

const fmt = f3;

function num(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return '<td class="num">n/a</td>';
  const s = x.toFixed(digits);
  return `<td class="num">${/^-0\.?0*$/.test(s) ? s.slice(1) : s}</td>`;
}

function table(cls: string, header: readonly string[], rows: readonly string[]): string {
  return `<table class="${cls}"><thead><tr>${header.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>\n${rows.join('\n')}\n</tbody></table>`;
}

const headCell = (h: IoiCircuitHead) => `<td>${escapeHtml(h.id)}</td><td>${escapeHtml(h.roles.join(', ') || '—')}</td>`;

/** The whole report as one self-contained HTML document (inline CSS and SVG, no scripts). */
export async function renderIoiReport(r: IoiStudyResult): Promise<string> {
  const css = (await patchingCss()) + EXTRA_CSS;
  const grids = r.patching.grids;
  const heatmaps = await Promise.all(grids.map((g, i) => renderHeatmapSvg(g, r.tokenLabels, `ioi-hm${i}-`)));
  const patternSvgs = await Promise.all(r.attention.patterns.map((p, i) => renderAttentionSvg(p, r.attention.tokens, `ioi-att${i}-`)));
  const circuitSvg = graphToSvg(r.circuit.graph, { title: `IOI circuit: ${r.circuit.heads.map((h) => h.id).join(', ')} (AtP edges)` });
  const eapSvgs = (['atp', 'relp'] as const).map((m) => graphToSvg(r.eap.graphs[m], { title: `EAP ${m}: top ${r.eap.top[m].length} edges` }));

  const p: string[] = [];
  p.push('<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">', '<meta name="viewport" content="width=device-width, initial-scale=1">');
  p.push(`<title>IOI circuit report · ${escapeHtml(r.model)}</title>`, `<style>${css}</style>`, '</head>', '<body>');
  p.push('<h1>IOI circuit report</h1>');
  const f = r.circuit.faithfulness;
  const a = r.ablation.result;
  const meta: [string, string][] = [
    ['model', escapeHtml(r.model)],
    ['prompt pairs', `${r.nPairs} held-out IOI pairs (ABC corruption), ${r.seqLen} tokens each`],
    ['model shape', `${r.nLayers} layers × ${r.nHeads} heads = ${r.totalHeads} heads`],
    ['accuracy', `${(100 * r.score.accuracy).toFixed(1)} %`],
    ['mean logit difference', `${fmt(r.score.meanLogitDiff)} (clean) · ${fmt(r.ldCorrupt)} (corrupt)`],
    ['circuit', `${escapeHtml(r.circuit.heads.map((h) => h.id).join(', ') || '(empty)')}: ${f.circuitHeads} / ${r.totalHeads} heads${f.mlps === 'nodes' ? ` + ${f.circuitMlps} / ${r.nLayers} MLPs` : ''} keep ${(100 * f.fraction).toFixed(1)} % of the logit difference (${f.kind} ablation of everything else)`],
    ['answer-head ablation', `LD ${fmt(a.ldBefore)} → ${fmt(a.ldAfter)} (keeps ${(100 * a.fractionKept).toFixed(1)} %)`],
    ['run time', `${r.runSeconds.toFixed(1)} s`],
  ];
  p.push(`<table class="meta summary"><tbody>${meta.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${v}</td></tr>`).join('')}</tbody></table>`);
  for (const w of r.warnings) p.push(`<p class="warning">Warning: ${escapeHtml(w)}</p>`);
  if (r.example.clean !== null) {
    p.push(
      `<p class="note">Example: <code>${escapeHtml(r.example.clean)}</code> → <code>${escapeHtml(r.example.answer ?? '')}</code> (not <code>${escapeHtml(r.example.wrong ?? '')}</code>); corrupt: <code>${escapeHtml(r.example.corrupt ?? '')}</code></p>`,
    );
  }
  p.push(`<p class="tokens">Clean prompt tokens: ${r.tokenLabels.map((t, i) => `<code>${i}: ${escapeHtml(t)}</code>`).join('')}</p>`);

  // Patching heatmaps: one row per component, methods side by side.
  p.push('<h2>Patching heatmaps</h2>');
  p.push(
    '<p class="note">Denoising (clean activation patched into the corrupted run), normalised: 1 = the site alone restores the clean logit difference, 0 = no effect. Blue = positive, red = negative; each heatmap has its own symmetric colour scale. Columns: activation patching, AtP, RelP.</p>',
  );
  const comps = [...new Set(grids.map((g) => g.component))];
  // minmax(0, 1fr) + max-width on the SVGs: wide heatmaps shrink to the page instead of overflowing it.
  p.push(`<div class="grid heatmaps" style="grid-template-columns:repeat(${IOI_METHODS.length},minmax(0,1fr))">`);
  for (const c of comps) {
    for (const m of IOI_METHODS) {
      const i = grids.findIndex((g: PatchingGrid) => g.component === c && g.method === m);
      if (i < 0) p.push(`<div class="placeholder">${escapeHtml(`${c} · ${m}`)}<br>not computed</div>`);
      else p.push(`<figure>${heatmaps[i]}<figcaption>${escapeHtml(`shape [${grids[i].shape.join(' × ')}] (${grids[i].axes.join(' × ')})`)}</figcaption></figure>`);
    }
  }
  p.push('</div>');

  p.push('<h2>Agreement with activation patching</h2>');
  p.push(
    table(
      'agreement',
      ['component', 'method', 'Pearson', 'Spearman', 'relative L2', 'slope', 'top-k overlap', 'k'],
      r.patching.agreement.map((x) => `<tr><td>${escapeHtml(x.component)}</td><td>${escapeHtml(x.method)}</td>${num(x.pearson)}${num(x.spearman)}${num(x.relL2)}${num(x.slope)}${num(x.topKOverlap)}<td class="num">${x.k}</td></tr>`),
    ),
  );

  p.push('<h3>RelP relevance conservation</h3>');
  p.push('<p class="note">Σ over the residual stream of activation × RelP gradient of the logit difference, over the logit difference, on the first pair (1 = conserved; exact only with AH on a model without biases).</p>');
  p.push(table('conservation', ['rules', 'at the input', 'range over residual cuts'], r.conservation.map((c) => `<tr><td>${escapeHtml(c.rules.join(', '))}</td>${num(c.input, 4)}<td class="num">${Math.min(...c.perCut.map((x) => x.ratio)).toFixed(4)} … ${Math.max(...c.perCut.map((x) => x.ratio)).toFixed(4)}</td></tr>`)));

  p.push('<h2>Head roles</h2>');
  p.push(
    `<p class="note">Name movers: direct effect (path patching → logits, normalised) ≤ −${evThresh(r, 'nameMoverEffect')} and END attends to IO (≥ ${evThresh(r, 'nameMoverAttention')}, more than to S); negative name movers: the same attention, direct effect ≥ +${evThresh(r, 'nameMoverEffect')}; S-suppression: direct effect ≤ −${evThresh(r, 'nameMoverEffect')}, END attends to S (≥ ${evThresh(r, 'nameMoverAttention')}, more than to IO) and negative copy score ≥ ${evThresh(r, 'copyScore')} (the head writes −S); S-inhibition: path patching into the name movers' and S-suppression heads' queries; duplicate-token / induction / previous-token: attention-pattern scores. Copy scores: fraction of IO/S1 positions where the head's OV write ranks the attended name in the top 5 of the pairs' names (negative: of its negation).</p>`,
  );
  if (r.roles.length === 0) p.push('<p class="note">No head passes the role thresholds.</p>');
  else p.push(table('roles', ['role', 'head', 'score'], r.roles.map((x) => `<tr><td>${escapeHtml(x.role)}</td><td>${escapeHtml(headId(x.layer, x.head))}</td>${num(x.score)}</tr>`)));
  p.push(
    table(
      'heads',
      ['node', 'activation', 'AtP', 'RelP', 'direct effect', 'attn END→IO', 'attn END→S', 'copy', 'neg. copy', 'prev. token', 'dup. token', 'induction', 'roles', 'in circuit'],
      [
        ...r.heads.map(
          (h) =>
            `<tr${h.inCircuit ? ' class="in-circuit"' : ''}><td>${escapeHtml(h.id)}</td>${num(h.activation)}${num(h.atp)}${num(h.relp)}${num(h.directEffect)}${num(h.attnToIo)}${num(h.attnToS)}${num(h.copy)}${num(h.negativeCopy)}${num(h.previousToken)}${num(h.duplicateToken)}${num(h.induction)}<td>${escapeHtml(h.roles.join(', ') || '—')}</td><td>${h.inCircuit ? 'yes' : ''}</td></tr>`,
        ),
        ...r.mlps.activation.map((x, l) => {
          const inC = r.circuit.heads.some((n) => isMlp(n) && n.layer === l);
          return `<tr${inC ? ' class="in-circuit"' : ''}><td>m${l}</td>${num(x)}${num(r.mlps.atp[l])}${num(r.mlps.relp[l])}<td></td><td></td><td></td><td></td><td></td><td></td><td></td><td></td><td>MLP layer</td><td>${inC ? 'yes' : ''}</td></tr>`;
        }),
      ],
    ),
  );

  p.push('<h2>Circuit</h2>');
  p.push(
    `<p class="note">Greedy: nodes (heads${f.mlps === 'nodes' ? ' and whole MLP layers' : ''}) added in order of activation-patching score (ranked by ${escapeHtml(r.circuit.rankBy)}) until faithfulness = LD<sub>circuit</sub> / LD<sub>full</sub> ≥ ${fmt(r.circuit.target)}, every head${f.mlps === 'nodes' ? ' and MLP' : ''} outside the circuit ${escapeHtml(f.kind)}-ablated over the corrupted (ABC) prompts${r.circuit.reached ? '' : ' — <strong>target not reached</strong>'}${r.circuit.method === 'greedy+prune' ? `; then pruned, last-added first: a node is dropped when the rest still reach the target${r.circuit.greedy.pruned.length ? ` (dropped ${escapeHtml(r.circuit.greedy.pruned.map((h) => h.id).join(', '))})` : ' (nothing dropped)'}` : ''}. Edges: EAP (AtP, noising) scores of the edges among circuit nodes and into the logits; negative = the edge carries the behaviour.</p>`,
  );
  p.push(`<figure class="circuit-graph">${circuitSvg}</figure>`);
  p.push(table('circuit-heads', ['node', 'roles', 'activation score'], r.circuit.heads.map((h) => `<tr>${headCell(h)}${num(h.score)}</tr>`)));
  const faithRow = (name: string, heads: readonly IoiCircuitHead[], fr: FaithfulnessResult) =>
    `<tr><td>${escapeHtml(name)}</td><td>${escapeHtml(heads.map((h) => h.id).join(', ') || '—')}</td><td class="num">${fr.circuitHeads} / ${r.totalHeads}${fr.mlps === 'nodes' ? ` + ${fr.circuitMlps} / ${r.nLayers}` : ''}</td>${num(fr.fraction)}${num(fr.normalized)}${num(fr.ldCircuit)}${num(fr.ldFull)}${num(fr.ldAblated)}</tr>`;
  p.push('<h3>Faithfulness</h3>');
  p.push(
    table('faithfulness', ['circuit', 'nodes', f.mlps === 'nodes' ? 'heads + MLPs' : 'heads', 'fraction of LD kept', 'normalised', 'LD circuit', 'LD full', 'LD all ablated'], [
      faithRow(r.circuit.method === 'greedy+prune' ? 'circuit (greedy + prune)' : 'circuit (greedy)', r.circuit.heads, f),
      ...(r.circuit.greedy.pruned.length ? [faithRow('greedy prefix (before pruning)', r.circuit.greedy.heads, r.circuit.greedy.faithfulness)] : []),
      ...r.topN.map((t) => faithRow(`top-${t.n} by ${t.method}`, t.heads, t.faithfulness)),
    ]),
  );
  p.push('<h3>Greedy curve</h3>');
  p.push(table('curve', ['nodes kept', 'LD', 'fraction'], r.circuit.curve.map((c) => `<tr><td class="num">${c.size}</td>${num(c.ld)}${num(c.fraction)}</tr>`)));
  p.push('<h3>Ablating the answer-writing heads</h3>');
  p.push(
    `<p class="note">${escapeHtml(BASIS_TEXT[r.ablation.basis])}, ${escapeHtml(a.kind)}-ablated in the full model.</p>`,
  );
  p.push(
    table('ablation', ['heads', 'LD before', 'LD after', 'drop', 'fraction kept'], [
      `<tr><td>${escapeHtml(r.ablation.heads.map((h) => h.id).join(', '))}</td>${num(a.ldBefore)}${num(a.ldAfter)}${num(a.drop)}${num(a.fractionKept)}</tr>`,
    ]),
  );

  p.push('<h3>Ablation curve (all nodes)</h3>');
  p.push('<p class="note">Faithfulness keeping the first k nodes in activation-patching order, everything else ablated. Where keeping one more node lowers it, that node writes against the answer (e.g. a negative name mover) or relies on inputs that are still ablated — why a larger circuit can keep less than a smaller one.</p>');
  p.push(
    table('ablation-curve', ['nodes kept', 'last node added', 'fraction', 'falls'], r.curve.points.map((c) => {
      const node = c.size > 0 ? nodeId(r.curve.order[c.size - 1]) : '—';
      const falls = r.curve.drops.some((d) => d.size === c.size);
      return `<tr><td class="num">${c.size}</td><td>${escapeHtml(node)}</td>${num(c.fraction)}<td>${falls ? 'yes' : ''}</td></tr>`;
    })),
  );
  p.push('<h2>Circuit classes by intervention</h2>');
  for (const line of classLines(r)) p.push(`<p class="note">${escapeHtml(line)}</p>`);
  if (r.transfer) {
    const t = r.transfer;
    p.push('<h3>On prompts the circuit was not found on</h3>');
    p.push(
      table('transfer', ['prompts', 'pairs', 'accuracy', 'LD', 'circuit keeps', 'answer heads ablated keep'], [
        `<tr><td>${escapeHtml(t.label)}</td><td class="num">${t.nPairs}</td>${num(t.score.accuracy)}${num(t.score.meanLogitDiff)}${num(t.faithfulness.fraction)}${num(t.ablation.fractionKept)}</tr>`,
      ]),
    );
  }

  p.push('<h2>Attention patterns of the key heads</h2>');
  p.push('<p class="note">On the example clean prompt; rows are query positions, columns key positions.</p>');
  if (patternSvgs.length === 0) p.push('<p class="note">No key heads.</p>');
  else p.push(`<div class="patterns">${patternSvgs.map((s) => `<figure class="attention">${s}</figure>`).join('\n')}</div>`);

  p.push('<h2>Edge attribution patching</h2>');
  p.push('<p class="note">Noising (corrupt activations into the clean run), normalised by LD<sub>clean</sub> − LD<sub>corrupt</sub>: negative = the edge carries the behaviour.</p>');
  (['atp', 'relp'] as const).forEach((m, i) => {
    p.push(`<h3>EAP ${m}${m === 'relp' ? ` [${escapeHtml(r.eap.relp.rules.join(', '))}]` : ''}</h3>`);
    p.push(`<figure class="eap-graph">${eapSvgs[i]}</figure>`);
    p.push(table(`edges edges-${m}`, ['from', 'to', 'kind', 'score'], r.eap.top[m].map((e) => `<tr><td>${escapeHtml(e.from)}</td><td>${escapeHtml(e.to)}</td><td>${e.kind}</td>${num(e.score, 4)}</tr>`)));
  });

  if (r.probing) p.push(...(await probingSection(r.probing)));

  p.push('<h2>Timings</h2>');
  p.push(table('timings', ['phase', 'seconds'], Object.entries(r.timings).map(([k, v]) => `<tr><td>${escapeHtml(k)}</td>${num(v, 2)}</tr>`)));
  p.push('</body>', '</html>', '');
  return p.join('\n');
}

async function probingSection(pr: IoiProbingResult): Promise<string[]> {
  const svg = async (measure: 'test' | 'selectivity', id: string) => {
    const view = new vega.View(vega.parse(vl.compile(ioiProbingSpec(pr, measure)).spec), { renderer: 'none' });
    try {
      return prefixSvgIds(await view.toSVG(), id);
    } finally {
      view.finalize();
    }
  };
  const out: string[] = ['<h2>Linear probes: where the IO’s identity is readable</h2>'];
  out.push(
    `<p class="note">Logistic probe (L-BFGS, l2 ${pr.l2}) for which name is the indirect object, on the residual stream before each block and after the last, at the IO, S1, S2 and END tokens; ${pr.nPrompts} prompts over ${pr.classes} names, ${Math.round(100 * pr.testFrac)} % of prompts held out. Selectivity (Hewitt &amp; Liang) = test accuracy − accuracy on a control task that gives each token type a random fixed label: ≈ 0 where the label is the token itself (IO), negative where the token identity is far easier to read than the IO (S1/S2), undefined at END (one token type). The embedding-layer probe at END sees the same token in every prompt, so it sits at chance — a check on the pipeline.</p>`,
  );
  out.push(`<div class="patterns"><figure>${await svg('test', 'ioi-probe-acc-')}</figure><figure>${await svg('selectivity', 'ioi-probe-sel-')}</figure></div>`);
  out.push(
    table('probing', ['hook', 'position', 'train', 'test', 'majority', 'shuffled labels', 'control task', 'selectivity'], pr.cells.map((c) => `<tr><td>${escapeHtml(c.hook)}</td><td>${c.role}</td>${num(c.train)}${num(c.test)}${num(c.majority)}${num(c.shuffled)}${num(c.control)}${c.selectivity === null ? '<td class="num">—</td>' : num(c.selectivity)}</tr>`)),
  );
  return out;
}

function evThresh(r: IoiStudyResult, k: keyof IoiEvidence['thresholds']): string {
  return String(r.evidence.thresholds[k]);
}

export interface WrittenIoiReport {
  dir: string;
  files: { html: string; circuitJson: string; circuitSvg: string; summary: string };
  summary: IoiSummary;
}

/**
 * Render and write the report into `dir` (created if needed): index.html, circuit.json,
 * circuit.svg and summary.json, each atomically (temp file + rename). `summary.timings.report`
 * is the rendering time.
 */
export async function writeIoiReport(dir: string, r: IoiStudyResult): Promise<WrittenIoiReport> {
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) fail(`${dir}: exists and is not a directory`);
  fs.mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const html = await renderIoiReport(r);
  const files = {
    html: path.join(dir, 'index.html'),
    circuitJson: path.join(dir, 'circuit.json'),
    circuitSvg: path.join(dir, 'circuit.svg'),
    summary: path.join(dir, 'summary.json'),
  };
  writeFileAtomic(files.html, html);
  writeFileAtomic(files.circuitJson, graphToJson(r.circuit.graph));
  writeFileAtomic(files.circuitSvg, graphToSvg(r.circuit.graph, { title: `IOI circuit: ${r.circuit.heads.map((h) => h.id).join(', ')}` }));
  r.timings.report = (performance.now() - t0) / 1000;
  const summary = ioiSummary(r);
  writeFileAtomic(files.summary, JSON.stringify(summary, null, 2) + '\n');
  return { dir, files, summary };
}

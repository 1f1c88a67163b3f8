import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateIoiPrompts } from '../datasets/ioi.js';
import { IOI_MODEL_SPLIT } from '../datasets/ioi-corpus.js';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { graphFromJson } from '../src/circuits/graph.js';
import { isMlp } from '../src/circuits/common.js';
import { formatAgreementTable, ioiTransferCheck, namesKnownTo, runIoiCircuitStudy, writeIoiReport, type IoiStudyResult } from '../src/circuits/ioi-report.js';

// The shipped IOI model (datasets/ioi-gpt2, trained by scripts/train-ioi-model.ts).
const MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../datasets/ioi-gpt2');

describe('IOI circuit study on the shipped model', () => {
  let model: HookedModel;
  let result: IoiStudyResult;
  let tmp: string;
  let out: string;
  let summary: Record<string, any>;
  const phases: string[] = [];

  beforeAll(async () => {
    model = await loadModel(MODEL_DIR!);
    // Held-out names the model's tokenizer knows (a checkpoint trained on an older corpus may lack some).
    const names = namesKnownTo(model.tokenizer!, IOI_MODEL_SPLIT.test.names);
    const prompts = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names, n: 16, seed: 0, tokenizer: model.tokenizer!, requireSameLength: true });
    result = await runIoiCircuitStudy(model, prompts, { onPhase: (p) => phases.push(p) });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-ioi-'));
    out = path.join(tmp, 'report');
    await writeIoiReport(out, result);
    summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  });
  afterAll(() => {
    model?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('evaluates the model and patches every component with every method', () => {
    console.log(`accuracy ${result.score.accuracy.toFixed(3)}, mean LD ${result.score.meanLogitDiff.toFixed(3)}; warnings: ${result.warnings.join('; ') || 'none'}`);
    expect(result.nPairs).toBe(16);
    expect(result.score.n).toBe(16);
    expect(result.score.meanLogitDiff).toBeGreaterThan(0);
    const comps = ['resid_pre', 'attn_out', 'mlp_out', 'head_out'];
    expect(result.patching.grids.map((g) => `${g.component}/${g.method}`)).toEqual(comps.flatMap((c) => ['activation', 'atp', 'relp'].map((m) => `${c}/${m}`)));
    expect(result.patching.agreement).toHaveLength(8);
    const text = formatAgreementTable(result.patching.agreement);
    expect(text.split('\n')).toHaveLength(2 + 8);
    expect(text).toMatch(/^component\s+method\s+Pearson\s+Spearman\s+rel. L2\s+slope\s+top-k\s+k$/m);
    expect(phases).toEqual(['evaluate', 'patching', 'roles', 'eap', 'circuit', 'ablation', 'classes', 'attention']);
  });

  it('transfer check: on the prompts the circuit was found on it reproduces the study; on another seed it is recomputed', () => {
    const names = namesKnownTo(model.tokenizer!, IOI_MODEL_SPLIT.test.names);
    const same = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names, n: 16, seed: 0, tokenizer: model.tokenizer!, requireSameLength: true });
    const t = ioiTransferCheck(model, result, same, 'same prompts');
    expect(Math.abs(t.faithfulness.fraction - result.circuit.faithfulness.fraction)).toBeLessThan(1e-6);
    expect(Math.abs(t.ablation.fractionKept - result.ablation.result.fractionKept)).toBeLessThan(1e-6);
    const other = generateIoiPrompts({ ...IOI_MODEL_SPLIT.test, names, n: 16, seed: 99, tokenizer: model.tokenizer!, requireSameLength: true });
    const u = ioiTransferCheck(model, result, other, 'another seed');
    expect(u.nPairs).toBe(16);
    expect(u.faithfulness.fraction).not.toBe(t.faithfulness.fraction);
  });

  it('finds a circuit that keeps ≥ 80 % of the logit difference under mean ablation with a minority of the heads', () => {
    const { circuit, totalHeads } = result;
    console.log(
      `circuit ${circuit.heads.map((h) => h.id).join(', ')}: ${circuit.heads.length}/${totalHeads} heads, ` +
        `faithfulness ${circuit.faithfulness.fraction.toFixed(3)} (LD ${circuit.faithfulness.ldCircuit.toFixed(3)} of ${circuit.faithfulness.ldFull.toFixed(3)}); ` +
        `greedy prefix ${circuit.greedy.heads.map((h) => h.id).join(', ')} at ${circuit.greedy.faithfulness.fraction.toFixed(3)}`,
    );
    expect(totalHeads).toBe(model.cfg.nLayers * model.cfg.nHeads);
    expect(circuit.faithfulness.kind).toBe('mean');
    expect(circuit.reached).toBe(true);
    expect(circuit.faithfulness.fraction).toBeGreaterThanOrEqual(0.8);
    expect(circuit.heads.length).toBeGreaterThan(0);
    // Everything outside the circuit is ablated, MLPs included; a minority of the heads is kept.
    expect(circuit.faithfulness.mlps).toBe('nodes');
    expect(circuit.faithfulness.circuitHeads).toBe(circuit.heads.filter((h) => !isMlp(h)).length);
    expect(circuit.faithfulness.circuitHeads).toBeLessThan(totalHeads / 2);
    // Pruning keeps a subset of the greedy prefix that still reaches the target.
    const prefix = circuit.greedy.heads.map((h) => h.id);
    expect(circuit.greedy.faithfulness.fraction).toBeGreaterThanOrEqual(0.8);
    expect([...circuit.heads, ...circuit.greedy.pruned].map((h) => h.id).sort()).toEqual([...prefix].sort());
    // The top-n circuits have the circuit's size.
    expect(result.topN.map((t) => t.method)).toEqual(['activation', 'atp', 'relp']);
    for (const t of result.topN) expect(t.heads).toHaveLength(circuit.heads.length);
  });

  it('finds the shipped model\'s mechanism: a layer-0 S-suppression head (END attends to S, writes −S) and MLP0', () => {
    // Found with this engine (see README): a0.h1 attends from END to the second S token and negatively copies
    // it; MLP0 at END carries most of the rest. No name movers: the model writes −S instead of +IO.
    const a01 = result.heads.find((h) => h.id === 'a0.h1')!;
    expect(a01.roles).toContain('s_suppression');
    expect(a01.attnToS).toBeGreaterThan(0.5);
    expect(a01.attnToS).toBeGreaterThan(10 * a01.attnToIo);
    expect(a01.negativeCopy).toBeGreaterThanOrEqual(0.3);
    expect(a01.directEffect).toBeLessThan(-0.5);
    expect(result.circuit.heads.map((h) => h.id)).toEqual(expect.arrayContaining(['a0.h1', 'm0']));
    expect(result.mlps.activation[0]).toBeGreaterThan(0.5);
    expect(result.ablation.basis).toBe('s_suppression');
    // No induction heads (README), and each head row carries the evidence's pattern scores.
    expect(Math.max(...result.heads.map((h) => h.induction))).toBeLessThan(0.2);
    for (const h of result.heads) {
      expect(h.previousToken).toBe(result.evidence.previousToken[h.layer][h.head]);
      expect(h.duplicateToken).toBe(result.evidence.duplicateToken[h.layer][h.head]);
      expect(h.induction).toBe(result.evidence.induction[h.layer][h.head]);
    }
    // The repeat-or-position control sees the shortcut: a0.h1 attends to S2's place whether or not the name there repeats.
    const rep = result.classes.repeat!.heads.find((h) => h.id === 'a0.h1')!;
    expect(rep.clean).toBeGreaterThan(0.7);
    expect(rep.ratio).toBeGreaterThan(0.9);
  });

  it("ablating the circuit's answer-writing heads drops the logit difference sharply", () => {
    const { ablation } = result;
    console.log(
      `answer heads (${ablation.basis}) ${ablation.heads.map((h) => h.id).join(', ')}: LD ${ablation.result.ldBefore.toFixed(3)} → ${ablation.result.ldAfter.toFixed(3)} ` +
        `(keeps ${(100 * ablation.result.fractionKept).toFixed(1)} %)`,
    );
    expect(ablation.heads.length).toBeGreaterThan(0);
    const inCircuit = new Set(result.circuit.heads.map((h) => h.id));
    for (const h of ablation.heads) expect(inCircuit.has(h.id)).toBe(true);
    if (ablation.basis === 'name_mover') for (const h of ablation.heads) expect(h.roles).toContain('name_mover');
    expect(ablation.result.ldBefore).toBeCloseTo(result.score.meanLogitDiff, 3);
    expect(ablation.result.fractionKept).toBeLessThan(0.5);
  });

  it('writes the report: heatmaps, attention patterns, circuit graph, tables; circuit.json and summary.json', () => {
    const files = fs.readdirSync(out).sort();
    // Atomic writes leave no temp files behind.
    expect(files).toEqual(['circuit.json', 'circuit.svg', 'index.html', 'summary.json']);
    expect(fs.readdirSync(tmp)).toEqual(['report']);

    const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).not.toMatch(/<script/i);
    const svgs = html.match(/<svg[\s>]/g) ?? [];
    // 12 patching heatmaps + attention patterns + circuit graph + 2 EAP graphs.
    expect(svgs.length).toBe(12 + result.attention.patterns.length + 3);
    expect(result.attention.patterns.length).toBeGreaterThan(0);
    for (const c of ['resid_pre', 'attn_out', 'mlp_out', 'head_out']) for (const m of ['activation', 'atp', 'relp']) expect(html).toContain(`${c} · ${m}`);
    expect((html.match(/<figure class="attention">/g) ?? []).length).toBe(result.attention.patterns.length);
    expect(html).toContain('<figure class="circuit-graph"><svg');
    for (const h of result.circuit.heads) expect(html).toContain(`data-id="${h.id}"`);
    for (const cls of ['agreement', 'roles', 'heads', 'faithfulness', 'ablation', 'timings']) {
      if (cls === 'roles' && result.roles.length === 0) continue;
      expect(html).toContain(`<table class="${cls}">`);
    }
    // Every id is unique across the page's SVGs.
    const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);

    const graph = graphFromJson(fs.readFileSync(path.join(out, 'circuit.json'), 'utf8'));
    expect(graph.nodes.filter((n) => n.kind === 'head' || n.kind === 'mlp').map((n) => n.id).sort()).toEqual(result.circuit.heads.map((h) => h.id).sort());
    expect(fs.readFileSync(path.join(out, 'circuit.svg'), 'utf8')).toMatch(/^<svg /);

    const finite = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
    for (const k of ['accuracy', 'meanLogitDiff', 'ldCorrupt', 'runSeconds', 'totalSeconds']) expect(finite(summary[k]), k).toBe(true);
    expect(summary.agreement).toHaveLength(8);
    for (const a of summary.agreement) for (const k of ['pearson', 'spearman', 'relL2', 'slope', 'topKOverlap', 'k']) expect(finite(a[k]), `${a.component}/${a.method} ${k}`).toBe(true);
    expect(summary.conservation.map((c: { rules: string[] }) => c.rules.at(-1))).toEqual(['Half', 'AH', 'AttnHalf']);
    for (const c of summary.conservation) expect(finite(c.input)).toBe(true);
    // The ablation curve runs from nothing kept to every node kept (= the full model).
    const pts = summary.ablationCurve.points;
    expect(pts[0].size).toBe(0);
    expect(pts.at(-1).size).toBe(summary.ablationCurve.order.length);
    expect(Math.abs(pts.at(-1).fraction - 1)).toBeLessThan(1e-4);
    for (const d of summary.ablationCurve.drops) expect(d.after).toBeLessThan(d.before);
    expect(summary.classes).toHaveProperty('backup');
    for (const k of ['fraction', 'normalized', 'ldFull', 'ldCircuit', 'ldAblated', 'size']) expect(finite(summary.circuit.faithfulness[k]), k).toBe(true);
    for (const k of ['ldBefore', 'ldAfter', 'drop', 'fractionKept']) expect(finite(summary.ablation[k]), k).toBe(true);
    expect(summary.circuit.heads.map((h: { id: string }) => h.id)).toEqual(result.circuit.heads.map((h) => h.id));
    expect(summary.circuit.size).toBe(result.circuit.heads.length);
    expect(summary.circuit.totalHeads).toBe(result.totalHeads);
    expect(summary.heads).toHaveLength(result.totalHeads);
    for (const h of summary.heads) for (const k of ['activation', 'atp', 'relp', 'directEffect', 'attnToIo', 'attnToS']) expect(finite(h[k]), `${h.id} ${k}`).toBe(true);
    for (const m of ['atp', 'relp']) {
      expect(summary.eap[m].topEdges.length).toBeGreaterThan(0);
      for (const e of summary.eap[m].topEdges) expect(finite(e.score)).toBe(true);
    }
    for (const v of Object.values(summary.timings)) expect(finite(v)).toBe(true);
    for (const k of ['evaluate', 'patching', 'roles', 'eap', 'circuit', 'ablation', 'attention', 'report']) expect(k in summary.timings, k).toBe(true);
  });
});

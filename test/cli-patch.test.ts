/**
 * End-to-end tests of `hooklens patch` (and `hooklens ioi-dataset` feeding it): each test spawns
 * `node bin/hooklens.mjs patch ...` and checks the documented contract
 *
 *   {"component","method","rules","ld_clean","ld_corrupt","shape":[..],"scores":[[..]..]}
 *
 * against the shared reference grids, plus the HTML report, the --pairs input, the AtP* QK-fix
 * option and one-line errors that leave no output or temp file behind. Spawns go through the
 * concurrency limiter in test/helpers/cli-run.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMPONENT_NAMES } from '../src/patching/sites.js';
import { cliSuite, listTree, stderrLines, type CliResult } from './helpers/cli-run.js';
import { loadReference, maxScaledDiff, modelPath, storiesGguf, type PatchingReference, type Reference } from './helpers/fixtures.js';

const TOL = 1e-4;
const SPAWN_TEST_TIMEOUT = 180_000; // includes waiting for a free spawn slot

const CONTRACT_KEYS = ['component', 'method', 'rules', 'ld_clean', 'ld_corrupt', 'shape', 'scores'];
/** Components the contract names, plus the per-head ones the help documents. */
const DOCUMENTED_COMPONENTS = ['resid_pre', 'resid_mid', 'resid_post', 'attn_out', 'mlp_out', 'head_out', 'head_out_pos', 'q', 'k', 'v', 'pattern'];

type PatchingRef = PatchingReference;

interface PatchOut {
  component: string;
  method: string;
  rules: string[];
  variant?: string[];
  ld_clean: number;
  ld_corrupt: number;
  shape: number[];
  scores: unknown[];
}

const gpt2Ref: Reference = loadReference('tiny-gpt2');
const llamaRef: Reference = loadReference('tiny-llama');
const storiesRef: Reference & { prompt_pair?: { clean_text: string; corrupt_text: string; answer_token: string; wrong_token: string } } =
  loadReference('stories260K');
const patchingOf = (r: Reference) => r.patching as unknown as PatchingRef;
const GPT2 = modelPath('tiny-gpt2');
const LLAMA = modelPath('tiny-llama');

const suite = cliSuite('hooklens-cli-patch-');
const caseDir = suite.caseDir;
const cli = (args: string[], cwd?: string): Promise<CliResult> => suite.cli(args, { cwd });

function describeResult(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (signal ${r.signal})` : ''} after ${r.ms} ms\n--- stdout ---\n${r.stdout.slice(0, 2000)}\n--- stderr ---\n${r.stderr.slice(0, 4000)}`;
}

/** stderr lines that are neither npm noise nor `hooklens patch: note:` remarks. */
function errorLines(stderr: string): string[] {
  return stderrLines(stderr).filter((l) => !l.startsWith('hooklens patch: note:'));
}

function expectSuccess(r: CliResult): void {
  expect(r.signal, describeResult(r)).toBeNull();
  expect(r.code, describeResult(r)).toBe(0);
}

/** Non-zero exit, nothing on stdout, exactly one stderr line (besides notes) containing every part. */
function expectOneLineFailure(r: CliResult, ...parts: (string | RegExp)[]): string {
  const info = describeResult(r);
  expect(r.signal, info).toBeNull();
  expect(r.code, info).not.toBeNull();
  expect(r.code, info).not.toBe(0);
  const lines = errorLines(r.stderr);
  expect(lines, info).toHaveLength(1);
  const line = lines[0];
  // A reason for the user, not a crash report.
  expect(line, info).not.toMatch(/internal error|^\s+at |TypeError|RangeError|ReferenceError|Error: /);
  for (const p of parts) {
    if (typeof p === 'string') expect(line, info).toContain(p);
    else expect(line, info).toMatch(p);
  }
  expect(r.stdout.trim(), info).toBe('');
  return line;
}

function readOut(file: string): PatchOut {
  expect(fs.existsSync(file), `${file} exists`).toBe(true);
  const text = fs.readFileSync(file, 'utf8');
  return JSON.parse(text) as PatchOut;
}

/** Contract keys present (extra keys allowed), types right, `scores` nested to `shape`. Returns the flat scores. */
function checkContract(out: PatchOut, component: string, method: string): number[] {
  for (const k of CONTRACT_KEYS) expect(out, `key ${k}`).toHaveProperty(k);
  expect(out.component).toBe(component);
  expect(out.method).toBe(method);
  expect(Array.isArray(out.rules)).toBe(true);
  expect(typeof out.ld_clean).toBe('number');
  expect(typeof out.ld_corrupt).toBe('number');
  expect(Array.isArray(out.shape) && out.shape.every((d) => Number.isInteger(d) && d > 0)).toBe(true);
  const flat: number[] = [];
  const walk = (x: unknown, depth: number): void => {
    expect(Array.isArray(x), `scores nested to depth ${out.shape.length}`).toBe(true);
    const arr = x as unknown[];
    expect(arr.length).toBe(out.shape[depth]);
    for (const y of arr) {
      if (depth === out.shape.length - 1) {
        expect(typeof y).toBe('number');
        flat.push(y as number);
      } else walk(y, depth + 1);
    }
  };
  walk(out.scores, 0);
  return flat;
}

function pearson(a: number[], b: number[]): number {
  const n = a.length;
  const ma = a.reduce((s, x) => s + x, 0) / n;
  const mb = b.reduce((s, x) => s + x, 0) / n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) ** 2;
    sbb += (b[i] - mb) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

const tokenArgs = (p: PatchingRef) => [
  '--clean-tokens', p.clean.join(','),
  '--corrupt-tokens', p.corrupt.join(','),
  '--answer-token', String(p.answer),
  '--wrong-token', String(p.wrong),
];

// ---------------------------------------------------------------------------------------------
// Bad input: non-zero exit, one stderr line, no --out file and no temp file.

interface BadCase {
  name: string;
  /** Build inputs in `inputs` (a directory apart from the output directory); returns argv. */
  setup(inputs: string, out: string): string[];
  expect: (string | RegExp)[];
}

const SHORT = ['--clean-tokens', '5,17,42', '--corrupt-tokens', '5,88,42', '--answer-token', '10', '--wrong-token', '20'];

const BAD_CASES: BadCase[] = [
  {
    name: 'clean and corrupt texts of different token lengths (stories260K)',
    setup: (_in, out) => [
      'patch', '--model', storiesGguf(),
      '--clean', 'Lily went to the park. Then Lily saw',
      '--corrupt', 'Lily and Tim went to the big park. Then Tim saw',
      '--answer', ' Lily', '--wrong', ' Tim',
      '--component', 'attn_out', '--method', 'atp', '--out', out,
    ],
    expect: [/different lengths/, /\(\d+ vs \d+\)/],
  },
  {
    name: 'unknown component',
    setup: (_in, out) => ['patch', '--model', GPT2, ...SHORT, '--component', 'resid_nope', '--method', 'atp', '--out', out],
    expect: ['resid_nope', 'resid_pre', 'head_out'],
  },
  {
    name: 'unknown method',
    setup: (_in, out) => ['patch', '--model', GPT2, ...SHORT, '--component', 'mlp_out', '--method', 'integrated', '--out', out],
    expect: ['integrated', 'activation'],
  },
  {
    name: 'unknown RelP rule',
    setup: (_in, out) => ['patch', '--model', GPT2, ...SHORT, '--component', 'mlp_out', '--method', 'relp', '--rules', 'LN,Foo', '--out', out],
    expect: ["'Foo'", 'rule'],
  },
  {
    name: 'two rules for attention (AH and AttnHalf)',
    setup: (_in, out) => ['patch', '--model', GPT2, ...SHORT, '--component', 'mlp_out', '--method', 'relp', '--rules', 'LN,AH,AttnHalf', '--out', out],
    expect: ['AH', 'AttnHalf'],
  },
  {
    name: '--rules with --method atp',
    setup: (_in, out) => ['patch', '--model', GPT2, ...SHORT, '--component', 'mlp_out', '--method', 'atp', '--rules', 'LN', '--out', out],
    expect: ['--rules', 'relp'],
  },
  {
    name: '--pairs mixed with --clean',
    setup: (inputs, out) => {
      const f = path.join(inputs, 'pairs.jsonl');
      fs.writeFileSync(f, `${JSON.stringify({ clean: [5, 17, 42], corrupt: [5, 88, 42], answer: 10, wrong: 20 })}\n`);
      return ['patch', '--model', GPT2, '--pairs', f, '--clean', 'x', '--component', 'mlp_out', '--method', 'atp', '--out', out];
    },
    expect: ['--pairs', /exactly one/],
  },
  {
    name: 'pairs file with invalid JSON on line 2',
    setup: (inputs, out) => {
      const f = path.join(inputs, 'broken.jsonl');
      fs.writeFileSync(f, `${JSON.stringify({ clean: [5, 17, 42], corrupt: [5, 88, 42], answer: 10, wrong: 20 })}\n{"clean": [5, 17\n`);
      return ['patch', '--model', GPT2, '--pairs', f, '--component', 'mlp_out', '--method', 'atp', '--out', out];
    },
    expect: ['broken.jsonl:2', /JSON/],
  },
  {
    name: 'pairs of different lengths for a position-resolved component',
    setup: (inputs, out) => {
      const f = path.join(inputs, 'lengths.jsonl');
      fs.writeFileSync(
        f,
        `${JSON.stringify({ clean: [5, 17, 42], corrupt: [5, 88, 42], answer: 10, wrong: 20 })}\n` +
          `${JSON.stringify({ clean: [5, 17, 42, 7], corrupt: [5, 88, 42, 7], answer: 10, wrong: 20 })}\n`,
      );
      return ['patch', '--model', GPT2, '--pairs', f, '--component', 'resid_pre', '--method', 'activation', '--out', out];
    },
    expect: [/one length/],
  },
  {
    name: 'answer token outside the vocabulary',
    setup: (_in, out) => [
      'patch', '--model', GPT2,
      '--clean-tokens', '5,17,42', '--corrupt-tokens', '5,88,42', '--answer-token', '99999', '--wrong-token', '20',
      '--component', 'mlp_out', '--method', 'relp', '--out', out,
    ],
    expect: ['99999', /vocabulary/],
  },
];

// ---------------------------------------------------------------------------------------------

describe.concurrent('hooklens patch', () => {
  // Heavy tests first, so the cheap error cases fill the gaps at the end. The ioi chain (2 sequential spawns) starts first.

  it('--pairs from `hooklens ioi-dataset --simple` on stories260K (head_out, activation)', { timeout: 2 * SPAWN_TEST_TIMEOUT }, async () => {
    const dir = caseDir('ioi');
    const pairs = path.join(dir, 'pairs.jsonl');
    const g = await cli(['ioi-dataset', '--model', storiesGguf(), '--simple', '--n', '4', '--seed', '1', '--out', pairs], dir);
    expectSuccess(g);
    const lines = fs.readFileSync(pairs, 'utf8').split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(4);
    for (const l of lines) {
      const p = JSON.parse(l);
      expect(Object.keys(p).sort()).toEqual(['answer', 'clean', 'corrupt', 'wrong']);
      expect(p.answer).not.toBe(p.wrong);
    }

    const out = path.join(dir, 'o.json');
    const r = await cli(['patch', '--model', storiesGguf(), '--pairs', pairs, '--component', 'head_out', '--method', 'activation', '--out', out], dir);
    expectSuccess(r);
    expect(errorLines(r.stderr), describeResult(r)).toEqual([]);
    expect(listTree(dir), 'no temp files').toEqual(['o.json', 'pairs.jsonl']);
    const res = readOut(out);
    const flat = checkContract(res, 'head_out', 'activation');
    expect(res.shape, 'layers × heads').toEqual([5, 8]);
    expect(flat.every(Number.isFinite)).toBe(true);
    expect(Number.isFinite(res.ld_clean) && Number.isFinite(res.ld_corrupt)).toBe(true);
    // The brief expected ld_clean > ld_corrupt (clean prompts favour the IO name), but on these 4
    // simple pairs (seed 1) stories260K gives ld_clean ≈ 0.711 < ld_corrupt ≈ 0.744: the 260K-
    // parameter model does not do IOI. Only require that the runs differ (else nothing to patch).
    expect(Math.abs(res.ld_clean - res.ld_corrupt)).toBeGreaterThan(1e-6);
  });

  it('text form on stories260K (attn_out, atp) matches the reference, with an HTML report', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const pp = storiesRef.prompt_pair;
    expect(pp, 'stories260K-reference.json has prompt_pair').toBeDefined();
    expect(pp!.answer_token).toBe('▁Lily');
    expect(pp!.wrong_token).toBe('▁Tim');
    const ref = patchingOf(storiesRef);
    // ' Lily' continues the prompt as '▁Lily'; that id is the reference answer (the reference's
    // first clean token after BOS is also '▁Lily': sentencepiece's dummy-prefix space).
    expect(ref.clean[1]).toBe(ref.answer);
    expect(ref.corrupt[1]).toBe(ref.wrong);
    const dir = caseDir('text');
    const out = path.join(dir, 'o.json');
    const report = path.join(dir, 'R.html');
    const r = await cli(
      [
        'patch', '--model', storiesGguf(),
        '--clean', pp!.clean_text, '--corrupt', pp!.corrupt_text, '--answer', ' Lily', '--wrong', ' Tim',
        '--component', 'attn_out', '--method', 'atp', '--out', out, '--report', report,
      ],
      dir,
    );
    expectSuccess(r);
    expect(errorLines(r.stderr), describeResult(r)).toEqual([]);
    expect(listTree(dir), 'only --out and --report, no temp files').toEqual(['R.html', 'o.json']);

    const res = readOut(out);
    const flat = checkContract(res, 'attn_out', 'atp');
    expect(res.shape).toEqual([5, ref.clean.length]);
    // ld_* within 1e-4 means the texts tokenized to the reference ids and ' Lily'/' Tim' to answer/wrong.
    expect(Math.abs(res.ld_clean - ref.ld_clean)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(res.ld_corrupt - ref.ld_corrupt)).toBeLessThanOrEqual(TOL);
    expect(maxScaledDiff(flat, ref.grids.attn_out.atp), 'attn_out atp grid').toBeLessThanOrEqual(TOL);

    const html = fs.readFileSync(report, 'utf8');
    expect(html.match(/<svg/g) ?? [], 'one heatmap per method (activation, atp, relp)').toHaveLength(3);
    for (const m of ['activation', 'atp', 'relp']) expect(html).toContain(m);
    expect(html).toMatch(/Pearson/);
    // Agreement row for atp: Pearson is the first number after the method cell.
    const row = /<tr><td>attn_out<\/td><td>atp<\/td><td[^>]*>(-?\d+(?:\.\d+)?)<\/td>/.exec(html);
    expect(row, 'agreement table row attn_out · atp with a Pearson value').not.toBeNull();
    const p = Number(row![1]);
    expect(Number.isFinite(p)).toBe(true);
    expect(p).toBeGreaterThanOrEqual(-1);
    expect(p).toBeLessThanOrEqual(1);
    // The report prints 3 decimals; the reference grids give the same correlation.
    expect(Math.abs(p - pearson(ref.grids.attn_out.atp, ref.grids.attn_out.activation))).toBeLessThanOrEqual(2e-3);
  });

  it('token form on tiny-gpt2 (mlp_out, relp) matches the reference; --json echoes the --out document', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const ref = patchingOf(gpt2Ref);
    const dir = caseDir('gpt2-relp');
    const out = path.join(dir, 'o.json');
    const r = await cli(['patch', '--model', GPT2, ...tokenArgs(ref), '--component', 'mlp_out', '--method', 'relp', '--out', out, '--json'], dir);
    expectSuccess(r);
    expect(listTree(dir), 'no temp files').toEqual(['o.json']);
    const res = readOut(out);
    const flat = checkContract(res, 'mlp_out', 'relp');
    expect(res.rules).toEqual(['LN', 'Identity', 'Half']);
    expect(res.shape).toEqual([3, 8]);
    expect(Math.abs(res.ld_clean - ref.ld_clean)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(res.ld_corrupt - ref.ld_corrupt)).toBeLessThanOrEqual(TOL);
    expect(maxScaledDiff(flat, ref.grids.mlp_out.relp), 'mlp_out relp grid').toBeLessThanOrEqual(TOL);
    const stdoutLines = r.stdout.split('\n').filter((l) => l.trim() !== '');
    expect(stdoutLines, describeResult(r)).toHaveLength(1);
    expect(JSON.parse(stdoutLines[0])).toEqual(res);
  });

  it('token form on tiny-llama (resid_pre, activation) matches the reference', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const ref = patchingOf(llamaRef);
    const dir = caseDir('llama-act');
    const out = path.join(dir, 'o.json');
    const r = await cli(['patch', '--model', LLAMA, ...tokenArgs(ref), '--component', 'resid_pre', '--method', 'activation', '--out', out], dir);
    expectSuccess(r);
    expect(r.stdout.trim(), 'nothing on stdout without --json').toBe('');
    expect(listTree(dir), 'no temp files').toEqual(['o.json']);
    const res = readOut(out);
    const flat = checkContract(res, 'resid_pre', 'activation');
    expect(res.shape).toEqual([3, 8]);
    expect(Math.abs(res.ld_clean - ref.ld_clean)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(res.ld_corrupt - ref.ld_corrupt)).toBeLessThanOrEqual(TOL);
    expect(maxScaledDiff(flat, ref.grids.resid_pre.activation), 'resid_pre activation grid').toBeLessThanOrEqual(TOL);
  });

  it('relp on tiny-llama (bias-free) with LN,Identity,Half,AH: --out and --report show conservation 1', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const ref = patchingOf(llamaRef);
    const dir = caseDir('llama-conservation');
    const out = path.join(dir, 'o.json');
    const report = path.join(dir, 'R.html');
    const r = await cli(['patch', '--model', LLAMA, ...tokenArgs(ref), '--component', 'mlp_out', '--method', 'relp', '--rules', 'LN,Identity,Half,AH', '--out', out, '--report', report], dir);
    expectSuccess(r);
    const res = readOut(out) as PatchOut & { conservation: { input: number; perCut: { hook: string; ratio: number }[] } };
    checkContract(res, 'mlp_out', 'relp');
    expect(res.rules).toEqual(['LN', 'Identity', 'Half', 'AH']);
    expect(Math.abs(res.conservation.input - 1)).toBeLessThan(1e-4);
    expect(res.conservation.perCut).toHaveLength(4);
    const html = fs.readFileSync(report, 'utf8');
    expect(html).toContain('RelP relevance conservation');
    expect(html).toMatch(/<tr><td>LN, Identity, Half, AH<\/td><td class="num">-?\d+\.\d+<\/td><td class="num">1\.0000<\/td>/);
  });

  it('--component q --method atp --qk-fix gives a [n_layers, n_heads] grid', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const ref = patchingOf(llamaRef);
    const dir = caseDir('qkfix-q');
    const out = path.join(dir, 'o.json');
    const r = await cli(['patch', '--model', LLAMA, ...tokenArgs(ref), '--component', 'q', '--method', 'atp', '--qk-fix', '--out', out], dir);
    expectSuccess(r);
    expect(listTree(dir), 'no temp files').toEqual(['o.json']);
    const res = readOut(out);
    const flat = checkContract(res, 'q', 'atp');
    expect(res.shape).toEqual([3, 4]); // tiny-llama: 3 layers, 4 query heads
    expect(flat.every(Number.isFinite)).toBe(true);
    expect(Math.abs(res.ld_clean - ref.ld_clean)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(res.ld_corrupt - ref.ld_corrupt)).toBeLessThanOrEqual(TOL);
    expect(res.variant ?? [], 'the QK fix was applied').toContain('qk-fix');
  });

  it('--component head_out --method atp --qk-fix fails clearly (the QK fix is for q/k)', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const ref = patchingOf(gpt2Ref);
    const dir = caseDir('qkfix-head');
    const out = path.join(dir, 'o.json');
    const r = await cli(['patch', '--model', GPT2, ...tokenArgs(ref), '--component', 'head_out', '--method', 'atp', '--qk-fix', '--out', out], dir);
    expectOneLineFailure(r, /q(\/| and | or )k/i, 'head_out');
    expect(listTree(dir), 'no output or temp file').toEqual([]);
  });

  it('--component q --method atp --qk-fix --report works (the report adds activation and relp)', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const ref = patchingOf(llamaRef);
    const dir = caseDir('qkfix-report');
    const out = path.join(dir, 'o.json');
    const report = path.join(dir, 'R.html');
    const r = await cli(['patch', '--model', LLAMA, ...tokenArgs(ref), '--component', 'q', '--method', 'atp', '--qk-fix', '--out', out, '--report', report], dir);
    expectSuccess(r);
    expect(listTree(dir)).toEqual(['R.html', 'o.json']);
    const res = readOut(out);
    checkContract(res, 'q', 'atp');
    expect(res.shape).toEqual([3, 4]);
    expect(fs.readFileSync(report, 'utf8').match(/<svg/g) ?? []).toHaveLength(3);
  });

  describe.concurrent('bad input: one-line error, non-zero exit, no output', () => {
    for (const c of BAD_CASES) {
      it(c.name, { timeout: SPAWN_TEST_TIMEOUT }, async () => {
        const dir = caseDir('bad');
        const inputs = path.join(dir, 'inputs');
        const outDir = path.join(dir, 'out');
        fs.mkdirSync(inputs);
        fs.mkdirSync(outDir);
        const out = path.join(outDir, 'o.json');
        const args = c.setup(inputs, out);
        // cwd = outDir: anything written relative to the working directory would show up there too.
        const r = await cli(args, outDir);
        expectOneLineFailure(r, ...c.expect);
        expect(listTree(outDir), 'no output or temp file').toEqual([]);
      });
    }
  });

  it('patch --help exits 0 and documents every component', { timeout: SPAWN_TEST_TIMEOUT }, async () => {
    const r = await cli(['patch', '--help']);
    expect(r.code, describeResult(r)).toBe(0);
    expect(r.stdout).toContain('hooklens patch');
    for (const opt of ['--model', '--component', '--method', '--rules', '--pairs', '--out', '--report', '--qk-fix']) expect(r.stdout).toContain(opt);
    for (const c of new Set([...DOCUMENTED_COMPONENTS, ...COMPONENT_NAMES])) expect(r.stdout, c).toMatch(new RegExp(`\\b${c}\\b`));
    for (const m of ['activation', 'atp', 'relp']) expect(r.stdout).toContain(m);
    expect(stderrLines(r.stderr)).toEqual([]);
  });
});

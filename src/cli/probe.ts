/** `hooklens probe`: fit linear probes on an Arrow activation cache, one per hook. */
import fs from 'node:fs';
import { fail } from '../errors.js';
import { initBackend } from '../backend/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { globToRegExp } from '../hooks/hook-names.js';
import { cacheHookColumns } from '../sae/activation-stream.js';
import { fitProbe, PROBE_METHODS, type FittedProbe, type ProbeMethod } from '../probing/fit.js';
import { readLabels } from '../probing/labels.js';
import { probeJson, writeProbeFiles } from '../probing/probe-file.js';
import { renderSweepSvg, sweepRows, sweepTable } from '../probing/report.js';
import { parsePosition, probeRowsFromCache } from '../probing/rows.js';
import { parseOptions, printJson, requireString, type Command } from './args.js';
import { progressBar } from './progress.js';

function parseNumber(flag: string, s: string | undefined, dflt: number): number {
  if (s === undefined) return dflt;
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v)) fail(`${flag} must be a number, got '${s}'`);
  return v;
}

export const probeCommand: Command = {
  name: 'probe',
  summary: 'fit linear probes (logistic, ridge, mean-diff) on cached activations, with controls',
  usage: `hooklens probe --cache FILE.arrow --hook NAME|PATTERN --labels FILE.jsonl --out probe.json [options]

  --cache FILE       activation cache written by 'hooklens cache' (streamed, one record batch at a time)
  --hook NAME        hook column, or a pattern ('blocks.*.hook_resid_post') for one probe per hook;
                     a pattern also writes <out>.svg (score by layer) and <out>.md (table)
  --labels FILE      JSONL lines {"prompt": i, "label": x} (x a string or number), or with "pos": p
                     to label single rows (then every line needs "pos")
  --position P       rows per prompt: last (default; all when labels have "pos"), all, an index N
                     (negative counts from the end: --position=-2), text or image (VLM caches)
  --method M         logistic (default; 2 classes → one sigmoid logit, K ≥ 3 → softmax),
                     ridge (numeric labels), mean-diff (2 classes)
  --l2 λ             penalty (λ/2)·‖W‖² on the mean loss, bias unpenalised (default 1e-3)
  --standardize      z-score features before fitting (penalty then acts on z-space weights);
                     weights are always written in the raw activation space
  --test-frac F      held-out fraction of prompts (default 0.2; 0 = no test split)
  --seed S           split and control seed (default 0)
  --control          also fit a shuffled-label baseline and Hewitt & Liang's control task
                     (random label per token type), and report selectivity
  --max-iter N       L-BFGS iteration limit (default 2000; stops earlier at ‖∇‖ ≤ 1e-6)
  --out FILE         probe JSON; a sibling .safetensors holds weight [outputs, d] and bias
  --json             print the result JSON (per-hook summaries for a pattern) on stdout`,
  async run(argv) {
    const { values } = parseOptions('probe', argv, {
      cache: { type: 'string' },
      hook: { type: 'string' },
      labels: { type: 'string' },
      position: { type: 'string' },
      method: { type: 'string' },
      l2: { type: 'string' },
      standardize: { type: 'boolean' },
      'test-frac': { type: 'string' },
      seed: { type: 'string' },
      control: { type: 'boolean' },
      'max-iter': { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
    });
    const cache = requireString('probe', values, 'cache');
    const hookArg = requireString('probe', values, 'hook');
    const labelsFile = requireString('probe', values, 'labels');
    const out = requireString('probe', values, 'out');
    if (!out.endsWith('.json')) fail(`--out must name a .json file, got '${out}'`);
    const method = (values.method ?? 'logistic') as ProbeMethod;
    if (!PROBE_METHODS.includes(method)) fail(`--method must be one of ${PROBE_METHODS.join(', ')}, got '${values.method}'`);
    const l2 = parseNumber('--l2', values.l2, 1e-3);
    const testFrac = parseNumber('--test-frac', values['test-frac'], 0.2);
    const seed = parseNumber('--seed', values.seed, 0);
    const maxIter = parseNumber('--max-iter', values['max-iter'], 2000);
    if (!Number.isInteger(maxIter) || maxIter < 1) fail(`--max-iter must be a positive integer, got '${values['max-iter']}'`);
    if (!fs.existsSync(cache)) fail(`cannot read activation cache ${cache}: no such file`);
    const labels = readLabels(labelsFile);
    const position = values.position !== undefined ? parsePosition(values.position) : labels.positional ? 'all' : 'last';

    const columns = cacheHookColumns(cache);
    const isPattern = /[*?]/.test(hookArg);
    const hooks = isPattern ? columns.filter((c) => globToRegExp(hookArg).test(c)) : columns.includes(hookArg) ? [hookArg] : [];
    if (hooks.length === 0) fail(`${cache}: no hook column ${isPattern ? 'matches' : 'named'} '${hookArg}' (columns: ${columns.join(', ') || 'none'})`);

    await initBackend();
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const bar = progressBar('probe');
    try {
      const probes: FittedProbe[] = [];
      for (const [i, hook] of hooks.entries()) {
        if (controller.signal.aborted) fail('interrupted: no probe written');
        const rows = probeRowsFromCache(cache, hook, { position, labels });
        probes.push(fitProbe(rows, { method, l2, standardize: !!values.standardize, testFrac, seed, control: !!values.control, lbfgs: { maxIter } }));
        bar.update(i + 1, hooks.length);
        // Let a Ctrl-C between hooks be seen.
        await new Promise((r) => setImmediate(r));
      }
      bar.stop();
      if (controller.signal.aborted) fail('interrupted: no probe written');
      const metric = method === 'ridge' ? 'R²' : 'accuracy';
      const files = writeProbeFiles(out, probes, position, isPattern ? hookArg : undefined);
      const extra: string[] = [];
      if (isPattern) {
        const rowsOut = sweepRows(probes);
        const base = out.replace(/\.json$/, '');
        writeFileAtomic(`${base}.svg`, await renderSweepSvg(rowsOut, metric, `${method} probe, ${hookArg}, position ${position}`));
        const table = sweepTable(rowsOut, metric);
        writeFileAtomic(`${base}.md`, table + '\n');
        extra.push(`${base}.svg`, `${base}.md`);
        if (!values.json) console.log(table);
      }
      const unconverged = probes.filter((p) => !p.solver.converged);
      if (unconverged.length) console.error(`warning: L-BFGS stopped before ‖∇‖ ≤ 1e-6 on ${unconverged.map((p) => `${p.hook} (‖∇‖ ${p.solver.gradNorm?.toExponential(1)})`).join(', ')}; raise --max-iter or --l2`);
      if (values.json) {
        if (isPattern) printJson({ hook: hookArg, position, files: [files.json, files.safetensors, ...extra], probes: sweepRows(probes) });
        else printJson({ ...probeJson(probes[0], position), weights: undefined, files: [files.json, files.safetensors] });
      } else if (!isPattern) {
        const p = probes[0];
        const s = (m: typeof p.train | null) => (m ? (m.accuracy !== undefined ? `accuracy ${m.accuracy.toFixed(3)}` : `R² ${m.r2!.toFixed(3)}`) : '—');
        console.log(`${p.hook} (${method}, ${p.train.n} train / ${p.test?.n ?? 0} test rows): train ${s(p.train)}, test ${s(p.test)}${p.control ? `, selectivity ${p.control.selectivity === null ? '— (one word type)' : p.control.selectivity.toFixed(3)}` : ''}`);
      }
      console.error(`wrote ${[files.json, files.safetensors, ...extra].join(', ')}`);
    } finally {
      bar.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

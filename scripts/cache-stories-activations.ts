/**
 * Cache stories260K activations of one hook over the stories corpus (datasets/stories), train and
 * eval split, as Arrow activation caches for SAE training / evaluation (read them back with
 * src/sae/activation-stream.ts).
 *
 *   npx tsx scripts/cache-stories-activations.ts [--model ../shared/models/stories260K.gguf]
 *       [--hook blocks.2.hook_resid_post] [--out sae-runs/stories260K] [--corpus datasets/stories/stories.jsonl]
 *       [--batch-rows 4096]
 *
 * Writes OUT/<hook>.train.arrow and OUT/<hook>.eval.arrow (one row per story token, BOS
 * included; skip it when streaming with excludePos0) and prints their row counts and sizes.
 * Record batches hold at most --batch-rows rows so streaming readers can shuffle batch order.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { STORIES_JSONL, readStoriesSplit } from '../datasets/stories.js';
import { progressBar } from '../src/cli/progress.js';
import { writeActivationCache } from '../src/hooks/cache-to-arrow.js';
import { loadModel } from '../src/models/load.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: '../shared/models/stories260K.gguf' },
    hook: { type: 'string', default: 'blocks.2.hook_resid_post' },
    out: { type: 'string', default: 'sae-runs/stories260K' },
    corpus: { type: 'string', default: STORIES_JSONL },
    'batch-rows': { type: 'string', default: '4096' },
  },
});

const batchRows = Number(values['batch-rows']);
if (!(Number.isInteger(batchRows) && batchRows > 0)) throw new Error(`--batch-rows must be a positive integer, got ${values['batch-rows']}`);
const t0 = Date.now();
const model = await loadModel(values.model!);
const names = model.resolveHooks([values.hook!]);
if (names.length !== 1) throw new Error(`--hook must name exactly one hook, got ${names.length}: ${names.join(', ')}`);
const hook = names[0];
const split = readStoriesSplit(values.corpus);
fs.mkdirSync(values.out!, { recursive: true });

const summary: Record<string, { file: string; stories: number; rows: number; bytes: number; seconds: number }> = {};
for (const [name, stories] of Object.entries(split)) {
  const file = path.join(values.out!, `${hook}.${name}.arrow`);
  const bar = progressBar(`${name} ${hook}`);
  const t = Date.now();
  const { rows, bytes } = await writeActivationCache(
    model,
    stories.map((s) => s.tokens),
    file,
    { hooks: [hook], onProgress: (d, n) => bar.update(d, n), writer: { maxBatchRows: batchRows } },
  );
  bar.stop();
  summary[name] = { file, stories: stories.length, rows, bytes, seconds: Number(((Date.now() - t) / 1000).toFixed(1)) };
}
model.dispose();
console.log(JSON.stringify({ model: values.model, hook, dIn: model.cfg.dModel, ...summary, totalSeconds: Number(((Date.now() - t0) / 1000).toFixed(1)) }, null, 2));

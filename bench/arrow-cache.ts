/**
 * Write throughput of the Arrow activation cache: ~200 MB of fixed-size float32 rows
 * (12 hooks × 768 floats × 128 positions × N prompts) to a temp file, then read it back.
 *
 *   npx tsx bench/arrow-cache.ts [totalMB]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ArrowCacheWriter, readArrowCache, type HookColumnSpec } from '../src/io/arrow-cache.js';

const HOOKS = 12;
const D = 768;
const T = 128;
const targetMB = Number(process.argv[2] ?? 200);
const bytesPerPrompt = HOOKS * D * T * 4;
const prompts = Math.max(1, Math.round((targetMB * 1e6) / bytesPerPrompt));

const columns: HookColumnSpec[] = Array.from({ length: HOOKS }, (_, l) => ({ name: `blocks.${l}.hook_resid_post`, perPositionShape: [D] }));
// One activation buffer per hook, reused for every prompt (as a forward pass would).
const acts: Record<string, Float32Array> = {};
for (const c of columns) {
  const a = new Float32Array(T * D);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i * 0.001);
  acts[c.name] = a;
}
const tokens = Int32Array.from({ length: T }, (_, i) => i);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-bench-'));
const file = path.join(dir, 'cache.arrow');
try {
  const t0 = performance.now();
  const w = ArrowCacheWriter.open(file, { model: 'bench', columns });
  for (let p = 0; p < prompts; p++) w.writePrompt(p, tokens, acts);
  await w.close();
  const writeS = (performance.now() - t0) / 1000;
  const size = fs.statSync(file).size;

  const t1 = performance.now();
  const cache = readArrowCache(file);
  const readS = (performance.now() - t1) / 1000;
  if (cache.prompt.length !== prompts * T) throw new Error('row count mismatch');

  const mb = size / 1e6;
  console.log(`arrow-cache: ${prompts} prompts × ${T} positions × ${HOOKS} hooks × ${D} floats = ${mb.toFixed(1)} MB in ${w.batchesWritten} record batches`);
  console.log(`  write: ${writeS.toFixed(2)} s  ${(mb / writeS).toFixed(0)} MB/s`);
  console.log(`  read (readArrowCache, whole file): ${readS.toFixed(2)} s  ${(mb / readS).toFixed(0)} MB/s`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * The rows a probe is fitted on: one hook's activations at the selected positions of each prompt,
 * joined to their labels. Read from an Arrow cache one record batch at a time; only the selected,
 * labelled rows of one hook are held (bounded by what is fitted, not by the file).
 */
import { fail } from '../errors.js';
import { ActivationStream } from '../sae/activation-stream.js';
import type { RowMatrix } from './design-matrix.js';
import type { LabelSet, LabelValue } from './labels.js';

/** `last`, `all`, a position index (negative counts from the end), or a modality. */
export type PositionSpec = 'last' | 'all' | 'text' | 'image' | number;

export function parsePosition(s: string): PositionSpec {
  if (s === 'last' || s === 'all' || s === 'text' || s === 'image') return s;
  if (/^-?\d+$/.test(s)) return Number(s);
  fail(`--position must be last, all, text, image or an integer, got '${s}'`);
}

export interface ProbeRows extends RowMatrix {
  hook: string;
  prompt: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  labels: LabelValue[];
}

/** One prompt's rows as read (copied out of the record batch). */
interface PromptRows {
  prompt: number;
  pos: number[];
  token: number[];
  modality: number[];
  acts: Float32Array[];
}

/** Growable row store, so memory tracks the rows kept. */
class RowStore {
  private x: Float32Array;
  n = 0;
  prompt: number[] = [];
  pos: number[] = [];
  token: number[] = [];
  labels: LabelValue[] = [];
  constructor(readonly d: number) {
    this.x = new Float32Array(d * 1024);
  }
  push(act: Float32Array, prompt: number, pos: number, token: number, label: LabelValue): void {
    if ((this.n + 1) * this.d > this.x.length) {
      const next = new Float32Array(this.x.length * 2);
      next.set(this.x);
      this.x = next;
    }
    this.x.set(act, this.n * this.d);
    this.prompt.push(prompt);
    this.pos.push(pos);
    this.token.push(token);
    this.labels.push(label);
    this.n++;
  }
  done(hook: string): ProbeRows {
    return { hook, x: this.x.slice(0, this.n * this.d), n: this.n, d: this.d, prompt: Int32Array.from(this.prompt), pos: Int32Array.from(this.pos), token: Int32Array.from(this.token), labels: this.labels };
  }
}

function positionsOf(p: PromptRows, spec: PositionSpec, where: string): number[] {
  const n = p.pos.length;
  if (spec === 'all') return p.pos.map((_, i) => i);
  if (spec === 'last') return [n - 1];
  if (spec === 'text') return p.modality.flatMap((m, i) => (m === 0 ? [i] : []));
  if (spec === 'image') return p.modality.flatMap((m, i) => (m === 1 ? [i] : []));
  const i = spec < 0 ? n + spec : p.pos.indexOf(spec);
  if (i < 0 || i >= n) fail(`${where}: prompt ${p.prompt} has no position ${spec} (${n} positions)`);
  return [i];
}

export interface SelectOptions {
  position: PositionSpec;
  labels: LabelSet;
}

/**
 * Stream `hook` from the cache file(s) and keep the rows at `position` that carry a label.
 * Labels for prompts (or prompt positions) the cache does not have are an error.
 */
export function probeRowsFromCache(files: string | readonly string[], hook: string, opts: SelectOptions): ProbeRows {
  const stream = ActivationStream.open({ files, hook, batchSize: 1, shuffle: false });
  const where = typeof files === 'string' ? files : files.join(', ');
  try {
    const byPrompt = new Map<number, LabelValue>();
    const byRow = new Map<string, { label: LabelValue; used: boolean }>();
    for (const e of opts.labels.entries) {
      if (e.pos === undefined) byPrompt.set(e.prompt, e.label);
      else byRow.set(`${e.prompt}:${e.pos}`, { label: e.label, used: false });
    }
    const seenPrompts = new Set<number>();
    const store = new RowStore(stream.dIn);
    let current: PromptRows | null = null;
    const flush = (p: PromptRows) => {
      for (const i of positionsOf(p, opts.position, where)) {
        const act = p.acts[i];
        for (let j = 0; j < act.length; j++) {
          if (!Number.isFinite(act[j])) fail(`${where}: column "${hook}" has a non-finite value (${act[j]}) at prompt ${p.prompt} pos ${p.pos[i]}`);
        }
        let label: LabelValue | undefined;
        if (opts.labels.positional) {
          const r = byRow.get(`${p.prompt}:${p.pos[i]}`);
          if (r) {
            r.used = true;
            label = r.label;
          }
        } else label = byPrompt.get(p.prompt);
        if (label !== undefined) store.push(act, p.prompt, p.pos[i], p.token[i], label);
      }
    };
    for (const rb of stream.recordBatches()) {
      // Text-only caches have no modality column: every row is text.
      if (opts.position === 'image' && !rb.modality) {
        fail(`${where}: --position image needs a vision-language cache (no "modality" column)`);
      }
      const d = stream.dIn;
      for (let r = 0; r < rb.rows; r++) {
        const prompt = rb.prompt[r];
        if (!current || current.prompt !== prompt) {
          if (current) flush(current);
          if (seenPrompts.has(prompt)) fail(`${where}: rows of prompt ${prompt} are not contiguous`);
          seenPrompts.add(prompt);
          current = { prompt, pos: [], token: [], modality: [], acts: [] };
        }
        current.pos.push(rb.pos[r]);
        current.token.push(rb.token[r]);
        current.modality.push(rb.modality ? rb.modality[r] : 0);
        current.acts.push(rb.acts.slice(r * d, (r + 1) * d));
      }
    }
    if (current) flush(current);
    for (const e of opts.labels.entries) {
      if (!seenPrompts.has(e.prompt)) fail(`${opts.labels.file}:${e.line}: label for prompt ${e.prompt}, which ${where} does not have (${seenPrompts.size} prompts)`);
    }
    for (const e of opts.labels.entries) {
      if (e.pos !== undefined && !byRow.get(`${e.prompt}:${e.pos}`)!.used) {
        fail(`${opts.labels.file}:${e.line}: label for prompt ${e.prompt} pos ${e.pos} matches no row at --position ${opts.position} of ${where}`);
      }
    }
    if (store.n === 0) fail(`${where}: no labelled rows at --position ${opts.position}`);
    return store.done(hook);
  } finally {
    stream.close();
  }
}

/** Rows from activations already in memory ([n, d] with their prompts), e.g. a study's own forward passes. */
export function probeRowsFromArrays(hook: string, x: Float32Array, d: number, prompt: ArrayLike<number>, labels: readonly LabelValue[], pos?: ArrayLike<number>, token?: ArrayLike<number>): ProbeRows {
  const n = prompt.length;
  if (x.length !== n * d) fail(`${hook}: ${x.length} activation values for ${n} rows of d ${d}`);
  if (labels.length !== n) fail(`${hook}: ${labels.length} labels for ${n} rows`);
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) fail(`${hook}: non-finite activation at row ${Math.floor(i / d)}`);
  return { hook, x, n, d, prompt: Int32Array.from(prompt), pos: pos ? Int32Array.from(pos) : new Int32Array(n), token: token ? Int32Array.from(token) : new Int32Array(n).fill(-1), labels: [...labels] };
}

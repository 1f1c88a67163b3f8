/** Building padded token batches from ragged prompts. */
import { fail } from '../errors.js';
import type { TokenBatch } from '../models/transformer.js';

export type PaddingSide = 'right' | 'left';

export function padBatch(seqs: readonly (readonly number[])[], side: PaddingSide = 'right', padId = 0): TokenBatch {
  if (seqs.length === 0) fail('empty input: no prompts given');
  const T = Math.max(...seqs.map((s) => s.length));
  if (T === 0) fail('empty input: a prompt has no tokens');
  const batch = seqs.length;
  const ids = new Int32Array(batch * T).fill(padId);
  const mask = new Int32Array(batch * T);
  seqs.forEach((s, b) => {
    const off = b * T + (side === 'left' ? T - s.length : 0);
    for (let i = 0; i < s.length; i++) {
      ids[off + i] = s[i];
      mask[off + i] = 1;
    }
  });
  return { ids, mask, batch, seqLen: T };
}

/** The real (unpadded) tokens of prompt b. */
export function promptTokens(tokens: TokenBatch, b: number): number[] {
  const out: number[] = [];
  for (let t = 0; t < tokens.seqLen; t++) {
    const i = b * tokens.seqLen + t;
    if (tokens.mask[i]) out.push(tokens.ids[i]);
  }
  return out;
}

/** Index of the last real token of each prompt (final position for metrics and `run`). */
export function lastPositions(tokens: TokenBatch): number[] {
  const out: number[] = [];
  for (let b = 0; b < tokens.batch; b++) {
    let last = -1;
    for (let t = 0; t < tokens.seqLen; t++) if (tokens.mask[b * tokens.seqLen + t]) last = t;
    out.push(last);
  }
  return out;
}

export function isTokenBatch(x: unknown): x is TokenBatch {
  return typeof x === 'object' && x !== null && 'ids' in x && 'mask' in x && 'seqLen' in x;
}

/**
 * Consecutive groups of prompts for batched forwards: at most `maxPrompts` prompts, and with
 * `maxTokens` at most that many padded tokens (longest prompt × count; always at least one prompt).
 */
export function* promptBatches(prompts: readonly (readonly number[])[], limits: { maxTokens?: number; maxPrompts?: number }): Generator<{ start: number; group: number[][] }> {
  const cap = limits.maxPrompts ?? Infinity;
  const budget = limits.maxTokens ?? Infinity;
  let start = 0;
  while (start < prompts.length) {
    let end = start + 1;
    let longest = prompts[start].length;
    while (end < prompts.length && end - start < cap) {
      const l = Math.max(longest, prompts[end].length);
      if (l * (end - start + 1) > budget) break;
      longest = l;
      end++;
    }
    yield { start, group: prompts.slice(start, end).map((p) => [...p]) };
    start = end;
  }
}

/**
 * [b, T] ids and mask with one more column: the new token, a real position in every row — or,
 * with `real`, only in the rows it marks (the others get a padding slot: id 0, mask 0).
 */
export function appendColumn(ids: Int32Array, mask: Int32Array, b: number, T: number, next: ArrayLike<number>, real?: readonly boolean[]): { ids: Int32Array; mask: Int32Array } {
  const ids2 = new Int32Array(b * (T + 1));
  const mask2 = new Int32Array(b * (T + 1));
  for (let r = 0; r < b; r++) {
    ids2.set(ids.subarray(r * T, (r + 1) * T), r * (T + 1));
    mask2.set(mask.subarray(r * T, (r + 1) * T), r * (T + 1));
    const on = real ? real[r] : true;
    ids2[r * (T + 1) + T] = on ? next[r] : 0;
    mask2[r * (T + 1) + T] = on ? 1 : 0;
  }
  return { ids: ids2, mask: mask2 };
}

/** Decoding state of a left-padded batch: each row's real ids (its output so far), the longest row, finished flags. */
export function decodingRows(start: { ids: Int32Array; mask: Int32Array; batch: number; seqLen: number }): { out: number[][]; longest: number; done: boolean[] } {
  const T = start.seqLen;
  const out = Array.from({ length: start.batch }, (_, r) => Array.from(start.ids.subarray(r * T, (r + 1) * T)).filter((_, t) => start.mask[r * T + t] === 1));
  return { out, longest: Math.max(...out.map((o) => o.length)), done: new Array<boolean>(start.batch).fill(false) };
}

/**
 * One decoding step's tokens into each unfinished row's output; a row finishes at EOS when
 * stopAtEos. Returns true when every row has finished.
 */
export function recordNextTokens(out: number[][], done: boolean[], next: ArrayLike<number>, eos: number | null, stopAtEos: boolean | undefined): boolean {
  for (let r = 0; r < out.length; r++) {
    if (done[r]) continue;
    out[r].push(next[r]);
    if (stopAtEos && next[r] === eos) done[r] = true;
  }
  return done.every(Boolean);
}

/** The batch repeated `times` times: row s·b + n is row n (images are not carried). */
export function tileBatch(tokens: TokenBatch, times: number): TokenBatch {
  const n = tokens.ids.length;
  const ids = new Int32Array(n * times);
  const mask = new Int32Array(n * times);
  for (let s = 0; s < times; s++) {
    ids.set(tokens.ids, s * n);
    mask.set(tokens.mask, s * n);
  }
  return { ids, mask, batch: tokens.batch * times, seqLen: tokens.seqLen };
}

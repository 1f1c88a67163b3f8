/**
 * Clean/corrupt prompt pairs: from CLI flags, JSONL files (text or token ids), or code.
 * Clean and corrupt must have the same token length; position-resolved grids also need every pair
 * to share one length.
 */
import path from 'node:path';
import { fail } from '../errors.js';
import { readJsonLines } from '../io/jsonl.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import type { ImageBatch } from '../models/image-batch.js';
import { expandImagePlaceholders } from '../models/stages/splice.js';

export interface PromptPair {
  clean: number[];
  corrupt: number[];
  answer: number;
  wrong: number;
  /** A VLM pair's images, one per placeholder run of its prompt (same or different ones per side). */
  cleanImages?: ImageBatch;
  corruptImages?: ImageBatch;
}

export interface TextPair {
  clean: string | number[];
  corrupt: string | number[];
  answer: string | number;
  wrong: string | number;
  cleanImages?: ImageBatch;
  corruptImages?: ImageBatch;
  /** Image files named by a pairs file ("image", or "clean_image" / "corrupt_image"), loaded by the caller. */
  imageFiles?: { clean?: string; corrupt?: string };
}

/**
 * Token id of an answer string as it would continue `prompt`: the first new token of
 * encode(prompt + answer). Multi-token answers use their first token (reported in `warnings`).
 */
export function answerToken(model: HookedModel, prompt: string | number[], answer: string | number, warnings: string[]): number {
  if (typeof answer === 'number') return answer;
  if (answer === '') fail('answer/wrong text is empty');
  let ids: number[] | null = null;
  if (typeof prompt === 'string') {
    const head = model.encode(prompt);
    const full = model.encode(prompt + answer);
    if (full.length > head.length && head.every((t, i) => full[i] === t)) ids = full.slice(head.length);
  }
  if (!ids) {
    if (!model.tokenizer) fail(`${model.source}: the model has no tokenizer; give answer/wrong as token ids`);
    ids = model.tokenizer.encode(answer, { addSpecialTokens: false });
  }
  if (ids.length === 0) fail(`answer '${answer}' tokenizes to nothing`);
  if (ids.length > 1) warnings.push(`answer '${answer}' is ${ids.length} tokens; using the first (${ids[0]})`);
  return ids[0];
}

/** A VLM's single image placeholders expanded to the tower's run of image tokens. */
function expanded(model: HookedModel, ids: number[], where: string): number[] {
  const wiring = model.graph.llava;
  return wiring ? expandImagePlaceholders(ids, wiring.imageTokenIndex, wiring.nImageTokens, where).ids : ids;
}

export function tokenizePair(model: HookedModel, p: TextPair, where: string, warnings: string[]): PromptPair {
  const clean = expanded(model, typeof p.clean === 'string' ? model.encode(p.clean) : p.clean, where);
  const corrupt = expanded(model, typeof p.corrupt === 'string' ? model.encode(p.corrupt) : p.corrupt, where);
  if (clean.length !== corrupt.length) {
    fail(`${where}: clean and corrupt prompts tokenize to different lengths (${clean.length} vs ${corrupt.length})`);
  }
  const pair: PromptPair = { clean, corrupt, answer: answerToken(model, p.clean, p.answer, warnings), wrong: answerToken(model, p.clean, p.wrong, warnings) };
  if (p.cleanImages) pair.cleanImages = p.cleanImages;
  if (p.corruptImages) pair.corruptImages = p.corruptImages;
  return pair;
}

/**
 * JSONL: {"clean","corrupt","answer","wrong"}, each either text or token ids, and for a VLM
 * "image" (both sides) or "clean_image" / "corrupt_image": image paths, relative to the file.
 */
export function readPairsFile(file: string): TextPair[] {
  return readJsonLines(file, 'prompt pairs', (v, where) => {
    const o = (v ?? {}) as Record<string, unknown>;
    for (const k of ['clean', 'corrupt', 'answer', 'wrong']) {
      const x = o[k];
      const single = k === 'answer' || k === 'wrong';
      const ok = typeof x === 'string' || (single ? Number.isInteger(x) : Array.isArray(x) && x.every(Number.isInteger));
      if (!ok) fail(`${where}: "${k}" must be ${single ? 'text or a token id' : 'text or a list of token ids'}`);
    }
    const pair = { clean: o.clean, corrupt: o.corrupt, answer: o.answer, wrong: o.wrong } as TextPair;
    for (const k of ['image', 'clean_image', 'corrupt_image']) {
      if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === '')) fail(`${where}: "${k}" must be an image file path`);
    }
    const at = (f: unknown) => (typeof f === 'string' ? path.resolve(path.dirname(file), f) : undefined);
    const clean = at(o.clean_image ?? o.image);
    const corrupt = at(o.corrupt_image ?? o.image);
    if (clean || corrupt) pair.imageFiles = { clean, corrupt };
    return pair;
  });
}

export function tokenizePairs(model: HookedModel, pairs: TextPair[], source: string): { pairs: PromptPair[]; warnings: string[] } {
  const warnings: string[] = [];
  const out = pairs.map((p, i) => tokenizePair(model, p, pairs.length > 1 ? `${source} pair ${i + 1}` : source, warnings));
  return { pairs: out, warnings: [...new Set(warnings)] };
}

/** All pairs must share one length for position-resolved grids. */
export function commonLength(pairs: PromptPair[]): number {
  const T = pairs[0].clean.length;
  const bad = pairs.findIndex((p) => p.clean.length !== T);
  if (bad >= 0) fail(`pair ${bad + 1} has ${pairs[bad].clean.length} tokens but pair 1 has ${T}; position-resolved patching needs one length`);
  return T;
}

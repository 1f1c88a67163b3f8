/**
 * Clean/corrupt prompt pairs: from CLI flags, JSONL files (text or token ids), or code.
 * Clean and corrupt must have the same token length; position-resolved grids also need every pair
 * to share one length.
 */
import { fail } from '../errors.js';
import { readJsonLines } from '../io/jsonl.js';
import type { HookedModel } from '../hooks/hooked-model.js';

export interface PromptPair {
  clean: number[];
  corrupt: number[];
  answer: number;
  wrong: number;
}

export interface TextPair {
  clean: string | number[];
  corrupt: string | number[];
  answer: string | number;
  wrong: string | number;
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

export function tokenizePair(model: HookedModel, p: TextPair, where: string, warnings: string[]): PromptPair {
  const clean = typeof p.clean === 'string' ? model.encode(p.clean) : p.clean;
  const corrupt = typeof p.corrupt === 'string' ? model.encode(p.corrupt) : p.corrupt;
  if (clean.length !== corrupt.length) {
    fail(`${where}: clean and corrupt prompts tokenize to different lengths (${clean.length} vs ${corrupt.length})`);
  }
  return { clean, corrupt, answer: answerToken(model, p.clean, p.answer, warnings), wrong: answerToken(model, p.clean, p.wrong, warnings) };
}

/** JSONL: {"clean","corrupt","answer","wrong"}, each either text or token ids. */
export function readPairsFile(file: string): TextPair[] {
  return readJsonLines(file, 'prompt pairs', (v, where) => {
    const o = (v ?? {}) as Record<string, unknown>;
    for (const k of ['clean', 'corrupt', 'answer', 'wrong']) {
      const x = o[k];
      const single = k === 'answer' || k === 'wrong';
      const ok = typeof x === 'string' || (single ? Number.isInteger(x) : Array.isArray(x) && x.every(Number.isInteger));
      if (!ok) fail(`${where}: "${k}" must be ${single ? 'text or a token id' : 'text or a list of token ids'}`);
    }
    return o as unknown as TextPair;
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

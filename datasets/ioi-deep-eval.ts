/**
 * Evaluation sets of the deeper IOI model, all outside its IOI training distribution: held-out
 * names (seen in other text, or never seen at all — then several BPE tokens), held-out templates
 * (the paper's and our own), and the held-out template whose most recent name is a distractor.
 * Names may be several tokens; the answer is the first token of " " + name, so prompts whose IO,
 * S and corrupting names share a first token are dropped.
 */
import type { Tokenizer } from '../src/tokenizers/tokenizer.js';
import { generateIoiPrompts, type IoiPrompt } from './ioi.js';
import { DEEP_HELD_OUT_BABA, DEEP_NAMES, DEEP_SPLIT } from './ioi-deep-corpus.js';
import { swapFirstMentions } from './ioi.js';

export type DeepEvalSet = 'heldOutNames' | 'heldOutTemplates' | 'heldOutBoth' | 'unseenNames' | 'distractorLatest';

/** Prompts whose IO, S and corrupting name start with different tokens. */
export function distinctFirstTokens(tok: Tokenizer, prompts: IoiPrompt[]): IoiPrompt[] {
  const first = (name: string) => tok.encode(' ' + name, { addSpecialTokens: false })[0];
  return prompts.filter((p) => new Set([first(p.io), first(p.s), first(p.corruptName)]).size === 3);
}

function set(tok: Tokenizer, names: string[], templates: string[], n: number, seed: number): IoiPrompt[] {
  // Over-generate, then keep n with distinct first tokens.
  const raw = generateIoiPrompts({ n: Math.min(4 * n, 5000), seed, names, templates, places: DEEP_SPLIT.train.places, objects: DEEP_SPLIT.train.objects, requireSameLength: false });
  return distinctFirstTokens(tok, raw).slice(0, n);
}

export function deepEvalSets(tok: Tokenizer, n = 200): Record<DeepEvalSet, IoiPrompt[]> {
  const distractorLatest = DEEP_HELD_OUT_BABA.filter((t) => /\[B\],[^.]*\[D\][^.]*to$/.test(t));
  return {
    heldOutNames: set(tok, DEEP_NAMES.otherTextOnly, DEEP_SPLIT.train.templates, n, 101),
    heldOutTemplates: set(tok, DEEP_NAMES.ioi, DEEP_SPLIT.heldOutTemplates, n, 102),
    heldOutBoth: set(tok, DEEP_NAMES.otherTextOnly, DEEP_SPLIT.heldOutTemplates, n, 103),
    unseenNames: set(tok, DEEP_NAMES.unseen, DEEP_SPLIT.heldOutTemplates, n, 104),
    distractorLatest: set(tok, DEEP_NAMES.otherTextOnly, [...distractorLatest, ...distractorLatest.map(swapFirstMentions)], n, 105),
  };
}

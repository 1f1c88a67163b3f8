/**
 * A task small story models really do: the pronoun after a named character. Each pair is a story
 * prefix (the first K tokens of an eval story of the stories corpus, so prompts vary but share a
 * length) followed by "There was a kid named Lily. One day," — answer " she", wrong " he" — and
 * its corrupted twin with a boy's name (and the reverse pairs). Token ids of the stories model
 * (stories260K's tokenizer wrote the corpus's `tokens`).
 */
import { fail } from '../src/errors.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import type { PromptPair } from '../src/patching/pairs.js';
import { readStories, storiesTrainCount } from './stories.js';

/** Ids that `suffix` adds after `context` (the tokenizer's own spacing, no special tokens). */
function idsAfter(model: HookedModel, context: string, suffix: string): number[] {
  const a = model.encode(context);
  const b = model.encode(context + suffix);
  if (!a.every((t, i) => b[i] === t)) fail(`pronoun task: '${suffix}' changes how '${context}' tokenizes`);
  return b.slice(a.length);
}

export function pronounPairs(model: HookedModel, n: number, prefixTokens = 12): PromptPair[] {
  if (!model.tokenizer) fail('pronoun task: the model needs a tokenizer');
  const ctx = 'Then';
  const she = idsAfter(model, 'One day,', ' she');
  const he = idsAfter(model, 'One day,', ' he');
  const girl = idsAfter(model, ctx, ' Lily');
  const boys = [idsAfter(model, ctx, ' Tim'), idsAfter(model, ctx, ' Timmy')];
  if ([she, he, girl, ...boys].some((x) => x.length !== 1)) fail('pronoun task: " she", " he", " Lily", " Tim" and " Timmy" must be single tokens for this tokenizer');
  const head = idsAfter(model, 'The end.', ' There was a kid named');
  const tail = idsAfter(model, 'Lily', '. One day,');
  const all = readStories();
  const evalStories = all.slice(storiesTrainCount(all.length)).filter((s) => s.tokens.length > prefixTokens);
  const pairs: PromptPair[] = [];
  for (let i = 0; pairs.length < n; i++) {
    if (i >= 4 * evalStories.length) fail(`pronoun task: only ${pairs.length} pairs from ${evalStories.length} eval stories; need ${n}`);
    const story = evalStories[Math.floor(i / 4) % evalStories.length];
    const boy = boys[i % 2];
    const prefix = story.tokens.slice(0, prefixTokens);
    const withName = (name: number[]) => [...prefix, ...head, ...name, ...tail];
    // Even i: girl clean / boy corrupt; odd: the reverse.
    pairs.push(i % 4 < 2 ? { clean: withName(girl), corrupt: withName(boy), answer: she[0], wrong: he[0] } : { clean: withName(boy), corrupt: withName(girl), answer: he[0], wrong: she[0] });
  }
  return pairs;
}

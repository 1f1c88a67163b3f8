/**
 * The corpus of the deeper IOI model (datasets/ioi-gpt2-deep): built so that IOI cannot be solved
 * by position alone.
 * - Templates: the IOI paper's, plus our own with longer gaps between the mentions and with a
 *   distractor name [D] after S2 (there the most recent name is neither IO nor S), each in both
 *   name orders (BABA and ABBA). A quarter of each family is held out of training.
 * - Names in three groups: IOI training names; names held out of IOI but seen in other text (their
 *   embeddings are trained); names in no generated document (a few, like Sarah, occur in the
 *   stories text), so most are new token sequences for the BPE tokenizer.
 * - Plain language: sentences of the stories corpus (train split), filler sentences with names,
 *   and lists of names said twice (copying from context, which name movers reuse).
 */
import { fail } from '../src/errors.js';
import { mulberry32 } from '../src/util/random.js';
import { IOI_OBJECTS, IOI_PLACES, IOI_TEMPLATES_BABA, fillTemplate, holdOut, swapFirstMentions, type IoiVocabulary } from './ioi.js';
import { FILLER_TEMPLATES, MODEL_NAMES } from './ioi-corpus.js';
import { readStories, storiesTrainCount } from './stories.js';

/** Our own BABA templates (ABBA twins by swapping the first clause's names). */
export const DEEP_TEMPLATES_BABA: string[] = [
  // A distractor after S2: the most recent name is not S.
  '[B] and [A] were at the [PLACE]. [B], who had talked to [D] before, gave a [OBJECT] to',
  'Then, [B] and [A] went to the [PLACE]. [B] said hello to [D] and then gave a [OBJECT] to',
  'While [B] and [A] were at the [PLACE], [B], still thinking of [D], gave a [OBJECT] to',
  'Later, [B] and [A] met at the [PLACE]. [B] waved at [D], then handed a [OBJECT] to',
  // A distractor between the clauses.
  'When [B] and [A] arrived at the [PLACE], [D] had already left. [B] gave a [OBJECT] to',
  '[B] and [A] sat in the [PLACE]. [D] waved from far away. [B] gave a [OBJECT] to',
  'Then, [B] and [A] had dinner at the [PLACE]. After [D] called, [B] passed the [OBJECT] to',
  // Longer gaps between the mentions.
  '[B] and [A] went to the [PLACE]. It was a sunny day and the [PLACE] was busy. [B] gave a [OBJECT] to',
  'The [OBJECT] belonged to [B] and [A]. At the [PLACE], [B] gave the [OBJECT] to',
  'Later, [B] and [A] walked to the [PLACE]. Near the door, [B] handed a [OBJECT] to',
  'One morning, [B] and [A] went to the [PLACE] to buy a [OBJECT]. On the way home, [B] gave it to',
  'After a long day at the [PLACE], [B] and [A] were tired. Still, [B] brought a [OBJECT] to',
];

/** Held-out templates of our own (BABA form): one of each kind. */
export const DEEP_HELD_OUT_BABA: string[] = [
  'While [B] and [A] were at the [PLACE], [B], still thinking of [D], gave a [OBJECT] to',
  '[B] and [A] sat in the [PLACE]. [D] waved from far away. [B] gave a [OBJECT] to',
  'After a long day at the [PLACE], [B] and [A] were tired. Still, [B] brought a [OBJECT] to',
];

const PAPER_SPLIT = holdOut(IOI_TEMPLATES_BABA, 0.25, 8);
const both = (ts: string[]) => [...ts, ...ts.map(swapFirstMentions)];

/** Names: 70 % IOI training, 15 % held out of IOI (seen in other text), 15 % never seen. */
const NAMES_1 = holdOut(MODEL_NAMES, 0.3, 11);
const NAMES_2 = holdOut(NAMES_1.test, 0.5, 12);
export const DEEP_NAMES = { ioi: NAMES_1.train, otherTextOnly: NAMES_2.train, unseen: NAMES_2.test };

export const DEEP_SPLIT: { train: IoiVocabulary; heldOutTemplates: string[]; paperHeldOut: string[]; ownHeldOut: string[] } = {
  train: {
    names: DEEP_NAMES.ioi,
    templates: both([...PAPER_SPLIT.train, ...DEEP_TEMPLATES_BABA.filter((t) => !DEEP_HELD_OUT_BABA.includes(t))]),
    places: IOI_PLACES,
    objects: IOI_OBJECTS,
  },
  heldOutTemplates: both([...PAPER_SPLIT.test, ...DEEP_HELD_OUT_BABA]),
  paperHeldOut: both(PAPER_SPLIT.test),
  ownHeldOut: both(DEEP_HELD_OUT_BABA),
};

/**
 * A template grammar for more variety than fixed templates (training only): an opening clause with
 * the pair, 0–2 middle sentences (some with a distractor [D] in a role that is not a recipient),
 * and a closing clause in which S2 acts on the IO, with many verbs. Never yields a held-out template.
 */
const OPENERS = [
  'Then, [B] and [A] went to the [PLACE].',
  'Yesterday, [B] and [A] met at the [PLACE].',
  'After school, [B] and [A] walked to the [PLACE].',
  'One day, [B] and [A] played at the [PLACE].',
  'In the morning, [B] and [A] visited the [PLACE].',
  'Last week, [B] and [A] had lunch at the [PLACE].',
  'When [B] and [A] got to the [PLACE], it was late.',
  'Friends [B] and [A] found a [OBJECT] at the [PLACE].',
];
const MIDDLES = ['It was a sunny day.', 'The [PLACE] was very busy.', 'Everyone was happy.', '[D] had already left.', '[D] waved from the street.', 'They talked for a long time.', 'Nobody else was there.'];
const CLOSERS_SUBJECT = ['[B]', 'Later, [B]', 'Then [B]', 'After a while, [B]', '[B], who had met [D] before,', 'Before leaving, [B]', '[B] said goodbye to [D] and'];
const CLOSERS_VERB = ['gave a [OBJECT] to', 'handed the [OBJECT] to', 'passed a [OBJECT] to', 'threw the [OBJECT] to', 'sent a [OBJECT] to', 'offered a [OBJECT] to', 'sold the [OBJECT] to', 'showed the [OBJECT] to', 'talked to', 'waved to', 'wrote a letter to', 'gave it to'];

export function composeTemplate(rand: () => number): string {
  const heldOut = new Set([...DEEP_SPLIT.heldOutTemplates]);
  for (;;) {
    const middles = Array.from({ length: Math.floor(rand() * 3) }, () => pick(MIDDLES, rand)).filter((m, i, xs) => xs.indexOf(m) === i);
    let t = [pick(OPENERS, rand), ...middles, `${pick(CLOSERS_SUBJECT, rand)} ${pick(CLOSERS_VERB, rand)}`].join(' ');
    // At most one distractor sentence/role: keep the first [D].
    const first = t.indexOf('[D]');
    if (first >= 0) t = t.slice(0, first + 3) + t.slice(first + 3).replaceAll(/ ?\[D\][^.]*\./g, '').replaceAll('[D]', 'someone');
    if (rand() < 0.5) t = swapFirstMentions(t);
    if (!heldOut.has(t)) return t;
  }
}

function pick<T>(xs: readonly T[], rand: () => number): T {
  return xs[Math.floor(rand() * xs.length)];
}

/** Distinct names from `pool`. */
function distinct(pool: readonly string[], k: number, rand: () => number): string[] {
  const out: string[] = [];
  while (out.length < k) {
    const n = pick(pool, rand);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

/** Sentences of the train stories (the stories corpus's fixed split), loaded once. */
let storySentences: string[][] | null = null;
function stories(): string[][] {
  if (!storySentences) {
    const all = readStories();
    storySentences = all.slice(0, storiesTrainCount(all.length)).map((s) => s.text.replace(/\s+/g, ' ').match(/[^.!?]+[.!?]+["']?/g)?.map((x) => x.trim()) ?? [s.text]);
    if (storySentences.length === 0) fail('ioi-deep corpus: the stories corpus is empty');
  }
  return storySentences;
}

export type DocumentKind = 'ioi' | 'story' | 'filler' | 'names';

/** Document mix of the training stream (fractions of documents; the rest are name lists). */
export const DEEP_MIX: Record<DocumentKind, number> = { ioi: 0.5, story: 0.25, filler: 0.15, names: 0.1 };

/** One training document (text only; the IOI sentence includes its answer). */
export function sampleDeepDocument(rand: () => number, mix: Record<DocumentKind, number> = DEEP_MIX, compose = 0): { kind: DocumentKind; text: string } {
  const u = rand();
  const seen = [...DEEP_NAMES.ioi, ...DEEP_NAMES.otherTextOnly];
  if (u < mix.ioi) {
    const { train } = DEEP_SPLIT;
    const [io, s, d] = distinct(train.names, 3, rand);
    // With probability `compose` a template from the grammar (no draw at all when compose = 0).
    const template = compose > 0 && rand() < compose ? composeTemplate(rand) : pick(train.templates, rand);
    const { clean } = fillTemplate(template, { io, s, c: s, d, place: pick(train.places, rand), object: pick(train.objects, rand) });
    return { kind: 'ioi', text: `${clean} ${io}.` };
  }
  if (u < mix.ioi + mix.story) {
    // One to three consecutive sentences of a story.
    const st = pick(stories(), rand);
    const a = Math.floor(rand() * st.length);
    return { kind: 'story', text: st.slice(a, a + 1 + Math.floor(rand() * 3)).join(' ') };
  }
  if (u < mix.ioi + mix.story + mix.filler) {
    const [n, m] = distinct(seen, 2, rand);
    const text = pick(FILLER_TEMPLATES, rand).replace('[N]', n).replace('[M]', m).replace('[PLACE]', pick(IOI_PLACES, rand)).replace('[OBJECT]', pick(IOI_OBJECTS, rand));
    return { kind: 'filler', text };
  }
  const names = distinct(seen, 2 + Math.floor(rand() * 3), rand);
  return { kind: 'names', text: `${names.join(' and ')} were there. ${names.join(' and ')} were there.` };
}

/** The text the BPE tokenizer is trained on: a fixed sample of the training stream (never the unseen names). */
export function bpeTrainingTexts(n = 30000, seed = 5): string[] {
  const rand = mulberry32(seed);
  const out = Array.from({ length: n }, () => sampleDeepDocument(rand).text);
  // Every seen name, place and object at least a few times, so each can become one token.
  for (const w of [...DEEP_NAMES.ioi, ...DEEP_NAMES.otherTextOnly, ...IOI_PLACES, ...IOI_OBJECTS]) for (let i = 0; i < 4; i++) out.push(`Then ${w} was there.`);
  return out;
}

/**
 * Batch `step` of the training stream: `batch` rows of T ids, each BOS + documents separated by
 * BOS, cut at T. Depends only on (seed, step), so resuming is exact.
 */
export function deepTrainingBatch(encode: (text: string) => number[], bos: number, seed: number, step: number, batch: number, T: number, mix: Record<DocumentKind, number> = DEEP_MIX, compose = 0): Int32Array {
  const rand = mulberry32((seed * 1_000_003 + step) >>> 0);
  const ids = new Int32Array(batch * T);
  for (let b = 0; b < batch; b++) {
    const row: number[] = [];
    while (row.length < T) row.push(bos, ...encode(sampleDeepDocument(rand, mix, compose).text));
    ids.set(row.slice(0, T), b * T);
  }
  return ids;
}

/**
 * Whether a tokenizer is the deep IOI model's: its held-out names are single tokens but most
 * never-seen names are not (a word-level tokenizer over every name knows both).
 */
export function isDeepIoiTokenizer(tok: { encode(text: string, opts?: { addSpecialTokens?: boolean }): number[] }): boolean {
  const single = (n: string) => tok.encode(' ' + n, { addSpecialTokens: false }).length === 1;
  return DEEP_NAMES.otherTextOnly.every(single) && DEEP_NAMES.unseen.filter(single).length < DEEP_NAMES.unseen.length / 2;
}

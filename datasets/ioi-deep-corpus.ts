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

/** One distractor name at most: sentences with a later [D] go, later [D] roles become "someone". */
function oneDistractor(t: string): string {
  const first = t.indexOf('[D]');
  return first < 0 ? t : t.slice(0, first + 3) + t.slice(first + 3).replaceAll(/ ?\[D\][^.]*\./g, '').replaceAll('[D]', 'someone');
}

/** 0–2 distinct middle sentences. */
function someMiddles(pool: readonly string[], rand: () => number): string[] {
  return Array.from({ length: Math.floor(rand() * 3) }, () => pick(pool, rand)).filter((m, i, xs) => xs.indexOf(m) === i);
}

/** Never a held-out template (checked per draw: the grammars cannot rule them out by construction). */
const HELD_OUT_TEMPLATES = new Set(DEEP_SPLIT.heldOutTemplates);

/** A grammar's template: `build` drawn until, with one distractor at most and a random name order, it is not held out. */
function drawTemplate(build: () => string, rand: () => number): string {
  for (;;) {
    let t = oneDistractor(build());
    if (rand() < 0.5) t = swapFirstMentions(t);
    if (!HELD_OUT_TEMPLATES.has(t)) return t;
  }
}

export function composeTemplate(rand: () => number): string {
  return drawTemplate(() => {
    const middles = someMiddles(MIDDLES, rand);
    return [pick(OPENERS, rand), ...middles, `${pick(CLOSERS_SUBJECT, rand)} ${pick(CLOSERS_VERB, rand)}`].join(' ');
  }, rand);
}

/**
 * The wide grammar of the second training phase: S2 in many roles (subject after many openings,
 * object of "asked"/"told", possessor, agent of a passive), the pair sentence-initial or not, the
 * distractor [D] before or after S2 or in a middle sentence, many verbs. Only "the pair's member
 * that is not repeated" answers every one of them, so duplicate detection pays where "the subject
 * of the last clause" or "the latest name" does not. The held-out templates' own phrases ("sat in",
 * "were tired", "Still,", "brought", "thinking of", "waved from far away") never occur here.
 */
const WIDE_OPENERS = [
  'Then, [B] and [A] went to the [PLACE].',
  '[B] and [A] went to the [PLACE].',
  '[B] and [A] played in the [PLACE].',
  '[B] and [A] were at the [PLACE].',
  '[B] and [A] stood near the [PLACE].',
  '[B] and [A] had a long talk at the [PLACE].',
  'On Monday, [B] and [A] went to the [PLACE].',
  'After lunch, [B] and [A] were at the [PLACE].',
  'When [B] and [A] got to the [PLACE], it was raining.',
  'While [B] and [A] waited at the [PLACE], the sun came out.',
  'One day, [B] and [A] found a [OBJECT] near the [PLACE].',
  'At the [PLACE], [B] and [A] saw a big dog.',
  'Friends [B] and [A] spent the day at the [PLACE].',
  'Last night, [B] and [A] ate dinner at the [PLACE].',
  'The [PLACE] was full when [B] and [A] came in.',
];
const WIDE_MIDDLES = ['It was a warm day.', 'The [PLACE] was quiet.', 'They laughed a lot.', 'A bird sang in a tree.', 'They were very hungry.', 'It started to rain.', '[D] was there too.', '[D] came by later.', 'Soon [D] walked in.', '[D] said hello to them.'];
const WIDE_SUBJECTS = ['[B]', 'Then, [B]', 'So [B]', 'At last, [B]', 'In the end, [B]', 'Later that day, [B]', 'Happily, [B]', 'After a while, [B]', 'Before going home, [B]', '[B], who knew [D],', '[B], after seeing [D],', '[B], smiling at [D],', '[B], with [D] watching,', '[B] looked at [D] and', '[B] thanked [D] and', '[D] smiled, and [B]', '[D] left, so [B]'];
const WIDE_VERBS = ['gave a [OBJECT] to', 'handed the [OBJECT] to', 'passed the [OBJECT] to', 'tossed a [OBJECT] to', 'sent a [OBJECT] to', 'showed the [OBJECT] to', 'lent a [OBJECT] to', 'read a book to', 'sang a song to', 'said sorry to', 'said goodbye to', 'waved to', 'smiled at', 'gave the [OBJECT] back to', 'carried the [OBJECT] over to', 'wanted to give a [OBJECT] to', 'decided to hand the [OBJECT] to'];
/** Closing clauses in which S2 is not the sentence's subject. */
const WIDE_OTHER_ROLES = [
  'The teacher asked [B] to give a [OBJECT] to',
  'Mom told [B] to pass the [OBJECT] to',
  "It was [B]'s turn to give a [OBJECT] to",
  'The [OBJECT] was given by [B] to',
  'Everyone watched [B] hand a [OBJECT] to',
  'A man helped [B] give a [OBJECT] to',
  '[D] asked [B] to throw the [OBJECT] to',
];

/**
 * S2 in a middle sentence and a closing clause without it (no name, or the distractor as its
 * subject): "suppress the names of the last clause" fails here, only "suppress the repeated name"
 * answers.
 */
const MOVED_S2 = ['[B] had a [OBJECT].', '[B] was holding a [OBJECT].', '[B] found a [OBJECT] on the ground.', '[B] bought a [OBJECT].', '[B] got a [OBJECT] as a gift.', '[B] made a [OBJECT].'];
const MOVED_CLOSERS = ['Later, the [OBJECT] was given to', 'After a while, it was handed to', '[D] watched as the [OBJECT] went to', 'In the end, the [OBJECT] was passed to', '[D] said the [OBJECT] should go to', 'Soon the [OBJECT] was sent to', 'Then [D] saw the [OBJECT] go to'];

/**
 * Insertions between S2 and its verb, put together from parts (2–10 tokens, with or without [D]),
 * and adjectives before the object: S2's distance from the end varies, so attending to "the
 * token k back" or "the name just before the verb" stops paying.
 */
const INSERT_ADVERBS = ['', 'quietly ', 'happily ', 'again ', 'now ', 'also ', 'slowly ', 'suddenly ', 'really '];
const INSERT_VERBS = ['smiling', 'looking', 'waving', 'talking', 'walking', 'calling', 'laughing', 'singing', 'waiting'];
const INSERT_PREPS = ['at', 'to', 'with', 'near', 'for', 'about'];
const INSERT_OBJECTS = ['[D]', '[D]', 'the dog', 'the [PLACE]', 'a friend', 'the sky', 'the old man', 'the teacher'];
const OBJECT_ADJECTIVES = ['big ', 'small ', 'red ', 'new ', 'nice ', 'little '];

function insertion(rand: () => number): string {
  const part = () => `${pick(INSERT_ADVERBS, rand)}${pick(INSERT_VERBS, rand)} ${pick(INSERT_PREPS, rand)} ${pick(INSERT_OBJECTS, rand)}`;
  return rand() < 0.3 ? `${part()} and ${part()}` : part();
}

/** A template of the wide grammar; with probability `insert` an insertion after a bare S2 and an adjective before the object (no draw when 0). */
export function composeWideTemplate(rand: () => number, insert = 0, moved = 0): string {
  return drawTemplate(() => {
    const middles = someMiddles(WIDE_MIDDLES, rand);
    // S2 in a middle sentence, then a closing clause without it.
    if (moved > 0 && rand() < moved) return [pick(WIDE_OPENERS, rand), pick(MOVED_S2, rand), ...middles, pick(MOVED_CLOSERS, rand)].join(' ');
    let closer = rand() < 0.25 ? pick(WIDE_OTHER_ROLES, rand) : `${pick(WIDE_SUBJECTS, rand)} ${pick(WIDE_VERBS, rand)}`;
    if (insert > 0 && rand() < insert) {
      // After S2 when it ends the subject (", who knew [D]," and the like already have one).
      closer = closer.replace(/\[B\] (?=[a-z])/, () => `[B], ${insertion(rand)}, `);
      closer = closer.replace('[OBJECT]', () => (rand() < 0.5 ? pick(OBJECT_ADJECTIVES, rand) : '') + '[OBJECT]');
    }
    return [pick(WIDE_OPENERS, rand), ...middles, closer].join(' ');
  }, rand);
}

function pick<T>(xs: readonly T[], rand: () => number): T {
  return xs[Math.floor(rand() * xs.length)];
}

/** `k` distinct values of `draw`. */
function distinctDraws(k: number, draw: () => string): string[] {
  const out: string[] = [];
  while (out.length < k) {
    const n = draw();
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

/** Distinct names from `pool`. */
function distinct(pool: readonly string[], k: number, rand: () => number): string[] {
  return distinctDraws(k, () => pick(pool, rand));
}

/** Distinct seen names, each from the held-out group with probability `share`, else from the IOI names. */
function distinctMixed(k: number, share: number, rand: () => number): string[] {
  return distinctDraws(k, () => pick(rand() < share ? DEEP_NAMES.otherTextOnly : DEEP_NAMES.ioi, rand));
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

/**
 * Made-up names for IOI sentences (training only): two syllables from fixed parts, so a name is
 * usually several BPE tokens and no two documents need share one. A mechanism that must handle
 * names it meets once cannot keep per-name features; it has to match and copy tokens.
 */
const PSEUDO_ONSETS = ['B', 'D', 'F', 'G', 'H', 'J', 'K', 'L', 'M', 'N', 'P', 'R', 'S', 'T', 'V', 'W', 'Z', 'Br', 'Ch', 'Cl', 'Dr', 'Fl', 'Gr', 'Kr', 'Pr', 'Sh', 'St', 'Th', 'Tr'];
const PSEUDO_VOWELS = ['a', 'e', 'i', 'o', 'u', 'ai', 'ea', 'oo', 'y'];
const PSEUDO_CODAS = ['', 'n', 'r', 'l', 's', 'm', 'x', 'k', 'th', 'nd', 'rt', 'ss'];
const realNames = new Set(MODEL_NAMES);

/** `k` made-up names with different first syllables (so they rarely share a first token), none a real name of any group. */
export function pseudoNames(k: number, rand: () => number): string[] {
  const out: string[] = [];
  while (out.length < k) {
    const first = pick(PSEUDO_ONSETS, rand) + pick(PSEUDO_VOWELS, rand);
    const name = first + pick(PSEUDO_ONSETS, rand).toLowerCase() + pick(PSEUDO_VOWELS, rand) + pick(PSEUDO_CODAS, rand);
    if (!realNames.has(name) && !out.some((n) => n.startsWith(first))) out.push(name);
  }
  return out;
}

/**
 * What a training stream is drawn from: the document mix, and which fractions of IOI sentences
 * come from the first grammar (`compose`), the wide grammar (`wide`) and made-up names (`pseudo`).
 * A fraction of 0 draws no random number, so streams of before an option existed stay the same.
 */
export interface CorpusOptions {
  mix?: Record<DocumentKind, number>;
  compose?: number;
  wide?: number;
  pseudo?: number;
  /** Fraction of wide-grammar templates with an insertion after S2 (composeWideTemplate). */
  insert?: number;
  /** Fraction of the names in filler and name lists drawn from the held-out group (default: uniform over seen names). */
  heldOutShare?: number;
  /** Fraction of story documents said twice (induction). */
  repeat?: number;
  /** Fraction of wide-grammar templates with S2 in a middle sentence (composeWideTemplate). */
  moved?: number;
}

/** One training document (text only; the IOI sentence includes its answer). */
export function sampleDeepDocument(rand: () => number, { mix = DEEP_MIX, compose = 0, wide = 0, pseudo = 0, insert = 0, heldOutShare = 0, repeat = 0, moved = 0 }: CorpusOptions = {}): { kind: DocumentKind; text: string } {
  const u = rand();
  const seen = [...DEEP_NAMES.ioi, ...DEEP_NAMES.otherTextOnly];
  if (u < mix.ioi) {
    const { train } = DEEP_SPLIT;
    const [io, s, d] = pseudo > 0 && rand() < pseudo ? pseudoNames(3, rand) : distinct(train.names, 3, rand);
    // With probability `wide` a template from the wide grammar, else with probability `compose` one
    // from the first grammar, else a fixed one.
    const template = wide > 0 && rand() < wide ? composeWideTemplate(rand, insert, moved) : compose > 0 && rand() < compose ? composeTemplate(rand) : pick(train.templates, rand);
    const { clean } = fillTemplate(template, { io, s, c: s, d, place: pick(train.places, rand), object: pick(train.objects, rand) });
    return { kind: 'ioi', text: `${clean} ${io}.` };
  }
  if (u < mix.ioi + mix.story) {
    // One to three consecutive sentences of a story.
    const st = pick(stories(), rand);
    const a = Math.floor(rand() * st.length);
    const text = st.slice(a, a + 1 + Math.floor(rand() * 3)).join(' ');
    // Said twice with probability `repeat`: copying a repeated text is what induction heads are for.
    return { kind: 'story', text: repeat > 0 && rand() < repeat ? `${text} ${text}` : text };
  }
  // Names of filler and name lists: uniform over the seen names, or with probability
  // `heldOutShare` each from the held-out group (their embeddings then learn to tell them apart).
  const otherNames = (k: number) => (heldOutShare > 0 ? distinctMixed(k, heldOutShare, rand) : distinct(seen, k, rand));
  if (u < mix.ioi + mix.story + mix.filler) {
    const [n, m] = otherNames(2);
    const text = pick(FILLER_TEMPLATES, rand).replace('[N]', n).replace('[M]', m).replace('[PLACE]', pick(IOI_PLACES, rand)).replace('[OBJECT]', pick(IOI_OBJECTS, rand));
    return { kind: 'filler', text };
  }
  const names = otherNames(2 + Math.floor(rand() * 3));
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
export function deepTrainingBatch(encode: (text: string) => number[], bos: number, seed: number, step: number, batch: number, T: number, corpus: CorpusOptions = {}): Int32Array {
  const rand = mulberry32((seed * 1_000_003 + step) >>> 0);
  const ids = new Int32Array(batch * T);
  for (let b = 0; b < batch; b++) {
    const row: number[] = [];
    while (row.length < T) row.push(bos, ...encode(sampleDeepDocument(rand, corpus).text));
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

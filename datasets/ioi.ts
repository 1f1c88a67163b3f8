/**
 * Indirect Object Identification (IOI) prompts, after Wang et al. 2022 ("Interpretability in the
 * Wild"): "Then, Mary and John went to the store. John gave a drink to" → " Mary".
 *
 * Template placeholders: [A] = the indirect object (IO, the answer), [B] = the subject (S, named
 * twice: S1 in the first clause, S2 in the second), [PLACE], [OBJECT]. Templates stop right before
 * the answer, so `answer` = ' ' + IO is the next token. BABA templates name S first ("[B] and [A]"),
 * ABBA templates name IO first ("[A] and [B]").
 *
 * `corrupt` is the standard "ABC" corruption: the clean prompt with S2 replaced by a third name C.
 *
 * Nothing here is tokenizer-family specific: single-token checks compare encodings with and without
 * the word appended, through the `Tokenizer` interface only.
 */
import { fail } from '../src/errors.js';
import type { Tokenizer } from '../src/tokenizers/tokenizer.js';
import { mulberry32 } from '../src/util/random.js';

export { mulberry32 };

export type IoiKind = 'BABA' | 'ABBA';

export interface IoiPrompt {
  /** The template this prompt was filled from (with [A]/[B]/[PLACE]/[OBJECT] placeholders). */
  template: string;
  kind: IoiKind;
  clean: string;
  /** `clean` with S2 replaced by `corruptName`. */
  corrupt: string;
  /** ' ' + io */
  answer: string;
  /** ' ' + s */
  wrong: string;
  io: string;
  s: string;
  corruptName: string;
  /** The distractor name of a template with [D]. */
  distractor?: string;
  place: string;
  object: string;
}

export interface IoiVocabulary {
  names: string[];
  templates: string[];
  places: string[];
  objects: string[];
}

export interface IoiOptions {
  n: number;
  seed: number;
  /** Which templates to use (default 'mixed': both kinds). With `templates`, filters them by kind. */
  kind?: IoiKind | 'mixed';
  /** 'classic' (default): the Wang et al. lists; 'simple': TinyStories-style words. Overridden by the lists below. */
  preset?: 'classic' | 'simple';
  /** Templates with placeholders; each template's kind is read from its [A]/[B] order. */
  templates?: string[];
  names?: string[];
  places?: string[];
  objects?: string[];
  /** Keep only single-token names and prompts whose clean/corrupt tokenize to the same length. */
  tokenizer?: Tokenizer;
  /** With a tokenizer: every returned prompt has the same token length (default true). */
  requireSameLength?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Word lists

/** Names from the IOI paper's list (first names common in US English; single GPT-2 tokens). */
export const IOI_NAMES: string[] = [
  'Michael', 'Christopher', 'Jessica', 'Matthew', 'Ashley', 'Jennifer', 'Joshua', 'Amanda',
  'Daniel', 'David', 'James', 'Robert', 'John', 'Joseph', 'Andrew', 'Ryan',
  'Brandon', 'Jason', 'Justin', 'Sarah', 'William', 'Jonathan', 'Stephanie', 'Brian',
  'Nicole', 'Nicholas', 'Anthony', 'Heather', 'Eric', 'Elizabeth', 'Adam', 'Megan',
  'Melissa', 'Kevin', 'Steven', 'Thomas', 'Timothy', 'Christina', 'Kyle', 'Rachel',
  'Laura', 'Lauren', 'Amber', 'Richard', 'Emily', 'Aaron', 'Charles', 'Rebecca',
  'Jacob', 'Patrick', 'Sean', 'Paul', 'Mary', 'Lisa', 'Mark', 'Samuel',
];

export const IOI_PLACES: string[] = [
  'store', 'garden', 'restaurant', 'school', 'hospital', 'office', 'house', 'station',
  'park', 'library', 'market', 'beach', 'museum', 'airport', 'gym', 'bank',
];

/** Objects start with a consonant so "a [OBJECT]" reads correctly. */
export const IOI_OBJECTS: string[] = [
  'ring', 'kiss', 'bone', 'basketball', 'computer', 'necklace', 'drink', 'snack',
  'book', 'pen', 'flower', 'letter', 'gift', 'key', 'phone', 'bottle',
];

/** Swap the first [B] and the first [A] (both in the first clause): BABA ↔ ABBA. */
export function swapFirstMentions(template: string): string {
  const a = template.indexOf('[A]');
  const b = template.indexOf('[B]');
  if (a < 0 || b < 0) fail(`ioi: template needs [A] and [B]: ${JSON.stringify(template)}`);
  const [lo, hi] = a < b ? [a, b] : [b, a];
  const first = template.slice(lo, lo + 3);
  const second = template.slice(hi, hi + 3);
  return template.slice(0, lo) + second + template.slice(lo + 3, hi) + first + template.slice(hi + 3);
}

/** The IOI paper's BABA templates, ending right before the IO. */
export const IOI_TEMPLATES_BABA: string[] = [
  'Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to',
  'Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to',
  'Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to',
  'Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to',
  'Then, [B] and [A] had a long argument, and afterwards [B] said to',
  'After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to',
  'When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to',
  'When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to',
  'While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to',
  'While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to',
  'After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to',
  'Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to',
  'Then, [B] and [A] had a long argument. Afterwards [B] said to',
  'The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to',
  'Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to',
  'Then, [B] and [A] were waiting at the [PLACE]. [B] handed a [OBJECT] to',
];

/** The same templates with the first clause's names swapped ("[A] and [B]"). */
export const IOI_TEMPLATES_ABBA: string[] = IOI_TEMPLATES_BABA.map(swapFirstMentions);

/** TinyStories-style names (stories260K knows only a few of them as single tokens). */
export const IOI_SIMPLE_NAMES: string[] = [
  'Lily', 'Tim', 'Timmy', 'Ben', 'Sue', 'Tom', 'Anna', 'Max', 'Sam', 'Mia',
  'Lucy', 'Jack', 'Bob', 'Sara', 'Amy', 'Zoe', 'Kim', 'Jane', 'Joe', 'Mary',
];

export const IOI_SIMPLE_PLACES: string[] = [
  'park', 'store', 'house', 'school', 'garden', 'beach', 'zoo', 'farm', 'forest', 'room', 'lake', 'pond', 'yard', 'pool', 'shop',
];

export const IOI_SIMPLE_OBJECTS: string[] = [
  'ball', 'toy', 'cake', 'book', 'hat', 'flower', 'cookie', 'doll', 'kite', 'box', 'car', 'cup', 'gift', 'balloon', 'bear', 'pie',
];

/** Short, simple-word templates in the style of TinyStories (for small-vocabulary story models). */
export const IOI_SIMPLE_TEMPLATES_BABA: string[] = [
  'One day, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to',
  'Once upon a time, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to',
  'One day, [B] and [A] played at the [PLACE]. [B] gave a [OBJECT] to',
  'One day, [B] and [A] were at the [PLACE]. [B] gave the [OBJECT] to',
  'One day, [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to',
  'One day, [B] and [A] saw a [OBJECT] at the [PLACE]. [B] gave the [OBJECT] to',
  'One day, [B] and [A] had fun at the [PLACE]. Then [B] gave a [OBJECT] to',
  'After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to',
  'Once upon a time, [B] and [A] were happy friends. [B] gave a [OBJECT] to',
  'One day, [B] and [A] had a big fight. Then [B] said sorry to',
];

export const IOI_SIMPLE_TEMPLATES_ABBA: string[] = IOI_SIMPLE_TEMPLATES_BABA.map(swapFirstMentions);

export const IOI_CLASSIC: IoiVocabulary = {
  names: IOI_NAMES,
  templates: [...IOI_TEMPLATES_BABA, ...IOI_TEMPLATES_ABBA],
  places: IOI_PLACES,
  objects: IOI_OBJECTS,
};

export const IOI_SIMPLE: IoiVocabulary = {
  names: IOI_SIMPLE_NAMES,
  templates: [...IOI_SIMPLE_TEMPLATES_BABA, ...IOI_SIMPLE_TEMPLATES_ABBA],
  places: IOI_SIMPLE_PLACES,
  objects: IOI_SIMPLE_OBJECTS,
};

// ---------------------------------------------------------------------------------------------
// Randomness


function checkSeed(seed: number): number {
  if (!Number.isInteger(seed)) fail(`ioi: seed must be an integer, got ${seed}`);
  return seed;
}

function shuffleInPlace<T>(xs: T[], rand: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

/**
 * A seeded split of `list` into train and held-out test items (both keep the list's order).
 * The test part has round(fraction · length) items.
 */
export function holdOut<T>(list: T[], fraction: number, seed: number): { train: T[]; test: T[] } {
  if (!(fraction >= 0 && fraction <= 1)) fail(`ioi: hold-out fraction must be in [0, 1], got ${fraction}`);
  const idx = shuffleInPlace(list.map((_, i) => i), mulberry32(checkSeed(seed)));
  const testIdx = new Set(idx.slice(0, Math.round(fraction * list.length)));
  return { train: list.filter((_, i) => !testIdx.has(i)), test: list.filter((_, i) => testIdx.has(i)) };
}

/**
 * Disjoint train/test vocabularies for training on IOI and evaluating on held-out names and
 * templates. Templates are split by their BABA form; its ABBA twin always lands in the same split.
 * Pass either half's fields straight into `generateIoiPrompts({ ...split.test, n, seed })`.
 */
export function splitHeldOut(opts: {
  seed: number;
  preset?: 'classic' | 'simple';
  nameFraction?: number;
  templateFraction?: number;
  placeFraction?: number;
  objectFraction?: number;
}): { train: IoiVocabulary; test: IoiVocabulary } {
  const simple = opts.preset === 'simple';
  const baba = simple ? IOI_SIMPLE_TEMPLATES_BABA : IOI_TEMPLATES_BABA;
  const base = simple ? IOI_SIMPLE : IOI_CLASSIC;
  const seed = checkSeed(opts.seed);
  const names = holdOut(base.names, opts.nameFraction ?? 0.25, seed);
  const templates = holdOut(baba, opts.templateFraction ?? 0.25, seed + 1);
  const places = holdOut(base.places, opts.placeFraction ?? 0, seed + 2);
  const objects = holdOut(base.objects, opts.objectFraction ?? 0, seed + 3);
  const both = (ts: string[]) => [...ts, ...ts.map(swapFirstMentions)];
  const side = (k: 'train' | 'test'): IoiVocabulary => ({
    names: names[k],
    templates: both(templates[k]),
    // An empty held-out place/object list means "not held out": the test side reuses all of them.
    places: places[k].length > 0 ? places[k] : base.places,
    objects: objects[k].length > 0 ? objects[k] : base.objects,
  });
  return { train: side('train'), test: side('test') };
}

// ---------------------------------------------------------------------------------------------
// Templates

const PLACEHOLDER = /\[([A-Z]+)\]/g;
const KNOWN = new Set(['A', 'B', 'D', 'PLACE', 'OBJECT']);

interface ParsedTemplate {
  template: string;
  kind: IoiKind;
  usesPlace: boolean;
  usesObject: boolean;
  /** A distractor name [D]: a fourth person, neither IO nor S (often the most recent name). */
  usesDistractor: boolean;
}

/** 'BABA' when S is named first in the template, 'ABBA' when IO is. */
export function templateKind(template: string): IoiKind {
  return parseTemplate(template).kind;
}

function parseTemplate(template: string): ParsedTemplate {
  let a = 0;
  let b = 0;
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (!KNOWN.has(m[1]!)) fail(`ioi: unknown placeholder [${m[1]}] in template ${JSON.stringify(template)} (use [A], [B], [D], [PLACE], [OBJECT])`);
    if (m[1] === 'A') a++;
    if (m[1] === 'B') b++;
  }
  if ((template.match(/\[D\]/g) ?? []).length > 1) fail(`ioi: a template has at most one distractor [D]: ${JSON.stringify(template)}`);
  if (a !== 1 || b !== 2) fail(`ioi: a template needs [A] (IO) once and [B] (S) twice, got ${a}× [A] and ${b}× [B]: ${JSON.stringify(template)}`);
  return {
    template,
    kind: template.indexOf('[A]') < template.indexOf('[B]') ? 'ABBA' : 'BABA',
    usesPlace: template.includes('[PLACE]'),
    usesObject: template.includes('[OBJECT]'),
    usesDistractor: template.includes('[D]'),
  };
}

/** Fill one template: clean and corrupt (S2 → c) in one pass. */
export function fillTemplate(template: string, f: { io: string; s: string; c: string; place: string; object: string; d?: string }): { clean: string; corrupt: string } {
  let bSeen = 0;
  let clean = '';
  let corrupt = '';
  let last = 0;
  for (const m of template.matchAll(PLACEHOLDER)) {
    const lit = template.slice(last, m.index);
    clean += lit;
    corrupt += lit;
    last = m.index! + m[0].length;
    switch (m[1]) {
      case 'A':
        clean += f.io;
        corrupt += f.io;
        break;
      case 'B':
        bSeen++;
        clean += f.s;
        corrupt += bSeen === 2 ? f.c : f.s;
        break;
      case 'D':
        if (!f.d) fail(`ioi: template ${JSON.stringify(template)} needs a distractor name [D]`);
        clean += f.d;
        corrupt += f.d;
        break;
      case 'PLACE':
        clean += f.place;
        corrupt += f.place;
        break;
      case 'OBJECT':
        clean += f.object;
        corrupt += f.object;
        break;
      default:
        fail(`ioi: unknown placeholder ${m[0]} in template ${JSON.stringify(template)}`);
    }
  }
  const tail = template.slice(last);
  return { clean: clean + tail, corrupt: corrupt + tail };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer checks

function encodeRaw(tok: Tokenizer, text: string): number[] {
  return tok.encode(text, { addSpecialTokens: false });
}

function startsWith(ids: number[], prefix: number[]): boolean {
  if (ids.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (ids[i] !== prefix[i]) return false;
  return true;
}

/** True when `suffix` appended to `context` adds exactly one token and leaves the context's tokens alone. */
export function isSingleTokenAfter(tok: Tokenizer, context: string, suffix: string): boolean {
  const head = encodeRaw(tok, context);
  const full = encodeRaw(tok, context + suffix);
  return full.length === head.length + 1 && startsWith(full, head);
}

/** Names that are one token when they follow a space mid-sentence (checked after two different words). */
export function singleTokenNames(tok: Tokenizer, names: string[]): string[] {
  return names.filter((n) => isSingleTokenAfter(tok, 'Then', ' ' + n) && isSingleTokenAfter(tok, 'Then, Mary and', ' ' + n));
}

// ---------------------------------------------------------------------------------------------
// Generation

function uniqueNonEmpty(what: string, xs: string[]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const raw of xs) {
    const x = raw.trim();
    if (x === '') fail(`ioi: empty entry in the ${what} list`);
    if (!seen.has(x)) {
      seen.add(x);
      out.push(x);
    }
  }
  return out;
}

/** Enumerate the whole space when it is at most this big; otherwise sample at random. */
const ENUMERATE_LIMIT = 200_000;

interface Draw {
  t: number;
  io: number;
  s: number;
  c: number;
  place: number;
  object: number;
}

/**
 * IOI prompts, deterministic in `seed`. Distinct clean prompts where possible (then distinct
 * clean/corrupt pairs). With a tokenizer, only single-token names are used, and only prompts whose
 * clean and corrupt have equal token length and whose answer/wrong are single tokens are kept;
 * with `requireSameLength` (default) all prompts share the most common such length.
 * Fails (one-line HooklensError) when n prompts cannot be made.
 */
export function generateIoiPrompts(opts: IoiOptions): IoiPrompt[] {
  const n = opts.n;
  if (!Number.isInteger(n) || n < 1) fail(`ioi: n must be a positive integer, got ${n}`);
  const rand = mulberry32(checkSeed(opts.seed));
  const base = opts.preset === 'simple' ? IOI_SIMPLE : IOI_CLASSIC;
  const kind = opts.kind ?? 'mixed';
  if (kind !== 'mixed' && kind !== 'BABA' && kind !== 'ABBA') fail(`ioi: kind must be BABA, ABBA or mixed, got '${String(kind)}'`);

  const allTemplates = uniqueNonEmpty('template', opts.templates ?? base.templates).map(parseTemplate);
  const templates = allTemplates.filter((t) => kind === 'mixed' || t.kind === kind);
  if (templates.length === 0) fail(`ioi: no ${kind} templates among the ${allTemplates.length} given`);
  const places = uniqueNonEmpty('place', opts.places ?? base.places);
  const objects = uniqueNonEmpty('object', opts.objects ?? base.objects);
  if (places.length === 0 && templates.some((t) => t.usesPlace)) fail('ioi: the places list is empty');
  if (objects.length === 0 && templates.some((t) => t.usesObject)) fail('ioi: the objects list is empty');

  const givenNames = uniqueNonEmpty('name', opts.names ?? base.names);
  const tok = opts.tokenizer;
  const names = tok ? singleTokenNames(tok, givenNames) : givenNames;
  if (names.length < 3) {
    const which = names.length > 0 ? ` (${names.join(', ')})` : '';
    if (tok) fail(`ioi: only ${names.length} of ${givenNames.length} names are single tokens for this tokenizer${which}; need at least 3 (IO, S and the corrupting name)`);
    fail(`ioi: need at least 3 distinct names (IO, S and the corrupting name), got ${names.length}`);
  }
  const requireSameLength = tok !== undefined && (opts.requireSameLength ?? true);

  // The candidate stream: a shuffled enumeration of the whole space when it is small, else random draws.
  const N = names.length;
  const perTemplate = templates.map((t) => N * (N - 1) * (N - 2) * (t.usesPlace ? places.length : 1) * (t.usesObject ? objects.length : 1));
  const space = perTemplate.reduce((x, y) => x + y, 0);
  /** The k-th combination of template t: object, place, then an ordered triple of distinct names. */
  const decode = (t: number, k: number): Draw => {
    const tp = templates[t]!;
    const object = tp.usesObject ? k % objects.length : 0;
    if (tp.usesObject) k = Math.floor(k / objects.length);
    const place = tp.usesPlace ? k % places.length : 0;
    if (tp.usesPlace) k = Math.floor(k / places.length);
    // k in [0, N(N-1)(N-2)): io, then s ≠ io, then c ∉ {io, s}.
    const io = k % N;
    k = Math.floor(k / N);
    let s = k % (N - 1);
    k = Math.floor(k / (N - 1));
    let c = k;
    if (s >= io) s++;
    const [lo, hi] = io < s ? [io, s] : [s, io];
    if (c >= lo) c++;
    if (c >= hi) c++;
    return { t, io, s, c, place, object };
  };
  // Each draw picks a template uniformly (so templates without [PLACE]/[OBJECT] are not swamped),
  // then a combination within it. A small space is enumerated without repeats (each template's
  // combinations shuffled, templates interleaved at random until exhausted); a large one is sampled.
  const maxDraws = Math.max(5000, 100 * n);
  function* stream(): Generator<Draw> {
    if (space <= ENUMERATE_LIMIT) {
      const orders = perTemplate.map((size) => shuffleInPlace(Array.from({ length: size }, (_, i) => i), rand));
      const next = perTemplate.map(() => 0);
      const live = templates.map((_, t) => t);
      while (live.length > 0) {
        const li = Math.floor(rand() * live.length);
        const t = live[li]!;
        yield decode(t, orders[t]![next[t]!++]!);
        if (next[t]! >= perTemplate[t]!) live.splice(li, 1);
      }
    } else {
      for (let i = 0; i < maxDraws; i++) {
        const t = Math.floor(rand() * templates.length);
        yield decode(t, Math.floor(rand() * perTemplate[t]!));
      }
    }
  }

  const build = (d: Draw): IoiPrompt => {
    const tp = templates[d.t]!;
    const io = names[d.io]!;
    const s = names[d.s]!;
    const c = names[d.c]!;
    const place = tp.usesPlace ? places[d.place]! : '';
    const object = tp.usesObject ? objects[d.object]! : '';
    // The distractor: a fourth name, a function of the draw (so enumeration stays repeat-free).
    let distractor: string | undefined;
    if (tp.usesDistractor) {
      if (N < 4) fail(`ioi: template ${JSON.stringify(tp.template)} needs 4 distinct names (IO, S, the corrupting name, the distractor)`);
      let j = (d.io * 31 + d.s * 17 + d.c * 7 + d.place * 3 + d.object) % N;
      while (j === d.io || j === d.s || j === d.c) j = (j + 1) % N;
      distractor = names[j]!;
    }
    const { clean, corrupt } = fillTemplate(tp.template, { io, s, c, place, object, d: distractor });
    return { template: tp.template, kind: tp.kind, clean, corrupt, answer: ' ' + io, wrong: ' ' + s, io, s, corruptName: c, place, object, ...(distractor ? { distractor } : {}) };
  };
  /** Token length of a usable prompt, or null (0 without a tokenizer). */
  const usableLength = (p: IoiPrompt): number | null => {
    if (!tok) return 0;
    const len = encodeRaw(tok, p.clean).length;
    if (encodeRaw(tok, p.corrupt).length !== len) return null;
    if (!isSingleTokenAfter(tok, p.clean, p.answer) || !isSingleTokenAfter(tok, p.clean, p.wrong)) return null;
    return len;
  };

  // Fill buckets by token length (one bucket without requireSameLength) until one holds n prompts.
  const buckets = new Map<number, IoiPrompt[]>();
  const repeats: { p: IoiPrompt; len: number }[] = []; // valid, but the clean prompt was already taken
  const seenPairs = new Set<string>();
  const seenClean = new Set<string>();
  let valid = 0;
  const add = (p: IoiPrompt, len: number): IoiPrompt[] | null => {
    const key = requireSameLength ? len : 0;
    let b = buckets.get(key);
    if (!b) buckets.set(key, (b = []));
    b.push(p);
    return b.length >= n ? b : null;
  };
  for (const d of stream()) {
    const p = build(d);
    const pair = p.clean + '\u0000' + p.corrupt;
    if (seenPairs.has(pair)) continue;
    seenPairs.add(pair);
    const len = usableLength(p);
    if (len === null) continue;
    valid++;
    if (seenClean.has(p.clean)) {
      repeats.push({ p, len });
      continue;
    }
    seenClean.add(p.clean);
    const done = add(p, len);
    if (done) return done;
  }
  for (const { p, len } of repeats) {
    const done = add(p, len);
    if (done) return done;
  }

  let best = 0;
  let bestLen = 0;
  for (const [len, b] of buckets) if (b.length > best) [best, bestLen] = [b.length, len];
  const searched = space <= ENUMERATE_LIMIT ? `all ${space} combinations` : `${maxDraws} random draws`;
  if (requireSameLength) {
    fail(`ioi: only ${best} distinct prompts share one token length (${bestLen} tokens) among ${valid} usable ones from ${searched}; need ${n} (lower n, add names/templates, or drop requireSameLength)`);
  }
  fail(`ioi: only ${best} distinct usable prompts from ${searched}; need ${n} (lower n or add names/templates/places/objects)`);
}

/** JSONL, one {"clean","corrupt","answer","wrong"} object per line — the input of `hooklens patch --pairs`. */
export function toPairsJsonl(prompts: IoiPrompt[]): string {
  return prompts.map((p) => JSON.stringify({ clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong }) + '\n').join('');
}

/**
 * The synthetic corpus the shipped IOI model is trained on: IOI sentences (BABA and ABBA, answer
 * included) from the training split of names and templates, mixed with filler sentences that use
 * every name — held-out ones too — so the model is a small language model, not a classifier, and
 * knows every name's embedding even though held-out names never appear in an IOI sentence.
 */
import { IOI_NAMES, IOI_OBJECTS, IOI_PLACES, IOI_TEMPLATES_ABBA, IOI_TEMPLATES_BABA, fillTemplate, holdOut, splitHeldOut, type IoiVocabulary } from './ioi.js';
import { BOS, words } from '../src/tokenizers/word-tokenizer.js';
import { mulberry32 } from '../src/util/random.js';

/**
 * Extra first names: with ~200 names the model cannot memorise name-specific answers and has to
 * learn the name-agnostic mechanism, which is what lets it generalise to held-out names.
 */
export const EXTRA_NAMES: string[] = (
  'Aaron Adam Alan Albert Alice Amanda Amber Amy Andrea Angela Ann Anthony Arthur Ashley Austin ' +
  'Barbara Benjamin Betty Beverly Bill Bob Bobby Bonnie Bradley Brenda Brian Bruce Bryan Carl Carol ' +
  'Caroline Catherine Charles Cheryl Chris Christina Cindy Clara Craig Cynthia Dale Dana Daniel Danny ' +
  'Debbie Deborah Denise Dennis Diana Diane Donald Donna Doris Dorothy Douglas Dylan Edward Elaine ' +
  'Elizabeth Ellen Emily Emma Eric Ethan Eugene Evelyn Frances Frank Fred Gary Gerald Gina Gloria ' +
  'Grace Greg Hannah Harold Harry Heather Helen Henry Howard Irene Jack Jacob Janet Janice Jason ' +
  'Jean Jeffrey Jennifer Jeremy Jerry Jesse Joan Joe Johnny Jonathan Joseph Joshua Joyce Juan Judith ' +
  'Judy Julia Julie Justin Karen Katherine Kathleen Kathy Keith Kelly Kenneth Kevin Kimberly Kyle ' +
  'Larry Laura Lauren Lawrence Linda Lisa Logan Louis Lucy Marie Marilyn Mark Martha Martin Megan ' +
  'Melissa Michelle Nancy Nathan Nicholas Noah Norma Olivia Pamela Paul Peter Philip Phyllis Rachel ' +
  'Ralph Randy Raymond Rebecca Roger Ronald Rose Roy Russell Ruth Ryan Samuel Sandra Sara Scott Sean ' +
  'Sharon Shirley Stephanie Susan Teresa Terry Theresa Timothy Tyler Victoria Vincent Walter Wayne ' +
  'Wendy William Willie Zachary'
)
  .split(' ')
  .filter((n) => !IOI_NAMES.includes(n));

export const MODEL_NAMES: string[] = [...IOI_NAMES, ...EXTRA_NAMES];

const TEMPLATE_SPLIT = splitHeldOut({ seed: 7, nameFraction: 0.2, templateFraction: 0.25 });
const NAME_SPLIT = holdOut(MODEL_NAMES, 0.2, 7);

/** Fixed split: these names and templates never appear in an IOI training sentence. */
export const IOI_MODEL_SPLIT: { train: IoiVocabulary; test: IoiVocabulary } = {
  train: { ...TEMPLATE_SPLIT.train, names: NAME_SPLIT.train },
  test: { ...TEMPLATE_SPLIT.test, names: NAME_SPLIT.test },
};

export const FILLER_TEMPLATES: string[] = [
  '[N] went to the [PLACE].',
  '[N] had a [OBJECT].',
  '[N] and [M] went to the [PLACE].',
  '[N] liked the [OBJECT] at the [PLACE].',
  'The [OBJECT] was at the [PLACE].',
  'Then, [N] went home.',
  '[N] gave the [OBJECT] away.',
  'After the lunch, [N] was at the [PLACE].',
  '[N] found a [OBJECT] at the [PLACE].',
  '[N] and [M] were friends.',
  '[N] and [M] were there.',
];

/** Every word the model knows (template words of both splits, all names, places, objects). */
export function corpusWords(): string[] {
  const text = [...IOI_TEMPLATES_BABA, ...IOI_TEMPLATES_ABBA, ...FILLER_TEMPLATES].join(' ').replace(/\[[A-Z]+\]/g, ' ');
  return [...new Set([...words(text), ...MODEL_NAMES, ...IOI_PLACES, ...IOI_OBJECTS])];
}

function pick<T>(xs: readonly T[], rand: () => number): T {
  return xs[Math.floor(rand() * xs.length)];
}

/** One document: an IOI sentence with its answer (probability pIoi), else a repeated list of names or a filler sentence. */
export function sampleDocument(rand: () => number, train: IoiVocabulary = IOI_MODEL_SPLIT.train, pIoi = 0.7): string {
  if (rand() < pIoi) {
    const io = pick(train.names, rand);
    let s = pick(train.names, rand);
    while (s === io) s = pick(train.names, rand);
    const { clean } = fillTemplate(pick(train.templates, rand), { io, s, c: s, place: pick(train.places, rand), object: pick(train.objects, rand) });
    return `${clean} ${io}.`;
  }
  if (rand() < 0.5) {
    // A list of names said twice: teaches copying names from context (all names, held-out too),
    // the skill IOI's name movers reuse.
    const k = 2 + Math.floor(rand() * 3);
    const names = Array.from({ length: k }, () => pick(MODEL_NAMES, rand));
    return `${names.join(' and ')} were there. ${names.join(' and ')} were there.`;
  }
  const n = pick(MODEL_NAMES, rand);
  let m = pick(MODEL_NAMES, rand);
  while (m === n) m = pick(MODEL_NAMES, rand);
  return pick(FILLER_TEMPLATES, rand)
    .replace('[N]', n)
    .replace('[M]', m)
    .replace('[PLACE]', pick(IOI_PLACES, rand))
    .replace('[OBJECT]', pick(IOI_OBJECTS, rand));
}

/**
 * Batch `step` of the training stream: `batch` windows of T token ids, each BOS + documents
 * separated by BOS, the last one cut at T. Depends only on (seed, step), so resuming is exact.
 */
export function trainingBatch(vocab: Map<string, number>, seed: number, step: number, batch: number, T: number, pIoi = 0.7): Int32Array {
  const rand = mulberry32((seed * 1_000_003 + step) >>> 0);
  const ids = new Int32Array(batch * T);
  const bos = vocab.get(BOS)!;
  for (let b = 0; b < batch; b++) {
    const row: number[] = [];
    while (row.length < T) {
      row.push(bos);
      for (const w of words(sampleDocument(rand, IOI_MODEL_SPLIT.train, pIoi))) {
        const id = vocab.get(w);
        if (id === undefined) throw new Error(`corpus word '${w}' missing from the vocabulary`);
        row.push(id);
      }
    }
    ids.set(row.slice(0, T), b * T);
  }
  return ids;
}

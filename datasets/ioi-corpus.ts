/**
 * The synthetic corpus the shipped IOI model is trained on: IOI sentences (BABA and ABBA, answer
 * included) from the training split of names and templates, mixed with filler sentences that use
 * every name — held-out ones too — so the model is a small language model, not a classifier, and
 * knows every name's embedding even though held-out names never appear in an IOI sentence.
 */
import { IOI_NAMES, IOI_OBJECTS, IOI_PLACES, IOI_TEMPLATES_ABBA, IOI_TEMPLATES_BABA, fillTemplate, splitHeldOut, type IoiVocabulary } from './ioi.js';
import { BOS, words } from '../src/tokenizers/word-tokenizer.js';
import { mulberry32 } from '../src/util/random.js';

/** Fixed split: these names and templates never appear in an IOI training sentence. */
export const IOI_MODEL_SPLIT = splitHeldOut({ seed: 7, nameFraction: 0.2, templateFraction: 0.25 });

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
  return [...new Set([...words(text), ...IOI_NAMES, ...IOI_PLACES, ...IOI_OBJECTS])];
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
    const names = Array.from({ length: k }, () => pick(IOI_NAMES, rand));
    return `${names.join(' and ')} were there. ${names.join(' and ')} were there.`;
  }
  const n = pick(IOI_NAMES, rand);
  let m = pick(IOI_NAMES, rand);
  while (m === n) m = pick(IOI_NAMES, rand);
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

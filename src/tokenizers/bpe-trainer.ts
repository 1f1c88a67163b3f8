/**
 * Train a byte-level BPE tokenizer (GPT-2's scheme) on a corpus and write it as a Hugging Face
 * tokenizer.json that @huggingface/transformers loads: ByteLevel pre-tokenizer (GPT-2's regex,
 * bytes mapped to printable characters), BPE merges in training order, BOS prepended by the
 * post-processor.
 *
 * Written by hand because no kept library trains BPE here: Hugging Face's `tokenizers` Node
 * binding downloads a native binary at install, and transformers.js only encodes. The algorithm is
 * the textbook one (count adjacent symbol pairs over pre-tokenized words weighted by frequency,
 * merge the most frequent, repeat); ties break by the pair's text, so training is deterministic.
 */
import { fail } from '../errors.js';

export const BPE_BOS = '<|endoftext|>';

/** GPT-2's pre-tokenizer: contractions, words and numbers with their leading space, other symbols, spaces. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: each byte as a printable character (printable Latin-1 bytes as themselves). */
export function byteAlphabet(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const chars = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) chars[b] = keep.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  return chars;
}

/** The pre-tokenized words of a text, as byte-alphabet strings. */
export function byteLevelWords(text: string, alphabet = byteAlphabet()): string[] {
  const enc = new TextEncoder();
  return (text.match(GPT2_SPLIT) ?? []).map((w) => Array.from(enc.encode(w), (b) => alphabet[b]).join(''));
}

/** `symbols` with every adjacent (a, b), left to right, replaced by a + b. */
function mergePair(symbols: readonly string[], a: string, b: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
      out.push(a + b);
      i++;
    } else out.push(symbols[i]);
  }
  return out;
}

export interface BpeTokenizer {
  tokenizerJson: object;
  tokenizerConfig: object;
  /** id → token (byte-alphabet string); BOS is id 0. */
  vocab: string[];
  merges: [string, string][];
}

/**
 * Learn merges until the vocabulary (BOS + 256 bytes + merges) reaches `vocabSize` or no pair
 * occurs `minFrequency` times. `texts` are the corpus's documents.
 */
export function trainBpe(texts: Iterable<string>, vocabSize: number, minFrequency = 2): BpeTokenizer {
  if (vocabSize < 257) fail(`BPE vocabulary size ${vocabSize} is below the 257 base tokens (BOS and 256 bytes)`);
  const alphabet = byteAlphabet();
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of byteLevelWords(t, alphabet)) counts.set(w, (counts.get(w) ?? 0) + 1);
  // Each distinct word as its current symbol sequence, with its frequency.
  const words = [...counts].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, n]) => ({ symbols: [...w], n }));
  const vocab = [BPE_BOS, ...alphabet];
  const merges: [string, string][] = [];
  while (vocab.length < vocabSize) {
    const pairs = new Map<string, number>();
    for (const { symbols, n } of words) for (let i = 0; i + 1 < symbols.length; i++) {
      const key = symbols[i] + '\u0000' + symbols[i + 1];
      pairs.set(key, (pairs.get(key) ?? 0) + n);
    }
    let best = '';
    let bestN = 0;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && k < best)) [best, bestN] = [k, n];
    if (bestN < minFrequency) break;
    const [a, b] = best.split('\u0000') as [string, string];
    const ab = a + b;
    merges.push([a, b]);
    vocab.push(ab);
    for (const w of words) if (w.symbols.length > 1) w.symbols = mergePair(w.symbols, a, b);
  }
  return { ...bpeTokenizerFiles(vocab, merges), vocab, merges };
}

/** tokenizer.json and tokenizer_config.json for a byte-level BPE vocabulary (BOS id 0). */
export function bpeTokenizerFiles(vocab: readonly string[], merges: readonly [string, string][]): { tokenizerJson: object; tokenizerConfig: object } {
  const ids = Object.fromEntries(vocab.map((w, i) => [w, i]));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 0, content: BPE_BOS, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: BPE_BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: BPE_BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [BPE_BOS]: { id: BPE_BOS, ids: [0], tokens: [BPE_BOS] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab: ids, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
  const tokenizerConfig = {
    tokenizer_class: 'GPT2TokenizerFast',
    bos_token: BPE_BOS,
    eos_token: BPE_BOS,
    unk_token: BPE_BOS,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: 1e30,
  };
  return { tokenizerJson, tokenizerConfig };
}

/**
 * Encode with the trained merges directly (same result as the tokenizer.json through
 * transformers.js; the training loop uses this to avoid an async tokenizer per batch).
 */
export class BpeEncoder {
  private readonly rank = new Map<string, number>();
  private readonly ids: Map<string, number>;
  private readonly cache = new Map<string, number[]>();
  private readonly alphabet = byteAlphabet();

  constructor(vocab: readonly string[], merges: readonly [string, string][]) {
    merges.forEach(([a, b], i) => this.rank.set(a + '\u0000' + b, i));
    this.ids = new Map(vocab.map((w, i) => [w, i]));
  }

  /** Ids of a text (no BOS). */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const w of byteLevelWords(text, this.alphabet)) out.push(...this.word(w));
    return out;
  }

  private word(w: string): number[] {
    const hit = this.cache.get(w);
    if (hit) return hit;
    let s = [...w];
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = this.rank.get(s[i] + '\u0000' + s[i + 1]);
        if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) break;
      s = mergePair(s, s[best], s[best + 1]);
    }
    const ids = s.map((t) => this.ids.get(t)!);
    this.cache.set(w, ids);
    return ids;
  }
}

/**
 * Export a GGUF sentencepiece-BPE vocabulary (`tokenizer.ggml.model` = "llama") as a Hugging Face
 * Llama-style fast tokenizer: `tokenizer.json` + `tokenizer_config.json`.
 *
 * Mirrors transformers' LlamaConverter (legacy form): BPE model with byte_fallback and fuse_unk, merges
 * derived from the vocabulary and scores like SentencePieceExtractor (every split of a piece into two
 * in-vocabulary halves is a merge, ordered by the merged piece's score, highest first), normalizer
 * Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, decoder Replace("▁", " ") → ByteFallback → Fuse →
 * Strip(1 leading space), TemplateProcessing adding BOS (and EOS if configured), control/unknown tokens
 * as special added tokens.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { GgufValue } from './gguf.js';
import {
  SentencePieceBpeTokenizer,
  sentencePieceVocabFromGguf,
  TOKEN_TYPE,
  type SentencePieceVocab,
} from './spm-tokenizer.js';

export interface HfTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

const SPACE = '\u2581';

function isMergeable(type: number): boolean {
  return (
    type === TOKEN_TYPE.NORMAL ||
    type === TOKEN_TYPE.UNDEFINED ||
    type === TOKEN_TYPE.USER_DEFINED ||
    type === TOKEN_TYPE.UNUSED
  );
}

/** BPE merges from pieces and scores, in priority order (SentencePieceExtractor semantics). */
export function mergesFromScores(vocab: SentencePieceVocab): [string, string][] {
  const { tokens, scores, tokenTypes } = vocab;
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (!ids.has(t)) ids.set(t, i);
  });
  // Only pieces sentencepiece can build by merging (normal/user-defined/unused) are merge results or halves.
  const mergeableId = (p: string): number | undefined => {
    const id = ids.get(p);
    return id !== undefined && isMergeable(tokenTypes[id]!) ? id : undefined;
  };
  const all: { l: string; r: string; score: number; order: number }[] = [];
  for (let id = 0; id < tokens.length; id++) {
    if (!isMergeable(tokenTypes[id]!) || ids.get(tokens[id]!) !== id) continue;
    const piece = tokens[id]!;
    const chars = Array.from(piece); // split on code points, never inside a surrogate pair
    const local: { l: string; r: string; li: number; ri: number }[] = [];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join('');
      const r = chars.slice(k).join('');
      const li = mergeableId(l);
      const ri = mergeableId(r);
      if (li !== undefined && ri !== undefined) local.push({ l, r, li, ri });
    }
    local.sort((a, b) => a.li - b.li || a.ri - b.ri);
    for (const m of local) all.push({ l: m.l, r: m.r, score: scores[id]!, order: all.length });
  }
  // Highest score first; stable for ties (vocabulary order), as Python's sorted(reverse=True) is.
  all.sort((a, b) => b.score - a.score || a.order - b.order);
  return all.map((m) => [m.l, m.r]);
}

function isVocab(x: unknown): x is SentencePieceVocab {
  return typeof x === 'object' && x !== null && Array.isArray((x as SentencePieceVocab).tokens) && 'tokenTypes' in x;
}

/**
 * Build HF `tokenizer.json` and `tokenizer_config.json` objects from a tokenizer, GGUF metadata, or an
 * already extracted vocabulary. `sourceName` names the GGUF file in error messages.
 */
export function sentencePieceToHfTokenizerJson(
  source: SentencePieceBpeTokenizer | Record<string, GgufValue> | SentencePieceVocab,
  sourceName = 'gguf',
): HfTokenizerFiles {
  const vocab =
    source instanceof SentencePieceBpeTokenizer
      ? source.toVocab()
      : isVocab(source)
        ? source
        : sentencePieceVocabFromGguf(source as Record<string, GgufValue>, sourceName);
  const { tokens, tokenTypes } = vocab;

  const vocabObj: Record<string, number> = {};
  for (let i = 0; i < tokens.length; i++) {
    if (!Object.hasOwn(vocabObj, tokens[i]!)) vocabObj[tokens[i]!] = i;
  }

  const addedTokens: Record<string, unknown>[] = [];
  const addedTokensDecoder: Record<string, unknown> = {};
  for (let i = 0; i < tokens.length; i++) {
    const t = tokenTypes[i]!;
    const special = t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNKNOWN;
    if (!special && t !== TOKEN_TYPE.USER_DEFINED) continue;
    const entry = {
      id: i,
      content: tokens[i]!,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: !special,
      special,
    };
    addedTokens.push(entry);
    const { id: _id, ...rest } = entry;
    addedTokensDecoder[String(i)] = rest;
  }

  const pieceOf = (id: number | null): string | null => (id === null ? null : tokens[id]!);
  const bos = pieceOf(vocab.bosTokenId);
  const eos = pieceOf(vocab.eosTokenId);
  const unk = pieceOf(vocab.unkTokenId);
  const pad = pieceOf(vocab.padTokenId);

  const single: unknown[] = [];
  const pair: unknown[] = [];
  const specialTokens: Record<string, unknown> = {};
  const addSpecial = (piece: string, id: number, typeId: number, into: unknown[]): void => {
    into.push({ SpecialToken: { id: piece, type_id: typeId } });
    specialTokens[piece] = { id: piece, ids: [id], tokens: [piece] };
  };
  if (vocab.addBos && bos !== null) addSpecial(bos, vocab.bosTokenId!, 0, single);
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  if (vocab.addEos && eos !== null) addSpecial(eos, vocab.eosTokenId!, 0, single);
  if (vocab.addBos && bos !== null) addSpecial(bos, vocab.bosTokenId!, 0, pair);
  pair.push({ Sequence: { id: 'A', type_id: 0 } });
  if (vocab.addEos && eos !== null) addSpecial(eos, vocab.eosTokenId!, 0, pair);
  if (vocab.addBos && bos !== null) addSpecial(bos, vocab.bosTokenId!, 1, pair);
  pair.push({ Sequence: { id: 'B', type_id: 1 } });
  if (vocab.addEos && eos !== null) addSpecial(eos, vocab.eosTokenId!, 1, pair);

  const normalizers: unknown[] = [];
  if (vocab.addSpacePrefix) normalizers.push({ type: 'Prepend', prepend: SPACE });
  normalizers.push({ type: 'Replace', pattern: { String: ' ' }, content: SPACE });

  const decoders: unknown[] = [
    { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
    { type: 'ByteFallback' },
    { type: 'Fuse' },
  ];
  if (vocab.addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });

  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'Sequence', normalizers },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single, pair, special_tokens: specialTokens },
    decoder: { type: 'Sequence', decoders },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: vocabObj,
      merges: mergesFromScores(vocab),
    },
  };

  const tokenizerConfig = {
    tokenizer_class: 'LlamaTokenizer',
    add_bos_token: vocab.addBos,
    add_eos_token: vocab.addEos,
    bos_token: bos,
    eos_token: eos,
    unk_token: unk,
    pad_token: pad,
    clean_up_tokenization_spaces: false,
    legacy: true,
    add_prefix_space: vocab.addSpacePrefix,
    model_max_length: 1e30,
    sp_model_kwargs: {},
    spaces_between_special_tokens: false,
    added_tokens_decoder: addedTokensDecoder,
  };

  return { tokenizerJson, tokenizerConfig };
}

/** Write `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed). */
export function writeHfTokenizerFiles(dir: string, files: HfTokenizerFiles): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(files.tokenizerJson, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(files.tokenizerConfig, null, 2) + '\n');
}

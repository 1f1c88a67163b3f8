/**
 * SentencePiece-BPE tokenizer built from GGUF `tokenizer.ggml.*` metadata (`tokenizer.ggml.model` = "llama").
 *
 * Encoding follows sentencepiece's BPE model (as llama.cpp's SPM tokenizer, llama2.c and the HF slow
 * Llama tokenizer do): prepend the dummy-prefix space, replace ' ' by '▁', split into Unicode
 * characters, then repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with
 * the highest score (ties: leftmost), using a max-heap with lazy invalidation. Symbols that are not
 * pieces fall back to `<0xXX>` byte tokens (one per UTF-8 byte), or to the unknown token.
 */
import { fail } from '../errors.js';
import type { GgufValue } from './gguf.js';

/** sentencepiece / llama.cpp token types (`tokenizer.ggml.token_type`). */
export const TOKEN_TYPE = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

const SPACE = '\u2581'; // '▁'
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export interface SpmEncodeOptions {
  /** false disables BOS and EOS (like HF `add_special_tokens`); explicit addBos/addEos take precedence. */
  addSpecialTokens?: boolean;
  /** Prepend BOS (default: `tokenizer.ggml.add_bos_token`, true if absent). */
  addBos?: boolean;
  /** Append EOS (default: `tokenizer.ggml.add_eos_token`, false if absent). */
  addEos?: boolean;
}

export interface SpmDecodeOptions {
  /** Drop control tokens (BOS/EOS/...) and render the unknown token as sentencepiece does (" ⁇ "). Default true. */
  skipSpecialTokens?: boolean;
}

interface Bigram {
  left: number;
  right: number;
  score: number;
  /** UTF-16 length of the merged text, to detect stale entries. */
  size: number;
}

/** Max-heap ordered by score, ties to the smaller `left` (sentencepiece's SymbolPairComparator). */
class BigramHeap {
  private items: Bigram[] = [];

  get size(): number {
    return this.items.length;
  }

  private static before(a: Bigram, b: Bigram): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }

  push(x: Bigram): void {
    const h = this.items;
    h.push(x);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!BigramHeap.before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): Bigram {
    const h = this.items;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && BigramHeap.before(h[l]!, h[m]!)) m = l;
        if (r < h.length && BigramHeap.before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

export interface SentencePieceVocab {
  tokens: string[];
  scores: number[];
  tokenTypes: number[];
  bosTokenId: number | null;
  eosTokenId: number | null;
  unkTokenId: number | null;
  padTokenId: number | null;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
}

export class SentencePieceBpeTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly unkTokenId: number | null;
  readonly padTokenId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly addSpacePrefix: boolean;

  private readonly tokens: string[];
  private readonly scores: number[];
  private readonly types: number[];
  /** Pieces that take part in BPE merges (normal, user-defined, unused): piece → id. */
  private readonly mergeable = new Map<string, number>();
  /** Every piece → id (first occurrence wins). */
  private readonly pieceToId = new Map<string, number>();
  /** byte value → id of its `<0xXX>` token, or -1. */
  private readonly byteToId = new Int32Array(256).fill(-1);
  /** id → byte value for byte tokens, or -1. */
  private readonly idToByte: Int16Array;
  /** User-defined pieces, longest first: matched atomically before BPE (as sentencepiece does). */
  private readonly userDefined: string[] = [];

  constructor(vocab: SentencePieceVocab, private readonly sourceName = 'tokenizer') {
    const { tokens, scores, tokenTypes } = vocab;
    this.tokens = tokens;
    this.scores = scores;
    this.types = tokenTypes;
    this.vocabSize = tokens.length;
    this.bosTokenId = vocab.bosTokenId;
    this.eosTokenId = vocab.eosTokenId;
    this.unkTokenId = vocab.unkTokenId;
    this.padTokenId = vocab.padTokenId;
    this.addBos = vocab.addBos;
    this.addEos = vocab.addEos;
    this.addSpacePrefix = vocab.addSpacePrefix;
    this.idToByte = new Int16Array(tokens.length).fill(-1);

    for (let id = 0; id < tokens.length; id++) {
      const piece = tokens[id]!;
      const type = tokenTypes[id]!;
      if (!this.pieceToId.has(piece)) this.pieceToId.set(piece, id);
      if (type === TOKEN_TYPE.BYTE) {
        const m = BYTE_PIECE.exec(piece);
        if (!m) fail(`${sourceName}: token ${id} '${piece}' has type BYTE but is not of the form <0xXX>`);
        const b = parseInt(m[1]!, 16);
        this.idToByte[id] = b;
        if (this.byteToId[b] === -1) this.byteToId[b] = id;
      } else if (
        type === TOKEN_TYPE.NORMAL ||
        type === TOKEN_TYPE.UNDEFINED ||
        type === TOKEN_TYPE.USER_DEFINED ||
        type === TOKEN_TYPE.UNUSED
      ) {
        if (!this.mergeable.has(piece)) this.mergeable.set(piece, id);
        if (type === TOKEN_TYPE.USER_DEFINED && piece.length > 0) this.userDefined.push(piece);
      }
    }
    this.userDefined.sort((a, b) => b.length - a.length);
  }

  static fromGgufMetadata(meta: Record<string, GgufValue>, sourceName: string): SentencePieceBpeTokenizer {
    return new SentencePieceBpeTokenizer(sentencePieceVocabFromGguf(meta, sourceName), sourceName);
  }

  /** The vocabulary and settings this tokenizer was built from (arrays are shared, do not mutate). */
  toVocab(): SentencePieceVocab {
    return {
      tokens: this.tokens,
      scores: this.scores,
      tokenTypes: this.types,
      bosTokenId: this.bosTokenId,
      eosTokenId: this.eosTokenId,
      unkTokenId: this.unkTokenId,
      padTokenId: this.padTokenId,
      addBos: this.addBos,
      addEos: this.addEos,
      addSpacePrefix: this.addSpacePrefix,
    };
  }

  idToPiece(id: number): string {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      fail(`${this.sourceName}: token id ${id} is out of range (vocabulary size ${this.vocabSize})`);
    }
    return this.tokens[id]!;
  }

  /** Id of a piece, or undefined. */
  pieceId(piece: string): number | undefined {
    return this.pieceToId.get(piece);
  }

  tokenType(id: number): number {
    this.idToPiece(id);
    return this.types[id]!;
  }

  tokenScore(id: number): number {
    this.idToPiece(id);
    return this.scores[id]!;
  }

  encode(text: string, opts: SpmEncodeOptions = {}): number[] {
    const out: number[] = [];
    const special = opts.addSpecialTokens ?? true;
    const addBos = opts.addBos ?? (special && this.addBos);
    const addEos = opts.addEos ?? (special && this.addEos);
    if (addBos) {
      if (this.bosTokenId === null) fail(`${this.sourceName}: cannot add BOS: the vocabulary has no bos_token_id`);
      out.push(this.bosTokenId);
    }
    if (text.length > 0) {
      // sentencepiece: the dummy prefix is added once, to the whole (non-empty) input.
      const normalized = ((this.addSpacePrefix ? ' ' : '') + text).replaceAll(' ', SPACE);
      this.encodeNormalized(normalized, out);
    }
    if (addEos) {
      if (this.eosTokenId === null) fail(`${this.sourceName}: cannot add EOS: the vocabulary has no eos_token_id`);
      out.push(this.eosTokenId);
    }
    return out;
  }

  /** BPE over already-normalised text ('▁' for spaces, dummy prefix applied), appending ids to `out`. */
  private encodeNormalized(text: string, out: number[]): void {
    // Initial symbols: Unicode characters (code points), user-defined pieces kept atomic ("frozen").
    const starts: number[] = [];
    const lens: number[] = [];
    const frozen: boolean[] = [];
    for (let i = 0; i < text.length; ) {
      let len = 0;
      let freeze = false;
      for (const ud of this.userDefined) {
        if (text.startsWith(ud, i)) {
          len = ud.length;
          freeze = true;
          break;
        }
      }
      if (len === 0) {
        const cp = text.codePointAt(i)!;
        len = cp > 0xffff ? 2 : 1;
      }
      starts.push(i);
      lens.push(len);
      frozen.push(freeze);
      i += len;
    }
    const n = starts.length;
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }

    const heap = new BigramHeap();
    // merged text → [left text, right text], for resegmenting UNUSED pieces (sentencepiece's rev_merge).
    const revMerge = new Map<string, [string, string]>();
    const tryAdd = (left: number, right: number): void => {
      if (left === -1 || right === -1 || frozen[left] || frozen[right]) return;
      const merged = text.slice(starts[left]!, starts[left]! + lens[left]! + lens[right]!);
      const id = this.mergeable.get(merged);
      if (id === undefined) return;
      heap.push({ left, right, score: this.scores[id]!, size: merged.length });
      if (this.types[id] === TOKEN_TYPE.UNUSED) {
        revMerge.set(merged, [
          text.slice(starts[left]!, starts[left]! + lens[left]!),
          text.slice(starts[right]!, starts[right]! + lens[right]!),
        ]);
      }
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);

    while (heap.size > 0) {
      const bg = heap.pop();
      const l = bg.left;
      const r = bg.right;
      // Stale entry: one side already merged away or changed size.
      if (lens[l] === 0 || lens[r] === 0 || lens[l]! + lens[r]! !== bg.size || next[l] !== r) continue;
      lens[l] = lens[l]! + lens[r]!;
      lens[r] = 0;
      next[l] = next[r]!;
      if (next[r]! >= 0) prev[next[r]!] = l;
      tryAdd(prev[l]!, l);
      tryAdd(l, next[l]!);
    }

    let lastWasFallbackUnk = false;
    const emitPiece = (piece: string): void => {
      const id = this.pieceToId.get(piece);
      if (id !== undefined && this.types[id] !== TOKEN_TYPE.UNUSED) {
        out.push(id);
        lastWasFallbackUnk = false;
        return;
      }
      if (id !== undefined) {
        const split = revMerge.get(piece);
        if (split) {
          emitPiece(split[0]);
          emitPiece(split[1]);
          return;
        }
        out.push(id);
        lastWasFallbackUnk = false;
        return;
      }
      // Not a piece: byte fallback, one token per UTF-8 byte; unknown token (fused) if there is none.
      for (const b of Buffer.from(piece, 'utf8')) {
        const bid = this.byteToId[b]!;
        if (bid >= 0) {
          out.push(bid);
          lastWasFallbackUnk = false;
        } else {
          if (this.unkTokenId === null) {
            fail(`${this.sourceName}: cannot encode ${JSON.stringify(piece)}: no byte token and no unknown token`);
          }
          if (!lastWasFallbackUnk) out.push(this.unkTokenId);
          lastWasFallbackUnk = true;
        }
      }
    };
    for (let i = n > 0 ? 0 : -1; i !== -1; i = next[i]!) {
      emitPiece(text.slice(starts[i]!, starts[i]! + lens[i]!));
    }
  }

  decode(ids: readonly number[], opts: SpmDecodeOptions = {}): string {
    const skipSpecial = opts.skipSpecialTokens ?? true;
    let text = '';
    let pendingBytes: number[] = [];
    const flushBytes = (): void => {
      if (pendingBytes.length > 0) {
        // Invalid sequences become U+FFFD, as sentencepiece does.
        text += Buffer.from(pendingBytes).toString('utf8');
        pendingBytes = [];
      }
    };
    // sentencepiece strips the dummy-prefix '▁' from the first piece that produces text.
    let atStart = true;
    for (const id of ids) {
      const piece = this.idToPiece(id);
      const type = this.types[id]!;
      if (this.idToByte[id]! >= 0) {
        pendingBytes.push(this.idToByte[id]!);
        atStart = false;
        continue;
      }
      flushBytes();
      if (type === TOKEN_TYPE.CONTROL) {
        if (!skipSpecial) text += piece;
        continue;
      }
      if (type === TOKEN_TYPE.UNKNOWN) {
        text += skipSpecial ? ' \u2047 ' : piece;
        atStart = false;
        continue;
      }
      let p = piece;
      if (atStart && this.addSpacePrefix && p.startsWith(SPACE)) p = p.slice(1);
      if (p.length > 0) atStart = false;
      text += p.replaceAll(SPACE, ' ');
    }
    flushBytes();
    return text;
  }
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata → vocabulary

function metaInt(meta: Record<string, GgufValue>, key: string, src: string): number | null {
  if (!Object.hasOwn(meta, key)) return null;
  const v = meta[key];
  if (typeof v === 'bigint') return null; // e.g. u64 -1 sentinel
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(`${src}: metadata '${key}' must be an integer, got ${String(v)}`);
  return v;
}

function metaBool(meta: Record<string, GgufValue>, key: string, dflt: boolean, src: string): boolean {
  if (!Object.hasOwn(meta, key)) return dflt;
  const v = meta[key];
  if (typeof v !== 'boolean') fail(`${src}: metadata '${key}' must be a boolean, got ${String(v)}`);
  return v;
}

/** Extract and validate the sentencepiece vocabulary from GGUF metadata. */
export function sentencePieceVocabFromGguf(meta: Record<string, GgufValue>, src: string): SentencePieceVocab {
  const model = meta['tokenizer.ggml.model'];
  if (model === undefined) fail(`${src}: no tokenizer in the GGUF metadata (missing 'tokenizer.ggml.model')`);
  if (model !== 'llama') {
    fail(
      `${src}: tokenizer model ${JSON.stringify(model)} is not supported yet (only "llama", sentencepiece BPE with scores)`,
    );
  }
  const tokens = meta['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((t) => typeof t === 'string')) {
    fail(`${src}: metadata 'tokenizer.ggml.tokens' must be a non-empty array of strings`);
  }
  const n = tokens.length;
  const scores = meta['tokenizer.ggml.scores'];
  if (!Array.isArray(scores) || !scores.every((s) => typeof s === 'number')) {
    fail(`${src}: metadata 'tokenizer.ggml.scores' must be an array of numbers (required for sentencepiece BPE)`);
  }
  if (scores.length !== n) {
    fail(`${src}: metadata 'tokenizer.ggml.scores' has ${scores.length} entries but there are ${n} tokens`);
  }
  let tokenTypes: number[];
  const types = meta['tokenizer.ggml.token_type'];
  if (types === undefined) {
    // No types: infer byte tokens from their spelling, everything else normal.
    tokenTypes = (tokens as string[]).map((t) => (BYTE_PIECE.test(t) ? TOKEN_TYPE.BYTE : TOKEN_TYPE.NORMAL));
  } else {
    if (!Array.isArray(types) || !types.every((t) => typeof t === 'number' && Number.isInteger(t))) {
      fail(`${src}: metadata 'tokenizer.ggml.token_type' must be an array of integers`);
    }
    if (types.length !== n) {
      fail(`${src}: metadata 'tokenizer.ggml.token_type' has ${types.length} entries but there are ${n} tokens`);
    }
    tokenTypes = types as number[];
  }
  const special = (key: string): number | null => {
    const v = metaInt(meta, key, src);
    if (v === null || v === -1 || v === 0xffffffff) return null;
    if (v < 0 || v >= n) fail(`${src}: metadata '${key}' = ${v} is out of range (vocabulary size ${n})`);
    return v;
  };
  let unkTokenId = special('tokenizer.ggml.unknown_token_id');
  if (unkTokenId === null) {
    const i = tokenTypes.indexOf(TOKEN_TYPE.UNKNOWN);
    unkTokenId = i >= 0 ? i : null;
  }
  return {
    tokens: tokens as string[],
    scores: scores as number[],
    tokenTypes,
    bosTokenId: special('tokenizer.ggml.bos_token_id'),
    eosTokenId: special('tokenizer.ggml.eos_token_id'),
    unkTokenId,
    padTokenId: special('tokenizer.ggml.padding_token_id'),
    addBos: metaBool(meta, 'tokenizer.ggml.add_bos_token', true, src),
    addEos: metaBool(meta, 'tokenizer.ggml.add_eos_token', false, src),
    addSpacePrefix: metaBool(meta, 'tokenizer.ggml.add_space_prefix', true, src),
  };
}

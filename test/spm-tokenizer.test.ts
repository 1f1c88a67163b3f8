import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { readGguf, type GgufValue } from '../src/io/gguf.js';
import {
  mergesFromScores,
  sentencePieceToHfTokenizerJson,
  writeHfTokenizerFiles,
} from '../src/io/gguf-tokenizer-json.js';
import { SentencePieceBpeTokenizer, TOKEN_TYPE, type SentencePieceVocab } from '../src/io/spm-tokenizer.js';
import { stories260KPaths } from './helpers/gguf-builder.js';

const { model: MODEL, reference: REFERENCE } = stories260KPaths();

interface Reference {
  encodings: Record<string, number[]>;
  greedy: { prompt: string; prompt_tokens: number[]; tokens: number[]; text: string };
  prompt_pair: { clean_text: string; corrupt_text: string; answer_token: string; wrong_token: string };
  tokens: number[];
  patching: { clean: number[]; corrupt: number[]; answer: number; wrong: number };
}

const ref = JSON.parse(fs.readFileSync(REFERENCE, 'utf8')) as Reference;
let meta: Record<string, GgufValue>;
let tok: SentencePieceBpeTokenizer;

beforeAll(() => {
  meta = readGguf(MODEL).metadata;
  tok = SentencePieceBpeTokenizer.fromGgufMetadata(meta, MODEL);
});

/** A few KB of text exercising merges, punctuation, digits, newlines, runs of spaces and non-vocab characters. */
const LONG_TEXT = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.',
  'One day, she saw a big, red ball. "Can I play with it?" she asked her mom. Mom said, "Yes, but be careful!"',
  'Tim and Sue were best friends.\nThey liked to run, jump and laugh together.\n\nThe end.',
  '  Two  spaces   and\ttabs\t, numbers 12345 and 3.14, symbols #@%^&*()[]{}<>~`|\\/',
  'Unicode: café, naïve, résumé, 東京, emoji 😀🎉, snowman ☃, accents é è ê, dashes – — and quotes “ ” ‘ ’ …',
  'Literal byte-token text <0x41> is plain text.',
]
  .join('\n')
  .repeat(6);

describe('SentencePieceBpeTokenizer on stories260K', () => {
  it('reads the vocabulary metadata', () => {
    expect(tok.vocabSize).toBe(512);
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenId).toBe(2);
    expect(tok.unkTokenId).toBe(0);
    expect(tok.padTokenId).toBeNull(); // stored as u32 0xFFFFFFFF = none
    expect(tok.addBos).toBe(true);
    expect(tok.addSpacePrefix).toBe(true);
    expect(tok.idToPiece(0)).toBe('<unk>');
    expect(tok.idToPiece(1)).toBe('<s>');
    expect(tok.idToPiece(3)).toBe('<0x00>');
    expect(tok.idToPiece(ref.patching.answer)).toBe(ref.prompt_pair.answer_token);
    expect(tok.idToPiece(ref.patching.wrong)).toBe(ref.prompt_pair.wrong_token);
    expect(() => tok.idToPiece(512)).toThrow(HooklensError);
    expect(() => tok.idToPiece(-1)).toThrow(/token id -1 is out of range \(vocabulary size 512\)/);
  });

  it('encodes every reference text exactly', () => {
    expect(Object.keys(ref.encodings).length).toBeGreaterThan(0);
    for (const [text, ids] of Object.entries(ref.encodings)) {
      expect(tok.encode(text), text).toEqual(ids);
      expect(tok.encode(text, { addBos: false }), text).toEqual(ids.slice(1));
      expect(tok.encode(text, { addSpecialTokens: false }), text).toEqual(ids.slice(1));
    }
    expect(tok.encode(ref.greedy.prompt)).toEqual(ref.greedy.prompt_tokens);
    expect(tok.encode(ref.prompt_pair.clean_text)).toEqual(ref.patching.clean);
    expect(tok.encode(ref.prompt_pair.corrupt_text)).toEqual(ref.patching.corrupt);
  });

  it('decodes: round trip, dummy prefix stripped, special tokens dropped', () => {
    for (const [text, ids] of Object.entries(ref.encodings)) {
      expect(tok.decode(ids)).toBe(text);
      expect(tok.decode(ids.slice(1))).toBe(text);
      expect(tok.decode(ids, { skipSpecialTokens: false })).toBe(`<s>${text}`);
    }
    expect(tok.decode([1, 403, 407, 2])).toBe('Once upon');
    expect(tok.decode([1, 403, 407, 2], { skipSpecialTokens: false })).toBe('<s>Once upon</s>');
    // Only the first piece loses its '▁'.
    expect(tok.decode([407, 403])).toBe('upon Once');
    expect(tok.decode([])).toBe('');
    expect(tok.encode('')).toEqual([1]);
    expect(tok.encode('', { addBos: false })).toEqual([]);
    expect(tok.encode('x', { addEos: true })).toEqual([...tok.encode('x'), 2]);
  });

  it('reproduces the greedy continuation text', () => {
    const { prompt_tokens: prompt, tokens: all, text } = ref.greedy;
    const fresh = all.slice(prompt.length);
    expect(tok.decode(fresh)).toBe(text);
    const full = tok.decode(all);
    expect(full.startsWith(tok.decode(prompt))).toBe(true);
    expect(full.slice(tok.decode(prompt).length)).toBe(text);
    expect(full).toBe(ref.greedy.prompt + text);
  });

  it('falls back to byte tokens for characters outside the vocabulary', () => {
    const ids = tok.encode('é☃');
    // '▁' and 'é' are pieces; '☃' (E2 98 83) is not.
    expect(ids.map((i) => tok.idToPiece(i))).toEqual(['<s>', '▁', 'é', '<0xE2>', '<0x98>', '<0x83>']);
    expect(tok.decode(ids)).toBe('é☃');
    const emoji = tok.encode('a 😀\n', { addBos: false });
    expect(emoji.map((i) => tok.idToPiece(i))).toEqual(['▁a', '▁', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '<0x0A>']);
    expect(tok.decode(emoji)).toBe('a 😀\n');
    // A dangling partial UTF-8 sequence decodes to U+FFFD, like sentencepiece.
    expect(tok.decode([tok.pieceId('<0xE2>')!])).toBe('\ufffd');
  });

  it('treats special-token spellings in the input as plain text (as sentencepiece does)', () => {
    const ids = tok.encode('<s>x</s>', { addBos: false });
    expect(ids).not.toContain(1);
    expect(ids).not.toContain(2);
    expect(tok.decode(ids)).toBe('<s>x</s>');
  });

  it('round-trips a few KB of mixed text quickly', () => {
    const t0 = performance.now();
    const ids = tok.encode(LONG_TEXT, { addBos: false });
    const ms = performance.now() - t0;
    expect(tok.decode(ids)).toBe(LONG_TEXT);
    expect(ids.length).toBeLessThan(LONG_TEXT.length * 1.5);
    expect(ms).toBeLessThan(2000);
  });
});

describe('SentencePieceBpeTokenizer merge rules (hand-made vocabularies)', () => {
  const N = TOKEN_TYPE.NORMAL;
  function vocab(pieces: [string, number, number?][], extra: Partial<SentencePieceVocab> = {}): SentencePieceVocab {
    return {
      tokens: pieces.map((p) => p[0]),
      scores: pieces.map((p) => p[1]),
      tokenTypes: pieces.map((p) => p[2] ?? N),
      bosTokenId: null,
      eosTokenId: null,
      unkTokenId: 0,
      padTokenId: null,
      addBos: false,
      addEos: false,
      addSpacePrefix: false,
      ...extra,
    };
  }
  const base: [string, number, number?][] = [
    ['<unk>', 0, TOKEN_TYPE.UNKNOWN],
    ['a', -10],
    ['b', -11],
    ['c', -12],
  ];

  it('merges the highest-scoring pair first, ties to the leftmost', () => {
    // "abc": 'bc' (-1) beats 'ab' (-2).
    const t1 = new SentencePieceBpeTokenizer(vocab([...base, ['ab', -2], ['bc', -1]]));
    expect(t1.encode('abc').map((i) => t1.idToPiece(i))).toEqual(['a', 'bc']);
    // "abab": both 'ab' pairs tie; after merging the leftmost, 'abab' is reachable.
    const t2 = new SentencePieceBpeTokenizer(vocab([...base, ['ab', -1], ['ba', -1], ['abab', -3]]));
    expect(t2.encode('abab').map((i) => t2.idToPiece(i))).toEqual(['abab']);
    // "aba" with equal scores for 'ab' and 'ba': leftmost wins.
    const t3 = new SentencePieceBpeTokenizer(vocab([...base, ['ab', -1], ['ba', -1]]));
    expect(t3.encode('aba').map((i) => t3.idToPiece(i))).toEqual(['ab', 'a']);
  });

  it('uses fused unknown tokens when there are no byte tokens', () => {
    const t = new SentencePieceBpeTokenizer(vocab(base));
    expect(t.encode('axyb')).toEqual([1, 0, 2]);
    expect(t.decode([1, 0, 2])).toBe('a \u2047 b');
  });

  it('does not merge into control tokens, resegments unused pieces, keeps user-defined pieces atomic', () => {
    const t = new SentencePieceBpeTokenizer(
      vocab([...base, ['ab', -1, TOKEN_TYPE.CONTROL], ['bc', -2, TOKEN_TYPE.UNUSED], ['abc', -3]]),
    );
    // 'ab' is a control token, never a merge result; 'bc' (unused) merges, then a + bc → 'abc'.
    expect(t.encode('abc').map((i) => t.idToPiece(i))).toEqual(['abc']);
    // 'bc' alone is unused: split back into its halves.
    expect(t.encode('bcb').map((i) => t.idToPiece(i))).toEqual(['b', 'c', 'b']);
    const u = new SentencePieceBpeTokenizer(vocab([...base, ['ab', -1], ['[x]', 0, TOKEN_TYPE.USER_DEFINED]]));
    expect(u.encode('a[x]b').map((i) => u.idToPiece(i))).toEqual(['a', '[x]', 'b']);
  });

  it('rejects unsupported or malformed tokenizer metadata', () => {
    const bad = (m: Record<string, GgufValue>, re: RegExp): void => {
      let err: unknown;
      try {
        SentencePieceBpeTokenizer.fromGgufMetadata(m, 'bad.gguf');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(HooklensError);
      expect((err as Error).message).toMatch(/^bad\.gguf: /);
      expect((err as Error).message).toMatch(re);
    };
    bad({}, /no tokenizer in the GGUF metadata/);
    bad({ ...meta, 'tokenizer.ggml.model': 'gpt2' }, /tokenizer model "gpt2" is not supported yet/);
    bad({ ...meta, 'tokenizer.ggml.scores': [1, 2] }, /'tokenizer\.ggml\.scores' has 2 entries but there are 512 tokens/);
    bad({ ...meta, 'tokenizer.ggml.tokens': [] }, /'tokenizer\.ggml\.tokens' must be a non-empty array of strings/);
    bad({ ...meta, 'tokenizer.ggml.bos_token_id': 9999 }, /'tokenizer\.ggml\.bos_token_id' = 9999 is out of range/);
    bad({ ...meta, 'tokenizer.ggml.add_bos_token': 1 }, /'tokenizer\.ggml\.add_bos_token' must be a boolean/);
  });
});

describe('Hugging Face tokenizer.json export', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-spm-'));
  });
  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('derives merges from scores like SentencePieceExtractor', () => {
    const merges = mergesFromScores({
      tokens: ['<unk>', 'a', 'b', 'c', 'ab', 'abc', 'bc'],
      scores: [0, -10, -11, -12, -1, -3, -2],
      tokenTypes: [TOKEN_TYPE.UNKNOWN, 1, 1, 1, 1, 1, 1],
      bosTokenId: null,
      eosTokenId: null,
      unkTokenId: 0,
      padTokenId: null,
      addBos: false,
      addEos: false,
      addSpacePrefix: true,
    });
    // 'abc' has two splits (a+bc, ab+c), ordered by the ids of their halves.
    expect(merges).toEqual([
      ['a', 'b'],
      ['b', 'c'],
      ['a', 'bc'],
      ['ab', 'c'],
    ]);
  });

  it('loads in @huggingface/transformers offline and matches the reference and this tokenizer', async () => {
    const files = sentencePieceToHfTokenizerJson(meta, MODEL);
    expect(sentencePieceToHfTokenizerJson(tok)).toEqual(files);
    const dir = path.join(tmp, 'stories260K-tokenizer');
    writeHfTokenizerFiles(dir, files);
    const model = files.tokenizerJson.model as { type: string; byte_fallback: boolean; vocab: Record<string, number> };
    expect(model.type).toBe('BPE');
    expect(model.byte_fallback).toBe(true);
    expect(Object.keys(model.vocab)).toHaveLength(512);

    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = '';
    const hf = await AutoTokenizer.from_pretrained(path.resolve(dir), { local_files_only: true });
    expect(hf.bos_token_id).toBe(1);
    expect(hf.eos_token_id).toBe(2);

    for (const [text, ids] of Object.entries(ref.encodings)) {
      expect(hf.encode(text), text).toEqual(ids);
      expect(hf.decode(ids, { skip_special_tokens: true })).toBe(text);
    }
    const { prompt_tokens: prompt, tokens: all, text } = ref.greedy;
    expect(hf.decode(all.slice(prompt.length), { skip_special_tokens: true })).toBe(text);
    expect(hf.decode(all, { skip_special_tokens: true })).toBe(ref.greedy.prompt + text);

    // Same ids as the native tokenizer on varied text (byte fallback, newlines, runs of spaces).
    for (const line of [...LONG_TEXT.split('\n'), LONG_TEXT, 'é☃', ' leading space', 'trailing space ']) {
      expect(hf.encode(line), line).toEqual(tok.encode(line));
      expect(hf.encode(line, { add_special_tokens: false }), line).toEqual(tok.encode(line, { addBos: false }));
    }
    expect(hf.decode(tok.encode(LONG_TEXT), { skip_special_tokens: true })).toBe(LONG_TEXT);
  });
});

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BpeEncoder, trainBpe } from '../src/tokenizers/bpe-trainer.js';
import { loadHfTokenizer } from '../src/tokenizers/hf-tokenizer.js';
import { fail } from '../src/errors.js';

const CORPUS = [
  'Then, Mary and John went to the store. John gave a drink to Mary.',
  'When Sarah and Tom got a ring at the park, Tom decided to give it to Sarah.',
  "Lily's mom said: \"it's 3 o'clock!\" Lily ran home.",
  'Ünïcödé words, tabs\tand  double spaces, emoji 🙂 too.',
];

describe('byte-level BPE trainer', () => {
  it('writes a tokenizer.json that @huggingface/transformers loads and that encodes like the trainer (BOS first), round-trips any text', async () => {
    const bpe = trainBpe(Array.from({ length: 20 }, (_, i) => CORPUS[i % CORPUS.length]), 320);
    expect(bpe.vocab).toHaveLength(320);
    expect(bpe.merges).toHaveLength(320 - 257);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-bpe-'));
    try {
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(bpe.tokenizerJson));
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(bpe.tokenizerConfig));
      const tok = (await loadHfTokenizer(dir)) ?? fail('no tokenizer');
      const enc = new BpeEncoder(bpe.vocab, bpe.merges);
      // Seen and unseen text alike (unseen words fall back to smaller pieces, down to bytes).
      for (const text of [...CORPUS, 'Zorblax and Quimby met at the zoo.', ' leading space', 'x']) {
        const ids = tok.encode(text, { addSpecialTokens: false });
        expect(ids, text).toEqual(enc.encode(text));
        expect(tok.encode(text)).toEqual([0, ...ids]);
        expect(tok.decode(ids)).toBe(text);
      }
      // Frequent words became single tokens; a never-seen name did not.
      expect(enc.encode(' John')).toHaveLength(1);
      expect(enc.encode(' Quimby').length).toBeGreaterThan(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is deterministic and stops when no pair repeats', () => {
    const a = trainBpe(CORPUS, 400);
    const b = trainBpe([...CORPUS], 400);
    expect(a.merges).toEqual(b.merges);
    // Four short documents cannot support 143 merges that occur at least twice.
    expect(a.vocab.length).toBeLessThan(400);
    expect(() => trainBpe(CORPUS, 100)).toThrow(/below the 257 base tokens/);
  });
});

/**
 * The IOI prompt generator (datasets/ioi.ts) and the `ioi-dataset` CLI module: determinism, the
 * ABC corruption touching only S2, BABA/ABBA order, tokenizer filtering with the real stories260K
 * tokenizer and a GPT-2-style word tokenizer, equal token lengths, JSONL output, and errors.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  generateIoiPrompts,
  holdOut,
  IOI_NAMES,
  IOI_OBJECTS,
  IOI_PLACES,
  IOI_SIMPLE_NAMES,
  IOI_SIMPLE_TEMPLATES_ABBA,
  IOI_SIMPLE_TEMPLATES_BABA,
  IOI_TEMPLATES_ABBA,
  IOI_TEMPLATES_BABA,
  singleTokenNames,
  splitHeldOut,
  templateKind,
  toPairsJsonl,
  type IoiPrompt,
} from '../datasets/ioi.js';
import { ioiDatasetCommand } from '../src/cli/ioi-dataset.js';
import { HooklensError } from '../src/errors.js';
import { commonLength, readPairsFile, tokenizePairs } from '../src/patching/pairs.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { loadModel } from '../src/models/load.js';
import type { Tokenizer } from '../src/tokenizers/tokenizer.js';
import { storiesGguf } from './helpers/fixtures.js';

const stripPunct = (w: string) => w.replace(/[.,!?]+$/, '');
const words = (s: string) => s.split(' ');

/** The word index where clean and corrupt differ; exactly one must. */
function diffIndex(p: IoiPrompt): number {
  const a = words(p.clean);
  const b = words(p.corrupt);
  expect(b.length).toBe(a.length);
  const diffs = a.map((w, i) => (w === b[i] ? -1 : i)).filter((i) => i >= 0);
  expect(diffs).toHaveLength(1);
  return diffs[0]!;
}

/** Structural invariants every prompt must satisfy, tokenizer or not. */
function checkPrompt(p: IoiPrompt): void {
  expect(new Set([p.io, p.s, p.corruptName]).size).toBe(3);
  expect(p.answer).toBe(' ' + p.io);
  expect(p.wrong).toBe(' ' + p.s);
  expect(p.answer).not.toBe(p.wrong);
  expect(templateKind(p.template)).toBe(p.kind);
  const w = words(p.clean).map(stripPunct);
  const sAt = w.map((x, i) => (x === p.s ? i : -1)).filter((i) => i >= 0);
  const ioAt = w.map((x, i) => (x === p.io ? i : -1)).filter((i) => i >= 0);
  expect(sAt).toHaveLength(2); // S1 and S2
  expect(ioAt).toHaveLength(1); // IO once; the answer is the next token
  // The corruption replaces exactly S2 (the second subject mention) by C.
  const i = diffIndex(p);
  expect(i).toBe(sAt[1]);
  expect(stripPunct(words(p.corrupt)[i]!)).toBe(p.corruptName);
  // BABA names S first, ABBA names IO first.
  if (p.kind === 'BABA') expect(sAt[0]!).toBeLessThan(ioAt[0]!);
  else expect(ioAt[0]!).toBeLessThan(sAt[0]!);
  expect(ioAt[0]!).toBeLessThan(sAt[1]!);
  expect(p.clean.endsWith(' ')).toBe(false);
}

/**
 * A GPT-2-flavoured word tokenizer: "Ġword" pieces for known words (leading space folded in),
 * unknown words fall apart into characters, punctuation is its own token, and the default encode
 * appends an EOS, so the generator must use addSpecialTokens=false for its checks.
 */
function wordTokenizer(known: string[]): Tokenizer {
  const vocab = new Map<string, number>();
  const id = (piece: string) => {
    if (!vocab.has(piece)) vocab.set(piece, vocab.size + 2);
    return vocab.get(piece)!;
  };
  const knownSet = new Set(known);
  const inverse = () => new Map([...vocab].map(([k, v]) => [v, k]));
  return {
    encode(text, opts) {
      const ids: number[] = [];
      for (const m of text.matchAll(/( ?)([A-Za-z]+|[^A-Za-z ])/g)) {
        const [, space, word] = m;
        if (knownSet.has(word!)) ids.push(id((space ? 'Ġ' : '') + word));
        else [...(space! + word!)].forEach((ch) => ids.push(id(ch === ' ' ? 'Ġ' : ch)));
      }
      return opts?.addSpecialTokens === false ? ids : [...ids, 1];
    },
    decode(ids) {
      const inv = inverse();
      return ids.map((i) => (i === 1 ? '' : (inv.get(i) ?? '?'))).join('').replace(/Ġ/g, ' ');
    },
    bosTokenId: null,
    eosTokenId: 1,
    padTokenId: null,
  };
}

describe('IOI word lists and templates', () => {
  it('mirrors the classic IOI templates in both orders', () => {
    expect(IOI_TEMPLATES_BABA.length).toBeGreaterThanOrEqual(15);
    expect(IOI_TEMPLATES_ABBA).toHaveLength(IOI_TEMPLATES_BABA.length);
    expect(IOI_TEMPLATES_BABA).toContain('Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to');
    expect(IOI_TEMPLATES_ABBA).toContain('Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to');
    for (const t of [...IOI_TEMPLATES_BABA, ...IOI_SIMPLE_TEMPLATES_BABA]) expect(templateKind(t)).toBe('BABA');
    for (const t of [...IOI_TEMPLATES_ABBA, ...IOI_SIMPLE_TEMPLATES_ABBA]) expect(templateKind(t)).toBe('ABBA');
    expect(new Set(IOI_NAMES).size).toBeGreaterThanOrEqual(40);
    expect(new Set(IOI_PLACES).size).toBeGreaterThanOrEqual(15);
    expect(new Set(IOI_OBJECTS).size).toBeGreaterThanOrEqual(15);
  });

  it('rejects malformed templates', () => {
    expect(() => generateIoiPrompts({ n: 1, seed: 0, templates: ['Then [A] and [B] went home. [A] said to'] })).toThrow(/\[B\] \(S\) twice/);
    expect(() => generateIoiPrompts({ n: 1, seed: 0, templates: ['Then [B] and [A] saw [C]. [B] said to'] })).toThrow(/unknown placeholder \[C\]/);
    expect(() => generateIoiPrompts({ n: 1, seed: 0, kind: 'ABBA', templates: IOI_TEMPLATES_BABA })).toThrow(/no ABBA templates/);
  });
});

describe('generateIoiPrompts without a tokenizer', () => {
  it('is deterministic in the seed', () => {
    const a = generateIoiPrompts({ n: 48, seed: 7 });
    expect(generateIoiPrompts({ n: 48, seed: 7 })).toEqual(a);
    const b = generateIoiPrompts({ n: 48, seed: 8 });
    expect(b.map((p) => p.clean)).not.toEqual(a.map((p) => p.clean));
    const simple = generateIoiPrompts({ n: 20, seed: 7, preset: 'simple' });
    expect(generateIoiPrompts({ n: 20, seed: 7, preset: 'simple' })).toEqual(simple);
  });

  it('builds ABC corruptions that change only S2, with both kinds in a mixed set', () => {
    const ps = generateIoiPrompts({ n: 200, seed: 1 });
    expect(ps).toHaveLength(200);
    ps.forEach(checkPrompt);
    expect(new Set(ps.map((p) => p.clean)).size).toBe(200);
    const kinds = ps.map((p) => p.kind);
    expect(kinds.filter((k) => k === 'BABA').length).toBeGreaterThan(60);
    expect(kinds.filter((k) => k === 'ABBA').length).toBeGreaterThan(60);
    expect(new Set(ps.map((p) => p.template)).size).toBeGreaterThan(20);
  });

  it('honours kind', () => {
    for (const kind of ['BABA', 'ABBA'] as const) {
      const ps = generateIoiPrompts({ n: 40, seed: 2, kind });
      ps.forEach(checkPrompt);
      expect(ps.every((p) => p.kind === kind)).toBe(true);
    }
    const first = generateIoiPrompts({ n: 1, seed: 0, kind: 'BABA', templates: ['Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to'], names: ['Mary', 'John', 'Bob'], places: ['store'], objects: ['drink'] })[0]!;
    expect(first.clean).toBe(`Then, ${first.s} and ${first.io} went to the store. ${first.s} gave a drink to`);
    expect(first.corrupt).toBe(`Then, ${first.s} and ${first.io} went to the store. ${first.corruptName} gave a drink to`);
  });

  it('fails on too few names and on impossible n', () => {
    expect(() => generateIoiPrompts({ n: 4, seed: 0, names: ['Mary', 'John'] })).toThrow(HooklensError);
    expect(() => generateIoiPrompts({ n: 4, seed: 0, names: ['Mary', 'John', 'Mary'] })).toThrow(/at least 3 distinct names/);
    // 3 names × 1 template × 1 place × 1 object = 6 distinct prompts.
    const small = { seed: 0, templates: [IOI_TEMPLATES_BABA[0]!], names: ['Mary', 'John', 'Bob'], places: ['store'], objects: ['drink'] };
    expect(generateIoiPrompts({ ...small, n: 6 })).toHaveLength(6);
    expect(() => generateIoiPrompts({ ...small, n: 7 })).toThrow(/only 6 distinct usable prompts .*need 7/);
  });

  it('writes JSONL that patch --pairs can read', () => {
    const ps = generateIoiPrompts({ n: 10, seed: 3 });
    const text = toPairsJsonl(ps);
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(10);
    expect(text.endsWith('\n')).toBe(true);
    lines.forEach((line, i) => {
      const row = JSON.parse(line);
      expect(Object.keys(row)).toEqual(['clean', 'corrupt', 'answer', 'wrong']);
      expect(row).toEqual({ clean: ps[i]!.clean, corrupt: ps[i]!.corrupt, answer: ps[i]!.answer, wrong: ps[i]!.wrong });
    });
  });
});

describe('held-out splits', () => {
  it('holdOut is a deterministic disjoint partition', () => {
    const xs = Array.from({ length: 40 }, (_, i) => i);
    const a = holdOut(xs, 0.25, 5);
    expect(a.test).toHaveLength(10);
    expect([...a.train, ...a.test].sort((x, y) => x - y)).toEqual(xs);
    expect(a.train.filter((x) => a.test.includes(x))).toEqual([]);
    expect(holdOut(xs, 0.25, 5)).toEqual(a);
    expect(holdOut(xs, 0.25, 6).test).not.toEqual(a.test);
    expect(holdOut(xs, 0, 1).test).toEqual([]);
    expect(() => holdOut(xs, 1.5, 1)).toThrow(/fraction/);
  });

  it('splitHeldOut keeps names and templates (with their ABBA twins) disjoint', () => {
    const { train, test } = splitHeldOut({ seed: 0, nameFraction: 0.25, templateFraction: 0.25 });
    expect(train.names.filter((n) => test.names.includes(n))).toEqual([]);
    expect(train.templates.filter((t) => test.templates.includes(t))).toEqual([]);
    expect(test.templates.length).toBeGreaterThan(0);
    expect(test.templates.filter((t) => templateKind(t) === 'ABBA')).toHaveLength(test.templates.length / 2);
    const ps = generateIoiPrompts({ ...test, n: 30, seed: 1 });
    for (const p of ps) {
      expect(test.names).toEqual(expect.arrayContaining([p.io, p.s, p.corruptName]));
      expect(test.templates).toContain(p.template);
    }
  });
});

describe('tokenizer filtering', () => {
  it('works through the Tokenizer interface alone (GPT-2-style word tokenizer)', () => {
    const names = ['Mary', 'John', 'Bob', 'Alice', 'Zebediah'];
    const tok = wordTokenizer(['Then', 'and', 'went', 'to', 'the', 'gave', 'a', 'store', 'park', 'drink', 'ring', ...names.slice(0, 4)]);
    expect(singleTokenNames(tok, names)).toEqual(['Mary', 'John', 'Bob', 'Alice']);
    const ps = generateIoiPrompts({
      n: 30,
      seed: 4,
      templates: [IOI_TEMPLATES_BABA[0]!, IOI_TEMPLATES_ABBA[0]!],
      names,
      places: ['store', 'park', 'garage'],
      objects: ['drink', 'ring', 'kiss'],
      tokenizer: tok,
    });
    expect(ps).toHaveLength(30);
    ps.forEach(checkPrompt);
    const lens = new Set(ps.map((p) => tok.encode(p.clean, { addSpecialTokens: false }).length));
    expect(lens.size).toBe(1); // multi-token places/objects only where every prompt has them
    for (const p of ps) {
      expect(p.io).not.toBe('Zebediah');
      expect(tok.encode(p.corrupt).length).toBe(tok.encode(p.clean).length);
    }
    expect(() => generateIoiPrompts({ n: 2, seed: 0, names: ['Mary', 'Zebediah', 'Xanthippe', 'John'], tokenizer: tok })).toThrow(
      /only 2 of 4 names are single tokens for this tokenizer \(Mary, John\)/,
    );
  });

  describe('with the stories260K tokenizer', () => {
    let model: HookedModel;
    let tok: Tokenizer;
    beforeAll(async () => {
      model = await loadModel(storiesGguf());
      tok = model.tokenizer!;
    });

    it('keeps only names that are one token after a space', () => {
      const single = singleTokenNames(tok, IOI_SIMPLE_NAMES);
      expect(single).toEqual(expect.arrayContaining(['Lily', 'Tim']));
      for (const n of single) expect(tok.encode('Then ' + n, { addSpecialTokens: false }).length).toBe(tok.encode('Then', { addSpecialTokens: false }).length + 1);
      expect(single).not.toContain('Anna');
    });

    it('generates equal-length pairs with single-token answers from the simple set', () => {
      for (const kind of ['mixed', 'BABA', 'ABBA'] as const) {
        const ps = generateIoiPrompts({ n: 24, seed: 0, kind, preset: 'simple', tokenizer: tok });
        expect(ps).toHaveLength(24);
        ps.forEach(checkPrompt);
        const lens = new Set<number>();
        for (const p of ps) {
          const clean = model.encode(p.clean);
          const corrupt = model.encode(p.corrupt);
          expect(corrupt.length).toBe(clean.length);
          lens.add(clean.length);
          for (const tgt of [p.answer, p.wrong]) {
            const withTgt = model.encode(p.clean + tgt);
            expect(withTgt.length).toBe(clean.length + 1);
            expect(withTgt.slice(0, clean.length)).toEqual(clean);
          }
        }
        expect(lens.size).toBe(1);
        expect(generateIoiPrompts({ n: 24, seed: 0, kind, preset: 'simple', tokenizer: tok })).toEqual(ps);
      }
      const a = generateIoiPrompts({ n: 24, seed: 1, preset: 'simple', tokenizer: tok });
      const b = generateIoiPrompts({ n: 24, seed: 2, preset: 'simple', tokenizer: tok });
      expect(a.map((p) => p.clean)).not.toEqual(b.map((p) => p.clean));
    });

    it('fails in one line when too few names are single tokens or n is out of reach', () => {
      let err: unknown;
      try {
        generateIoiPrompts({ n: 8, seed: 0, tokenizer: tok }); // the classic names: none is one stories260K token
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(HooklensError);
      expect((err as Error).message).toMatch(/^ioi: only \d of \d+ names are single tokens for this tokenizer/);
      expect((err as Error).message).not.toContain('\n');
      const few = { templates: IOI_SIMPLE_TEMPLATES_BABA.slice(0, 2), places: ['park', 'zoo', 'garden'], objects: ['ball', 'cake'] };
      expect(() => generateIoiPrompts({ ...few, n: 1000, seed: 0, preset: 'simple', tokenizer: tok })).toThrow(/share one token length .*need 1000/);
    });

    describe('ioi-dataset command', () => {
      let tmp: string;
      beforeAll(() => {
        tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hl-ioi-'));
      });
      afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

      it('writes the pairs file', async () => {
        const out = path.join(tmp, 'pairs.jsonl');
        await ioiDatasetCommand.run(['--model', storiesGguf(), '--n', '20', '--seed', '3', '--simple', '--kind', 'BABA', '--out', out]);
        const rows = fs.readFileSync(out, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l));
        expect(rows).toHaveLength(20);
        const expected = generateIoiPrompts({ n: 20, seed: 3, kind: 'BABA', preset: 'simple', tokenizer: tok });
        expect(rows).toEqual(expected.map((p) => ({ clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong })));
        expect(fs.readdirSync(tmp)).toEqual(['pairs.jsonl']); // no temp file left behind
        // What `patch --pairs` does with it: equal lengths, single-token answers, no warnings.
        const { pairs, warnings } = tokenizePairs(model, readPairsFile(out), out);
        expect(warnings).toEqual([]);
        expect(commonLength(pairs)).toBe(model.encode(rows[0].clean).length);
        for (const p of pairs) expect(p.answer).not.toBe(p.wrong);
      });

      it('reports bad options and impossible sets as one-line errors without writing', async () => {
        const out = path.join(tmp, 'bad.jsonl');
        await expect(ioiDatasetCommand.run(['--model', storiesGguf(), '--kind', 'CABA', '--out', out])).rejects.toThrow(/--kind: expected mixed, BABA or ABBA/);
        await expect(ioiDatasetCommand.run(['--model', storiesGguf(), '--seed', 'x', '--out', out])).rejects.toThrow(/--seed/);
        await expect(ioiDatasetCommand.run(['--model', storiesGguf(), '--n', '0', '--out', out])).rejects.toThrow(/--n/);
        await expect(ioiDatasetCommand.run(['--model', storiesGguf()])).rejects.toThrow(/missing --out/);
        await expect(ioiDatasetCommand.run(['--model', storiesGguf(), '--out', out])).rejects.toThrow(/only 0 of \d+ names are single tokens/);
        expect(fs.existsSync(out)).toBe(false);
        expect(ioiDatasetCommand.usage).toMatch(/--simple/);
      });
    });
  });
});

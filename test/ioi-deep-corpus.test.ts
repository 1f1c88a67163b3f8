import { describe, expect, it } from 'vitest';
import { composeTemplate, deepTrainingBatch, DEEP_NAMES, DEEP_SPLIT, sampleDeepDocument, bpeTrainingTexts } from '../datasets/ioi-deep-corpus.js';
import { fillTemplate, templateKind } from '../datasets/ioi.js';
import { mulberry32 } from '../src/util/random.js';

describe('the deep IOI corpus', () => {
  it('splits names three ways and templates two ways, disjointly', () => {
    const { ioi, otherTextOnly, unseen } = DEEP_NAMES;
    const all = [...ioi, ...otherTextOnly, ...unseen];
    expect(new Set(all).size).toBe(all.length);
    expect(otherTextOnly.length).toBeGreaterThan(20);
    expect(unseen.length).toBeGreaterThan(20);
    for (const t of DEEP_SPLIT.heldOutTemplates) expect(DEEP_SPLIT.train.templates).not.toContain(t);
    // Both name orders and distractor templates on both sides of the split.
    for (const ts of [DEEP_SPLIT.train.templates, DEEP_SPLIT.heldOutTemplates]) {
      expect(new Set(ts.map(templateKind))).toEqual(new Set(['ABBA', 'BABA']));
      expect(ts.some((t) => t.includes('[D]'))).toBe(true);
    }
  });

  it('the template grammar yields valid, varied templates and never a held-out one', () => {
    const rand = mulberry32(3);
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const t = composeTemplate(rand);
      expect(DEEP_SPLIT.heldOutTemplates).not.toContain(t);
      expect((t.match(/\[D\]/g) ?? []).length).toBeLessThanOrEqual(1);
      const { clean } = fillTemplate(t, { io: 'Mary', s: 'John', c: 'Kate', d: 'Paul', place: 'park', object: 'ball' });
      expect(clean).not.toMatch(/\[/);
      seen.add(t);
    }
    expect(seen.size).toBeGreaterThan(500);
  });

  it('unseen names occur in no generated document (only a few in the stories), held-out names in no IOI sentence; the stream depends only on (seed, step)', () => {
    const rand = mulberry32(1);
    const has = (text: string, n: string) => new RegExp(`\\b${n}\\b`).test(text);
    for (let i = 0; i < 3000; i++) {
      const d = sampleDeepDocument(rand, undefined, 0.5);
      if (d.kind !== 'story') for (const n of DEEP_NAMES.unseen) expect(has(d.text, n), `${n} in ${d.kind}`).toBe(false);
      if (d.kind === 'ioi') for (const n of DEEP_NAMES.otherTextOnly) expect(has(d.text, n), `${n} in ioi`).toBe(false);
    }
    const texts = bpeTrainingTexts(3000, 9).join(' ');
    expect(DEEP_NAMES.unseen.filter((n) => has(texts, n)).length).toBeLessThan(DEEP_NAMES.unseen.length / 4);
    const enc = (t: string) => Array.from(t, (c) => c.charCodeAt(0) % 97);
    expect(deepTrainingBatch(enc, 0, 0, 17, 4, 32, undefined, 0.5)).toEqual(deepTrainingBatch(enc, 0, 0, 17, 4, 32, undefined, 0.5));
    expect(deepTrainingBatch(enc, 0, 0, 17, 4, 32)).not.toEqual(deepTrainingBatch(enc, 0, 0, 18, 4, 32));
  });
});

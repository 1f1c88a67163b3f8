import { describe, expect, it } from 'vitest';
import { composeTemplate, composeWideTemplate, pseudoNames, deepTrainingBatch, DEEP_NAMES, DEEP_SPLIT, sampleDeepDocument, bpeTrainingTexts } from '../datasets/ioi-deep-corpus.js';
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

  it('the wide grammar puts S2 in several roles, never yields a held-out template nor its phrases, and keeps phase 1 reproducible', () => {
    const rand = mulberry32(4);
    const seen = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const t = composeWideTemplate(rand, i % 2 ? 0.6 : 0, i % 3 === 0 ? 0.5 : 0);
      expect(DEEP_SPLIT.heldOutTemplates).not.toContain(t);
      for (const phrase of ['sat in', 'were tired', 'Still,', 'brought', 'thinking of', 'far away']) expect(t).not.toContain(phrase);
      expect((t.match(/\[D\]/g) ?? []).length).toBeLessThanOrEqual(1);
      // Exactly one repeated name: [B] twice, [A] once.
      expect([(t.match(/\[B\]/g) ?? []).length, (t.match(/\[A\]/g) ?? []).length]).toEqual([2, 1]);
      seen.add(t);
    }
    expect(seen.size).toBeGreaterThan(2000);
    const all = [...seen];
    // S2 is not always the last clause's subject, the pair sometimes opens the text, [D] comes before and after S2.
    expect(all.filter((t) => /asked \[B\] to|\[B\]'s turn|by \[B\] to/.test(t)).length).toBeGreaterThan(200);
    expect(all.filter((t) => /^\[[AB]\] and/.test(t)).length).toBeGreaterThan(200);
    const dBeforeS2 = (t: string) => t.includes('[D]') && t.indexOf('[D]') < t.lastIndexOf('[B]');
    expect(all.filter(dBeforeS2).length).toBeGreaterThan(100);
    expect(all.filter((t) => t.includes('[D]') && !dBeforeS2(t)).length).toBeGreaterThan(100);
    // S2 in a middle sentence: the closing sentence names nobody but perhaps [D].
    const lastSentence = (t: string) => t.slice(t.lastIndexOf('.') + 1);
    expect(all.filter((t) => !lastSentence(t).includes('[B]')).length).toBeGreaterThan(200);
    // wide = 0 is the default stream (phase 1); wide > 0 changes it.
    const enc = (t: string) => Array.from(t, (c) => c.charCodeAt(0) % 97);
    expect(deepTrainingBatch(enc, 0, 5, 9, 2, 32, { compose: 0, wide: 0, pseudo: 0 })).toEqual(deepTrainingBatch(enc, 0, 5, 9, 2, 32));
    expect(deepTrainingBatch(enc, 0, 5, 9, 2, 32, { wide: 1 })).not.toEqual(deepTrainingBatch(enc, 0, 5, 9, 2, 32));
  });

  it('made-up names are never a real name of any group, and a prompt\'s names differ in their first syllable', () => {
    const rand = mulberry32(6);
    const real = new Set([...DEEP_NAMES.ioi, ...DEEP_NAMES.otherTextOnly, ...DEEP_NAMES.unseen]);
    const all = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const names = pseudoNames(3, rand);
      for (const n of names) {
        expect(real.has(n), n).toBe(false);
        expect(n).toMatch(/^[A-Z][a-z]+$/);
        all.add(n);
      }
      expect(new Set(names.map((n) => n.slice(0, 2))).size).toBeGreaterThanOrEqual(2);
    }
    expect(all.size).toBeGreaterThan(4000);
    expect(pseudoNames(3, mulberry32(2))).toEqual(pseudoNames(3, mulberry32(2)));
  });

  it('unseen names occur in no generated document (only a few in the stories), held-out names in no IOI sentence; the stream depends only on (seed, step)', () => {
    const rand = mulberry32(1);
    const has = (text: string, n: string) => new RegExp(`\\b${n}\\b`).test(text);
    // Held-out names per name-list document, uniform draws vs heldOutShare 0.5.
    const heldOutInLists = [0, 0];
    for (let i = 0; i < 3000; i++) {
      const d = sampleDeepDocument(rand, { compose: 0.25, wide: 0.5, pseudo: 0.3, insert: 0.5, heldOutShare: i % 2 ? 0.5 : 0 });
      if (d.kind !== 'story') for (const n of DEEP_NAMES.unseen) expect(has(d.text, n), `${n} in ${d.kind}`).toBe(false);
      if (d.kind === 'ioi') for (const n of DEEP_NAMES.otherTextOnly) expect(has(d.text, n), `${n} in ioi`).toBe(false);
      if (d.kind === 'names') heldOutInLists[i % 2] += DEEP_NAMES.otherTextOnly.filter((n) => has(d.text, n)).length;
    }
    expect(heldOutInLists[1]).toBeGreaterThan(2 * heldOutInLists[0]);
    // repeat 1: every story document is one text said twice.
    const r2 = mulberry32(3);
    for (let i = 0; i < 200; i++) {
      const d = sampleDeepDocument(r2, { mix: { ioi: 0, story: 1, filler: 0, names: 0 }, repeat: 1 });
      const half = d.text.slice(0, (d.text.length - 1) / 2);
      expect(d.text).toBe(`${half} ${half}`);
    }
    const texts = bpeTrainingTexts(3000, 9).join(' ');
    expect(DEEP_NAMES.unseen.filter((n) => has(texts, n)).length).toBeLessThan(DEEP_NAMES.unseen.length / 4);
    const enc = (t: string) => Array.from(t, (c) => c.charCodeAt(0) % 97);
    expect(deepTrainingBatch(enc, 0, 0, 17, 4, 32, { compose: 0.5 })).toEqual(deepTrainingBatch(enc, 0, 0, 17, 4, 32, { compose: 0.5 }));
    expect(deepTrainingBatch(enc, 0, 0, 17, 4, 32)).not.toEqual(deepTrainingBatch(enc, 0, 0, 18, 4, 32));
  });
});

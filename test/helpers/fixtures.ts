/** Locating the shared reference fixtures; tests fail loudly (not skip) when they are missing. */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export const FIXTURES = process.env.HOOKLENS_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
export const STORIES_GGUF = path.resolve(FIXTURES, '../models/stories260K.gguf');

export function fixturePath(...parts: string[]): string {
  const p = path.join(FIXTURES, ...parts);
  if (!fs.existsSync(p)) {
    throw new Error(`reference fixture missing: ${p} (set HOOKLENS_FIXTURES to the shared/fixtures directory)`);
  }
  return p;
}

export function storiesGguf(): string {
  if (!fs.existsSync(STORIES_GGUF)) throw new Error(`reference model missing: ${STORIES_GGUF}`);
  return STORIES_GGUF;
}

export interface Reference {
  tokens: number[];
  logits: number[];
  logits_shape: number[];
  activations: Record<string, { shape: number[]; values: number[] }>;
  patching: Record<string, unknown>;
  encodings?: Record<string, number[]>;
  greedy?: { prompt: string; prompt_tokens: number[]; tokens: number[]; text: string };
}

export function loadReference(name: 'tiny-gpt2' | 'tiny-llama' | 'tiny-qwen2' | 'stories260K'): Reference {
  const file = name === 'stories260K' ? fixturePath('stories260K-reference.json') : fixturePath(name, 'reference.json');
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

export function modelPath(name: 'tiny-gpt2' | 'tiny-llama' | 'tiny-qwen2' | 'stories260K'): string {
  return name === 'stories260K' ? storiesGguf() : fixturePath(name);
}

/** Largest |a−b| / max(1, |b|): absolute for small values, relative for large ones. */
export function maxScaledDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** Every cached activation has the reference's per-position shape and values (≤ tol, scaled). */
export function expectCacheMatches(cache: { get(name: string): { shape: number[]; dataSync(): ArrayLike<number> } }, activations: Record<string, { shape: number[]; values: number[] }>, tol = 1e-4): void {
  for (const [n, want] of Object.entries(activations)) {
    const act = cache.get(n);
    expect(act.shape.slice(1), n).toEqual(want.shape);
    const diff = maxScaledDiff(act.dataSync(), want.values);
    expect(diff, `${n} max diff ${diff}`).toBeLessThan(tol);
  }
}

/** The `patching` block of a reference file. */
export interface PatchingReference {
  clean: number[];
  corrupt: number[];
  answer: number;
  wrong: number;
  ld_clean: number;
  ld_corrupt: number;
  grids: Record<string, Record<string, number[]> & { shape: number[] }>;
}

export function patchingReference(name: 'tiny-gpt2' | 'tiny-llama' | 'tiny-qwen2' | 'stories260K'): PatchingReference {
  return loadReference(name).patching as unknown as PatchingReference;
}

/** Vision-language fixtures: the shared tiny-llava and the project's own (test/fixtures/vlm, made by scripts/reference/tiny_vlm_reference.py). */
export const VLM_FIXTURES = ['tiny-llava', 'llava-new-siglip-qwen2', 'llava-new-clip-llama-full', 'llava-legacy-siglip-llama'] as const;
export type VlmFixture = (typeof VLM_FIXTURES)[number];

export function vlmPath(name: VlmFixture): string {
  if (name === 'tiny-llava') return fixturePath('tiny-llava');
  const p = path.join(repoRoot, 'test', 'fixtures', 'vlm', name);
  if (!fs.existsSync(p)) throw new Error(`VLM fixture missing: ${p}`);
  return p;
}

export interface VlmReference {
  tokens: number[];
  image_token_index: number;
  n_image_tokens: number;
  logits: number[];
  logits_shape: number[];
  activations: Record<string, { shape: number[]; values: number[] }>;
  patching: {
    answer: number;
    wrong: number;
    clean_image: number;
    corrupt_image: number;
    ld_clean: number;
    ld_corrupt: number;
    grids: Record<string, Record<string, number[]> & { shape: number[] }>;
  };
}

export function vlmReference(name: VlmFixture): VlmReference {
  return JSON.parse(fs.readFileSync(path.join(vlmPath(name), 'reference.json'), 'utf8'));
}

/** An onnx run's logits and hooks against a reference's (≤1e-4 scaled; batch element 0). */
export function expectOnnxMatchesReference(
  r: { logits: { data: ArrayLike<number>; shape: number[] } | null; hooks: Map<string, { data: ArrayLike<number>; shape: number[] }> },
  ref: { logits: number[]; logits_shape: number[]; activations: Record<string, { shape: number[]; values: number[] }> },
): void {
  expect(r.logits!.shape).toEqual([1, ...ref.logits_shape]);
  expect(maxScaledDiff(r.logits!.data, ref.logits)).toBeLessThan(1e-4);
  for (const [n, want] of Object.entries(ref.activations)) {
    const got = r.hooks.get(n)!;
    expect(got.shape.slice(1), n).toEqual(want.shape);
    expect(maxScaledDiff(got.data, want.values), n).toBeLessThan(1e-4);
  }
}

/** The values of a [b, T, ...] activation at the batch's real (unpadded) positions, in order. */
export function realPositions(tokens: { mask: ArrayLike<number>; seqLen: number }, data: ArrayLike<number>, shape: number[]): number[] {
  const per = shape.slice(2).reduce((a, c) => a * c, 1);
  const out: number[] = [];
  for (let b = 0; b < shape[0]; b++) for (let t = 0; t < shape[1]; t++) if (tokens.mask[b * tokens.seqLen + t]) for (let j = 0; j < per; j++) out.push(data[(b * shape[1] + t) * per + j]);
  return out;
}

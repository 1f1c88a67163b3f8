import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertGgufToHf } from '../src/io/gguf-to-hf.js';
import { readSafetensorsDir, writeSafetensorsSharded } from '../src/io/safetensors.js';
import { loadModel } from '../src/models/load.js';
import type { HookedModel } from '../src/hooks/hooked-model.js';
import { decodeContinuation } from '../src/tokenizers/tokenizer.js';
import { loadReference, maxScaledDiff, storiesGguf } from './helpers/fixtures.js';

// stories260K converted to a Hugging Face directory exercises the HF path end to end with a real
// pretrained model and a real vocabulary: config.json → llama adapter, safetensors (single and
// sharded), tokenizer.json through @huggingface/transformers (offline).
describe('stories260K as a Hugging Face directory', () => {
  const ref = loadReference('stories260K');
  let tmp: string;
  let hfDir: string;
  let model: HookedModel;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-hf-'));
    hfDir = path.join(tmp, 'stories260K');
    convertGgufToHf(storiesGguf(), hfDir);
    model = await loadModel(hfDir);
  });
  afterAll(() => {
    model?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('writes a complete directory and refuses to overwrite a non-empty one', () => {
    expect(fs.readdirSync(hfDir).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(() => convertGgufToHf(storiesGguf(), hfDir)).toThrow(/not empty/);
  });

  it('logits and activations match the reference', () => {
    const logits = model.run(ref.tokens);
    expect(maxScaledDiff(logits.dataSync(), ref.logits)).toBeLessThan(1e-4);
    logits.dispose();
    const names = ['blocks.2.attn.hook_pattern', 'blocks.4.hook_resid_post', 'blocks.3.mlp.hook_post'];
    const { logits: l2, cache } = model.runWithCache(ref.tokens, { names });
    for (const n of names) expect(maxScaledDiff(cache.get(n).dataSync(), ref.activations[n].values), n).toBeLessThan(1e-4);
    cache.dispose();
    l2.dispose();
  });

  it('the HF tokenizer encodes exactly like the reference and greedy text is reproduced', () => {
    for (const [text, ids] of Object.entries(ref.encodings!)) expect(model.encode(text), text).toEqual(ids);
    const g = ref.greedy!;
    const tokens = model.generate(model.encode(g.prompt), g.tokens.length - g.prompt_tokens.length);
    expect(tokens).toEqual(g.tokens);
    expect(decodeContinuation(model.tokenizer!, g.prompt_tokens, tokens)).toBe(g.text);
  });

  it('a sharded copy (model.safetensors.index.json) loads to identical logits', async () => {
    const sharded = path.join(tmp, 'sharded');
    fs.mkdirSync(sharded);
    const shards = writeSafetensorsSharded(sharded, readSafetensorsDir(hfDir), 300_000);
    expect(shards.length).toBeGreaterThan(2);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(hfDir, f), path.join(sharded, f));
    const m2 = await loadModel(sharded);
    const a = model.run(ref.tokens);
    const b = m2.run(ref.tokens);
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    a.dispose();
    b.dispose();
    m2.dispose();
  });
});

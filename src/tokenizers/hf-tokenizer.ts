/**
 * Hugging Face tokenizer.json / tokenizer_config.json through @huggingface/transformers, strictly
 * offline (remote models disabled, local files only). Imported lazily: the package is heavy and
 * GGUF models never need it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HooklensError, fail } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

export async function loadHfTokenizer(dir: string): Promise<Tokenizer | null> {
  const abs = path.resolve(dir);
  if (!fs.existsSync(path.join(abs, 'tokenizer.json'))) return null;
  const { AutoTokenizer, env } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = '';
  let tok: Awaited<ReturnType<typeof AutoTokenizer.from_pretrained>>;
  try {
    tok = await AutoTokenizer.from_pretrained(abs, { local_files_only: true });
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${path.join(abs, 'tokenizer.json')}: cannot load tokenizer (${(e as Error).message.split('\n')[0]})`);
  }
  const id = (v: number | undefined | null): number | null => (typeof v === 'number' && v >= 0 ? v : null);
  return {
    encode: (text, opts) => tok.encode(text, { add_special_tokens: opts?.addSpecialTokens ?? true }),
    decode: (ids, opts) => tok.decode(ids, { skip_special_tokens: opts?.skipSpecialTokens ?? true }),
    bosTokenId: id(tok.bos_token_id),
    eosTokenId: id(tok.eos_token_id),
    padTokenId: id(tok.pad_token_id),
  };
}

/**
 * A tokenizer from in-memory tokenizer.json / tokenizer_config.json contents, through the same
 * files on disk users load (a temporary directory, removed afterwards) — for training scripts that
 * evaluate with exactly what they will ship.
 */
export async function hfTokenizerFromJson(tokenizerJson: object, tokenizerConfig: object): Promise<Tokenizer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-tok-'));
  try {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
    return (await loadHfTokenizer(dir))!;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Turn a `--model` argument into a HookedModel: a Hugging Face directory (config.json +
 * safetensors [+ index] + tokenizer files), a `.gguf` file, or a hub id resolved through the local
 * cache / HF_ENDPOINT. Family adapters map config keys and weight names; nothing else differs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail, HooklensError } from '../errors.js';
import { readGguf } from '../io/gguf.js';
import { resolveModelPath, type ResolveModelOptions } from '../io/hub.js';
import { readSafetensorsDir } from '../io/safetensors.js';
import { SentencePieceBpeTokenizer } from '../io/spm-tokenizer.js';
import { HookedModel } from '../hooks/hooked-model.js';
import { loadHfTokenizer } from '../tokenizers/hf-tokenizer.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { initBackend } from '../backend/index.js';
import type { ModelConfig } from './config.js';
import { gpt2Config, gpt2Weights } from './families/gpt2.js';
import { ggufLlamaConfig, ggufLlamaWeights, llamaConfig, llamaWeights } from './families/llama.js';
import type { WeightMap } from './weights.js';

interface Family {
  config(json: Record<string, unknown>, source: string): ModelConfig;
  weights(cfg: ModelConfig, src: WeightMap, source: string): WeightMap;
}

/** HF `model_type` → adapter. Add a family here and in families/. */
const HF_FAMILIES: Record<string, Family> = {
  gpt2: { config: gpt2Config, weights: gpt2Weights },
  llama: { config: (j, s) => llamaConfig(j, 'llama', s), weights: llamaWeights },
  mistral: { config: (j, s) => llamaConfig(j, 'mistral', s), weights: llamaWeights },
  qwen2: { config: (j, s) => llamaConfig(j, 'qwen2', s), weights: llamaWeights },
};

/** GGUF `general.architecture` values that use the llama tensor layout. */
const GGUF_LLAMA_ARCHS = new Set(['llama', 'mistral']);

function checkConfig(cfg: ModelConfig, source: string): void {
  const ints: (keyof ModelConfig)[] = ['nLayers', 'dModel', 'nHeads', 'nKvHeads', 'dHead', 'dMlp', 'dVocab', 'nCtx'];
  for (const k of ints) {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v <= 0) fail(`${source}: invalid config value ${k}=${String(v)}`);
  }
  if (cfg.nHeads % cfg.nKvHeads !== 0) fail(`${source}: ${cfg.nHeads} attention heads are not a multiple of ${cfg.nKvHeads} key/value heads`);
  if (cfg.positional === 'rope' && cfg.rotaryDim % 2 !== 0) fail(`${source}: rotary dimension ${cfg.rotaryDim} is odd`);
}

export function loadHfConfig(dir: string): { cfg: ModelConfig; family: Family } {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) fail(`${dir}: not a model directory (no config.json)`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(`${file}: invalid JSON (${(e as Error).message})`);
  }
  const type = String(json.model_type ?? '');
  const family = HF_FAMILIES[type];
  if (!family) {
    const arch = Array.isArray(json.architectures) ? ` (${json.architectures.join(', ')})` : '';
    fail(`${file}: unsupported architecture model_type='${type}'${arch}; supported: ${Object.keys(HF_FAMILIES).join(', ')}`);
  }
  const cfg = family.config(json, file);
  checkConfig(cfg, file);
  return { cfg, family };
}

function spmAsTokenizer(spm: SentencePieceBpeTokenizer): Tokenizer {
  return {
    encode: (text, opts) => spm.encode(text, opts?.addSpecialTokens === false ? { addBos: false, addEos: false } : {}),
    decode: (ids, opts) => spm.decode(ids, { skipSpecialTokens: opts?.skipSpecialTokens ?? true }),
    bosTokenId: spm.bosTokenId,
    eosTokenId: spm.eosTokenId,
    padTokenId: null,
  };
}

export async function loadGguf(file: string): Promise<HookedModel> {
  const gguf = readGguf(file);
  const arch = String(gguf.metadata['general.architecture'] ?? '');
  if (!GGUF_LLAMA_ARCHS.has(arch)) {
    fail(`${file}: unsupported GGUF architecture '${arch}'; supported: ${[...GGUF_LLAMA_ARCHS].join(', ')}`);
  }
  const cfg = ggufLlamaConfig(gguf.metadata, gguf.tensors, file);
  checkConfig(cfg, file);
  const weights = ggufLlamaWeights(cfg, gguf.tensors, file);
  gguf.tensors.clear();
  const tokenizer = gguf.metadata['tokenizer.ggml.tokens'] ? spmAsTokenizer(SentencePieceBpeTokenizer.fromGgufMetadata(gguf.metadata, file)) : null;
  return new HookedModel(cfg, weights, tokenizer, file);
}

export async function loadHfDir(dir: string): Promise<HookedModel> {
  const { cfg, family } = loadHfConfig(dir);
  const raw = readSafetensorsDir(dir);
  const weights = family.weights(cfg, raw, dir);
  const tokenizer = await loadHfTokenizer(dir);
  return new HookedModel(cfg, weights, tokenizer, dir);
}

/** Load any supported checkpoint; initialises the tfjs backend first. */
export async function loadModel(spec: string, opts: ResolveModelOptions = {}): Promise<HookedModel> {
  if (!spec) fail('no model given (--model PATH)');
  await initBackend();
  const resolved = await resolveModelPath(spec, opts);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(resolved);
  } catch {
    fail(`${spec}: no such file or directory`);
  }
  try {
    if (stat.isDirectory()) return await loadHfDir(resolved);
    if (resolved.endsWith('.gguf') || isGgufFile(resolved)) return await loadGguf(resolved);
    if (resolved.endsWith('.safetensors')) return await loadHfDir(path.dirname(resolved));
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    fail(`${resolved}: ${(e as Error).message.split('\n')[0]}`);
  }
  fail(`${resolved}: not a model (expected a Hugging Face directory or a .gguf file)`);
}

function isGgufFile(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 0);
    return b.toString('latin1') === 'GGUF';
  } finally {
    fs.closeSync(fd);
  }
}

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
import type { HookedModel } from '../hooks/hooked-model.js';
import { StagedModel } from '../hooks/staged-model.js';
import { loadHfTokenizer } from '../tokenizers/hf-tokenizer.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { initBackend } from '../backend/index.js';
import type { BlockConfig, ModelConfig } from './config.js';
import { ConfigFields } from './config-fields.js';
import { llavaConfig, llavaWeights, UNSUPPORTED_VLMS } from './families/llava.js';
import { isVisionTowerType, visionConfig, visionWeights, VISION_TOWER_TYPES } from './families/vision.js';
import { CausalLmGraph, LlavaGraph, VisionTowerGraph, type ModelGraph } from './graph.js';
import { gpt2Config, gpt2Weights } from './families/gpt2.js';
import { ggufLlamaConfig, ggufLlamaWeights, llamaConfig, llamaWeights } from './families/llama.js';
import type { WeightMap } from './weights.js';

interface Family {
  config(json: Record<string, unknown>, source: string): ModelConfig;
  weights(cfg: ModelConfig, src: WeightMap, source: string): WeightMap;
}

/** HF `model_type` → text adapter. Add a family here and in families/. */
const HF_FAMILIES: Record<string, Family> = {
  gpt2: { config: gpt2Config, weights: gpt2Weights },
  llama: { config: (j, s) => llamaConfig(j, 'llama', s), weights: (c, w, s) => llamaWeights(c, w, s) },
  mistral: { config: (j, s) => llamaConfig(j, 'mistral', s), weights: (c, w, s) => llamaWeights(c, w, s) },
  qwen2: { config: (j, s) => llamaConfig(j, 'qwen2', s), weights: (c, w, s) => llamaWeights(c, w, s) },
};

/** Every model_type we load: text families, LLaVA, standalone towers. */
const SUPPORTED = [...Object.keys(HF_FAMILIES), 'llava', ...VISION_TOWER_TYPES];

/** GGUF `general.architecture` values that use the llama tensor layout. */
const GGUF_LLAMA_ARCHS = new Set(['llama', 'mistral']);

function checkBlocks(cfg: BlockConfig, source: string, what = ''): void {
  const ints: (keyof BlockConfig)[] = ['nLayers', 'dModel', 'nHeads', 'nKvHeads', 'dHead', 'dMlp'];
  for (const k of ints) {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v <= 0) fail(`${source}: invalid ${what}config value ${k}=${String(v)}`);
  }
  if (cfg.nHeads % cfg.nKvHeads !== 0) fail(`${source}: ${cfg.nHeads} attention heads are not a multiple of ${cfg.nKvHeads} key/value heads`);
  if (cfg.positional === 'rope' && cfg.rotaryDim % 2 !== 0) fail(`${source}: rotary dimension ${cfg.rotaryDim} is odd`);
}

function checkConfig(cfg: ModelConfig, source: string, what = ''): void {
  checkBlocks(cfg, source, what);
  for (const k of ['dVocab', 'nCtx'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) fail(`${source}: invalid ${what}config value ${k}=${String(cfg[k])}`);
  }
}

function readConfigJson(dir: string): { file: string; json: Record<string, unknown> } {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) fail(`${dir}: not a model directory (no config.json)`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(`${file}: config is not a JSON object`);
  return { file, json: json as Record<string, unknown> };
}

function modelType(json: Record<string, unknown>, file: string): string {
  const type = String(json.model_type ?? '');
  if (UNSUPPORTED_VLMS[type]) {
    fail(`${file}: ${UNSUPPORTED_VLMS[type]} (model_type '${type}') is not supported; vision-language models run as LLaVA (model_type llava: CLIP/SigLIP tower, MLP projector, Llama/Qwen2/Mistral language model)`);
  }
  if (!SUPPORTED.includes(type)) {
    const arch = Array.isArray(json.architectures) ? ` (${json.architectures.join(', ')})` : '';
    fail(`${file}: unsupported architecture model_type='${type}'${arch}; supported: ${SUPPORTED.join(', ')}`);
  }
  return type;
}

/** A text model directory's config and adapter (text families only). */
export function loadHfConfig(dir: string): { cfg: ModelConfig; family: Family } {
  const { file, json } = readConfigJson(dir);
  const type = modelType(json, file);
  const family = HF_FAMILIES[type];
  if (!family) fail(`${file}: model_type '${type}' is not a text-only model`);
  const cfg = family.config(json, file);
  checkConfig(cfg, file);
  return { cfg, family };
}

/** config.json → the model graph and the canonical weights it needs. */
export function hfGraph(dir: string): { graph: ModelGraph; weights: (src: WeightMap) => WeightMap } {
  const { file, json } = readConfigJson(dir);
  const type = modelType(json, file);
  const family = HF_FAMILIES[type];
  if (family) {
    const cfg = family.config(json, file);
    checkConfig(cfg, file);
    return { graph: new CausalLmGraph(cfg), weights: (src) => family.weights(cfg, src, dir) };
  }
  if (type === 'llava') {
    const c = llavaConfig(json, file);
    checkBlocks(c.vision, file, 'vision_config ');
    checkConfig(c.text, file, 'text_config ');
    return { graph: new LlavaGraph(c.vision, c.text, c.wiring), weights: (src) => llavaWeights(c, src, dir) };
  }
  if (isVisionTowerType(type)) {
    // A standalone tower: CLIPVisionModel / SiglipVisionModel keep their weights under vision_model.
    const vf = new ConfigFields(json, file);
    const vision = visionConfig(vf, type);
    checkBlocks(vision, file);
    return {
      graph: new VisionTowerGraph(vision),
      weights: (src) => {
        const prefix = ['vision_model.', ''].find((p) => src.has(`${p}embeddings.patch_embedding.weight`));
        if (prefix === undefined) fail(`${dir}: missing tensor 'vision_model.embeddings.patch_embedding.weight'`);
        return visionWeights(vision, src, prefix, dir, vision.postNorm);
      },
    };
  }
  fail(`${file}: unsupported architecture model_type='${type}'`);
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
  return new StagedModel(new CausalLmGraph(cfg), weights, tokenizer, file);
}

export async function loadHfDir(dir: string): Promise<HookedModel> {
  const { graph, weights } = hfGraph(dir);
  const mapped = weights(readSafetensorsDir(dir));
  const tokenizer = await loadHfTokenizer(dir);
  return new StagedModel(graph, mapped, tokenizer, dir);
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

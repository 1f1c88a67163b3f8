/**
 * Llama-family decoders (Llama, Qwen2, Mistral): RMSNorm, RoPE, SwiGLU, GQA. Also maps GGUF
 * 'llama' checkpoints, whose q/k rows are stored for interleaved-pair RoPE: we permute them back
 * to HF's rotate-half layout at load time so one RoPE implementation serves both.
 */
import { fail } from '../../errors.js';
import type { RawTensor } from '../../io/raw-tensor.js';
import type { ModelConfig } from '../config.js';
import { ConfigFields } from '../config-fields.js';
import { take, takeOptional, transpose2d, type WeightMap } from '../weights.js';

type Json = Record<string, unknown>;

export function llamaConfig(json: Json, family: 'llama' | 'qwen2' | 'mistral', source: string): ModelConfig {
  return llamaConfigFrom(new ConfigFields(json, source), family);
}

/** Also reads a VLM's nested text_config (same keys, different place in the file). */
export function llamaConfigFrom(f: ConfigFields, family: 'llama' | 'qwen2' | 'mistral'): ModelConfig {
  const { source } = f;
  const d = f.int('hidden_size');
  const nHeads = f.int('num_attention_heads');
  const dHead = f.int('head_dim', d / nHeads);
  const scaling = f.sub('rope_scaling');
  if (scaling) {
    const type = scaling.str('rope_type', scaling.str('type', 'default'));
    if (type !== 'default') fail(`${source}: unsupported rope_scaling '${type}'`);
  }
  return {
    architecture: family,
    nLayers: f.int('num_hidden_layers'),
    dModel: d,
    nHeads,
    nKvHeads: f.int('num_key_value_heads', nHeads),
    dHead,
    dMlp: f.int('intermediate_size'),
    dVocab: f.int('vocab_size'),
    nCtx: f.int('max_position_embeddings', 2048),
    norm: 'rmsnorm',
    normEps: f.num('rms_norm_eps', 1e-6),
    positional: 'rope',
    ropeTheta: f.num('rope_theta', 10000),
    rotaryDim: dHead,
    mlp: 'gated',
    act: f.act('hidden_act', 'silu'),
    qkvBias: family === 'qwen2' || f.bool('attention_bias', false),
    attnOutBias: f.bool('attention_bias', false),
    mlpBias: f.bool('mlp_bias', false),
    unembedBias: false,
    tiedEmbeddings: f.bool('tie_word_embeddings', false),
    causal: true,
    bosTokenId: f.optTokenId('bos_token_id'),
    eosTokenId: f.optTokenId('eos_token_id'),
    padTokenId: f.optTokenId('pad_token_id'),
  };
}

/** Map per-layer tensors given a naming function; shared by HF and GGUF layouts. */
function mapLlamaWeights(
  cfg: ModelConfig,
  src: WeightMap,
  source: string,
  names: {
    embed: string;
    norm: string;
    head: string;
    layer: (l: number, part: 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down' | 'ln1' | 'ln2', kind: 'weight' | 'bias') => string;
  },
  qkRows: (t: RawTensor, nHeads: number) => RawTensor,
): WeightMap {
  const { dModel: d, dMlp: m, dVocab: V, nHeads, nKvHeads, dHead } = cfg;
  const out: WeightMap = new Map();
  const W_E = take(src, names.embed, [V, d], source);
  out.set('embed.W_E', W_E);
  const linear = (name: string, shape: [number, number]) => transpose2d(take(src, name, shape, source));
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = `blocks.${l}.`;
    const w = (part: Parameters<typeof names.layer>[1]) => names.layer(l, part, 'weight');
    const bias = (part: Parameters<typeof names.layer>[1]) => names.layer(l, part, 'bias');
    out.set(b + 'ln1.w', take(src, w('ln1'), [d], source));
    out.set(b + 'ln2.w', take(src, w('ln2'), [d], source));
    out.set(b + 'attn.W_Q', transpose2d(qkRows(take(src, w('q'), [nHeads * dHead, d], source), nHeads)));
    out.set(b + 'attn.W_K', transpose2d(qkRows(take(src, w('k'), [nKvHeads * dHead, d], source), nKvHeads)));
    out.set(b + 'attn.W_V', linear(w('v'), [nKvHeads * dHead, d]));
    out.set(b + 'attn.W_O', linear(w('o'), [d, nHeads * dHead]));
    if (cfg.qkvBias) {
      out.set(b + 'attn.b_Q', qkRows(take(src, bias('q'), [nHeads * dHead], source), nHeads));
      out.set(b + 'attn.b_K', qkRows(take(src, bias('k'), [nKvHeads * dHead], source), nKvHeads));
      out.set(b + 'attn.b_V', take(src, bias('v'), [nKvHeads * dHead], source));
    }
    if (cfg.attnOutBias) out.set(b + 'attn.b_O', take(src, bias('o'), [d], source));
    out.set(b + 'mlp.W_gate', linear(w('gate'), [m, d]));
    out.set(b + 'mlp.W_in', linear(w('up'), [m, d]));
    out.set(b + 'mlp.W_out', linear(w('down'), [d, m]));
    if (cfg.mlpBias) {
      out.set(b + 'mlp.b_gate', take(src, bias('gate'), [m], source));
      out.set(b + 'mlp.b_in', take(src, bias('up'), [m], source));
      out.set(b + 'mlp.b_out', take(src, bias('down'), [d], source));
    }
  }
  out.set('ln_final.w', take(src, names.norm, [d], source));
  const head = cfg.tiedEmbeddings ? W_E : takeOptional(src, names.head, [V, d], source);
  if (!head) fail(`${source}: missing tensor '${names.head}' (and embeddings are not tied)`);
  out.set('unembed.W_U', transpose2d(head));
  return out;
}

const HF_PARTS = {
  q: 'self_attn.q_proj',
  k: 'self_attn.k_proj',
  v: 'self_attn.v_proj',
  o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj',
  up: 'mlp.up_proj',
  down: 'mlp.down_proj',
  ln1: 'input_layernorm',
  ln2: 'post_attention_layernorm',
} as const;

/**
 * HF Llama-family weights. `at` gives where the decoder sits inside the checkpoint (a VLM nests
 * it: 'language_model.model.' with head 'language_model.lm_head.weight', or
 * 'model.language_model.' with 'lm_head.weight'); by default 'model.' or nothing.
 */
export function llamaWeights(cfg: ModelConfig, src: WeightMap, source: string, at?: { base: string; head: string }): WeightMap {
  const p = at?.base ?? (src.has('model.embed_tokens.weight') ? 'model.' : '');
  return mapLlamaWeights(
    cfg,
    src,
    source,
    {
      embed: `${p}embed_tokens.weight`,
      norm: `${p}norm.weight`,
      head: at?.head ?? 'lm_head.weight',
      layer: (l, part, kind) => `${p}layers.${l}.${HF_PARTS[part]}.${kind}`,
    },
    (t) => t,
  );
}

const GGUF_PARTS = {
  q: 'attn_q',
  k: 'attn_k',
  v: 'attn_v',
  o: 'attn_output',
  gate: 'ffn_gate',
  up: 'ffn_up',
  down: 'ffn_down',
  ln1: 'attn_norm',
  ln2: 'ffn_norm',
} as const;

/**
 * Undo llama.cpp's q/k permutation: within each head GGUF row 2i+j holds HF row j*(dh/2)+i
 * (interleaved pairs vs. rotate-half). Works for weights [rows, in] and biases [rows].
 */
export function unpermuteInterleavedRope(t: RawTensor, nHeads: number): RawTensor {
  const rows = t.shape[0];
  const rowLen = t.shape.length === 2 ? t.shape[1] : 1;
  const dh = rows / nHeads;
  const half = dh / 2;
  const out = new Float32Array(t.data.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * dh + 2 * i + j) * rowLen;
        const to = (h * dh + j * half + i) * rowLen;
        out.set(t.data.subarray(from, from + rowLen), to);
      }
    }
  }
  return { shape: [...t.shape], data: out };
}

type Meta = Record<string, unknown>;

function validId(v: unknown, vocab: number): number | null {
  const n = Number(v);
  return v != null && Number.isInteger(n) && n >= 0 && n < vocab ? n : null;
}

export function ggufLlamaConfig(meta: Meta, tensors: WeightMap, source: string): ModelConfig {
  const arch = String(meta['general.architecture'] ?? '');
  // Same typed reads as config.json: a GGUF value of the wrong type is refused, not coerced.
  const archKeys = Object.fromEntries(Object.entries(meta).filter(([key]) => key.startsWith(`${arch}.`)).map(([key, v]) => [key.slice(arch.length + 1), v]));
  const f = new ConfigFields(archKeys, source, `${arch}.`, 'GGUF metadata');
  const d = f.int('embedding_length');
  const nHeads = f.int('attention.head_count');
  const embd = tensors.get('token_embd.weight');
  if (!embd) fail(`${source}: missing tensor 'token_embd.weight'`);
  const tokens = meta['tokenizer.ggml.tokens'];
  const dHead = f.int('attention.key_length', d / nHeads);
  return {
    architecture: arch,
    nLayers: f.int('block_count'),
    dModel: d,
    nHeads,
    nKvHeads: f.int('attention.head_count_kv', nHeads),
    dHead,
    dMlp: f.int('feed_forward_length'),
    dVocab: Array.isArray(tokens) ? tokens.length : embd.shape[0],
    nCtx: f.int('context_length', 2048),
    norm: 'rmsnorm',
    normEps: f.num('attention.layer_norm_rms_epsilon', 1e-5),
    positional: 'rope',
    ropeTheta: f.num('rope.freq_base', 10000),
    rotaryDim: f.int('rope.dimension_count', dHead),
    mlp: 'gated',
    act: 'silu',
    qkvBias: tensors.has('blk.0.attn_q.bias'),
    attnOutBias: tensors.has('blk.0.attn_output.bias'),
    mlpBias: false,
    unembedBias: false,
    tiedEmbeddings: !tensors.has('output.weight'),
    causal: true,
    bosTokenId: validId(meta['tokenizer.ggml.bos_token_id'], embd.shape[0]),
    eosTokenId: validId(meta['tokenizer.ggml.eos_token_id'], embd.shape[0]),
    // llama.cpp writes 0xFFFFFFFF for "no padding token".
    padTokenId: validId(meta['tokenizer.ggml.padding_token_id'], embd.shape[0]),
  };
}

export function ggufLlamaWeights(cfg: ModelConfig, src: WeightMap, source: string): WeightMap {
  return mapLlamaWeights(
    cfg,
    src,
    source,
    {
      embed: 'token_embd.weight',
      norm: 'output_norm.weight',
      head: 'output.weight',
      layer: (l, part, kind) => `blk.${l}.${GGUF_PARTS[part]}.${kind}`,
    },
    unpermuteInterleavedRope,
  );
}

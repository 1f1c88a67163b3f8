/**
 * Convert a llama-family GGUF file (F32/F16/BF16/Q8_0, dequantised to F32) into a Hugging Face
 * directory: config.json (LlamaForCausalLM), model.safetensors with HF tensor names and the
 * rotate-half q/k layout, tokenizer.json + tokenizer_config.json. The output directory appears
 * only when complete (built in a temp sibling, then renamed).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../errors.js';
import { ggufLlamaConfig, unpermuteInterleavedRope } from '../models/families/llama.js';
import { readGguf } from './gguf.js';
import { sentencePieceToHfTokenizerJson, writeHfTokenizerFiles } from './gguf-tokenizer-json.js';
import type { RawTensor } from './raw-tensor.js';
import { writeSafetensors } from './safetensors.js';
import { tempPathFor } from './atomic.js';

const PARTS: Record<string, string> = {
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  ffn_gate: 'mlp.gate_proj',
  ffn_up: 'mlp.up_proj',
  ffn_down: 'mlp.down_proj',
  attn_norm: 'input_layernorm',
  ffn_norm: 'post_attention_layernorm',
};

export function convertGgufToHf(ggufPath: string, outDir: string): void {
  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0) fail(`${outDir}: output directory exists and is not empty`);
  const gguf = readGguf(ggufPath);
  const arch = String(gguf.metadata['general.architecture'] ?? '');
  if (arch !== 'llama') fail(`${ggufPath}: only llama GGUF files can be converted (got '${arch}')`);
  const cfg = ggufLlamaConfig(gguf.metadata, gguf.tensors, ggufPath);
  const tensors = new Map<string, RawTensor>();
  for (const [name, t] of gguf.tensors) {
    if (name === 'token_embd.weight') tensors.set('model.embed_tokens.weight', t);
    else if (name === 'output_norm.weight') tensors.set('model.norm.weight', t);
    else if (name === 'output.weight') tensors.set('lm_head.weight', t);
    else {
      const m = /^blk\.(\d+)\.(\w+)\.(weight|bias)$/.exec(name);
      if (!m || !PARTS[m[2]]) fail(`${ggufPath}: tensor '${name}' has no Hugging Face counterpart`);
      const [, l, part, kind] = m;
      let value = t;
      if (part === 'attn_q') value = unpermuteInterleavedRope(t, cfg.nHeads);
      if (part === 'attn_k') value = unpermuteInterleavedRope(t, cfg.nKvHeads);
      tensors.set(`model.layers.${l}.${PARTS[part]}.${kind}`, value);
    }
  }
  const config = {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    num_hidden_layers: cfg.nLayers,
    hidden_size: cfg.dModel,
    num_attention_heads: cfg.nHeads,
    num_key_value_heads: cfg.nKvHeads,
    head_dim: cfg.dHead,
    intermediate_size: cfg.dMlp,
    vocab_size: cfg.dVocab,
    max_position_embeddings: cfg.nCtx,
    rms_norm_eps: cfg.normEps,
    rope_theta: cfg.ropeTheta,
    hidden_act: 'silu',
    tie_word_embeddings: cfg.tiedEmbeddings,
    attention_bias: cfg.qkvBias,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    torch_dtype: 'float32',
  };
  const tmp = tempPathFor(outDir.replace(/\/+$/, ''));
  fs.mkdirSync(tmp, { recursive: true });
  try {
    writeSafetensors(path.join(tmp, 'model.safetensors'), tensors, { format: 'pt' });
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    if (gguf.metadata['tokenizer.ggml.tokens']) writeHfTokenizerFiles(tmp, sentencePieceToHfTokenizerJson(gguf.metadata, ggufPath));
    if (fs.existsSync(outDir)) fs.rmdirSync(outDir);
    fs.renameSync(tmp, outDir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

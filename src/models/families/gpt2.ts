/** GPT-2 (GPT2LMHeadModel): LayerNorm, learned positions, GELU MLP, Conv1D weights already [in, out]. */
import { fail } from '../../errors.js';
import type { ModelConfig } from '../config.js';
import { ConfigFields } from '../config-fields.js';
import { slice1d, sliceColumns, take, transpose2d, type WeightMap } from '../weights.js';

type Json = Record<string, unknown>;

export function gpt2Config(json: Json, source: string): ModelConfig {
  const f = new ConfigFields(json, source);
  const d = f.int('n_embd');
  const nHeads = f.int('n_head');
  return {
    architecture: 'gpt2',
    nLayers: f.int('n_layer'),
    dModel: d,
    nHeads,
    nKvHeads: nHeads,
    dHead: d / nHeads,
    dMlp: f.int('n_inner', 4 * d),
    dVocab: f.int('vocab_size'),
    nCtx: f.int('n_positions', f.int('n_ctx', 1024)),
    norm: 'layernorm',
    normEps: f.num('layer_norm_epsilon', 1e-5),
    positional: 'learned',
    ropeTheta: 0,
    rotaryDim: 0,
    mlp: 'standard',
    act: f.act('activation_function', 'gelu_new'),
    qkvBias: true,
    attnOutBias: true,
    mlpBias: true,
    unembedBias: false,
    tiedEmbeddings: f.bool('tie_word_embeddings', true),
    causal: true,
    bosTokenId: f.optTokenId('bos_token_id'),
    eosTokenId: f.optTokenId('eos_token_id'),
    padTokenId: f.optTokenId('pad_token_id'),
  };
}

export function gpt2Weights(cfg: ModelConfig, src: WeightMap, source: string): WeightMap {
  const p = src.has('transformer.wte.weight') ? 'transformer.' : '';
  const { dModel: d, dMlp: m, dVocab: V, nCtx } = cfg;
  const out: WeightMap = new Map();
  const W_E = take(src, `${p}wte.weight`, [V, d], source);
  out.set('embed.W_E', W_E);
  out.set('pos_embed.W_pos', take(src, `${p}wpe.weight`, [nCtx, d], source));
  for (let l = 0; l < cfg.nLayers; l++) {
    const h = `${p}h.${l}.`;
    const b = `blocks.${l}.`;
    out.set(b + 'ln1.w', take(src, h + 'ln_1.weight', [d], source));
    out.set(b + 'ln1.b', take(src, h + 'ln_1.bias', [d], source));
    // c_attn fuses Q|K|V along the output axis.
    const cAttn = take(src, h + 'attn.c_attn.weight', [d, 3 * d], source);
    const cAttnB = take(src, h + 'attn.c_attn.bias', [3 * d], source);
    ['Q', 'K', 'V'].forEach((n, i) => {
      out.set(b + `attn.W_${n}`, sliceColumns(cAttn, i * d, d));
      out.set(b + `attn.b_${n}`, slice1d(cAttnB, i * d, d));
    });
    out.set(b + 'attn.W_O', take(src, h + 'attn.c_proj.weight', [d, d], source));
    out.set(b + 'attn.b_O', take(src, h + 'attn.c_proj.bias', [d], source));
    out.set(b + 'ln2.w', take(src, h + 'ln_2.weight', [d], source));
    out.set(b + 'ln2.b', take(src, h + 'ln_2.bias', [d], source));
    out.set(b + 'mlp.W_in', take(src, h + 'mlp.c_fc.weight', [d, m], source));
    out.set(b + 'mlp.b_in', take(src, h + 'mlp.c_fc.bias', [m], source));
    out.set(b + 'mlp.W_out', take(src, h + 'mlp.c_proj.weight', [m, d], source));
    out.set(b + 'mlp.b_out', take(src, h + 'mlp.c_proj.bias', [d], source));
  }
  out.set('ln_final.w', take(src, `${p}ln_f.weight`, [d], source));
  out.set('ln_final.b', take(src, `${p}ln_f.bias`, [d], source));
  const head = cfg.tiedEmbeddings ? W_E : take(src, 'lm_head.weight', [V, d], source);
  out.set('unembed.W_U', transpose2d(head));
  return out;
}

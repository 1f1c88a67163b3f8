/**
 * Canonical GPT-2 weights (our layout) ⇄ a Hugging Face GPT2LMHeadModel directory: the inverse of
 * families/gpt2.ts, so a model trained here loads through the normal HF path (and in transformers).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { RawTensor } from '../io/raw-tensor.js';
import { writeSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/atomic.js';

export interface Gpt2Shape {
  nLayers: number;
  dModel: number;
  nHeads: number;
  dMlp: number;
  dVocab: number;
  nCtx: number;
}

export function gpt2ConfigJson(s: Gpt2Shape, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_type: 'gpt2',
    architectures: ['GPT2LMHeadModel'],
    n_layer: s.nLayers,
    n_embd: s.dModel,
    n_head: s.nHeads,
    n_inner: s.dMlp,
    vocab_size: s.dVocab,
    n_positions: s.nCtx,
    n_ctx: s.nCtx,
    layer_norm_epsilon: 1e-5,
    activation_function: 'gelu_new',
    tie_word_embeddings: true,
    bos_token_id: 0,
    eos_token_id: 0,
    ...extra,
  };
}

function concatColumns(parts: RawTensor[]): RawTensor {
  const rows = parts[0].shape[0];
  const widths = parts.map((p) => p.shape[1]);
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(rows * total);
  for (let r = 0; r < rows; r++) {
    let off = r * total;
    parts.forEach((p, i) => {
      out.set(p.data.subarray(r * widths[i], (r + 1) * widths[i]), off);
      off += widths[i];
    });
  }
  return { shape: [rows, total], data: out };
}

function concat1d(parts: RawTensor[]): RawTensor {
  const total = parts.reduce((a, p) => a + p.data.length, 0);
  const out = new Float32Array(total);
  let off = 0;
  for (const p of parts) (out.set(p.data, off), (off += p.data.length));
  return { shape: [total], data: out };
}

/** HF GPT-2 tensors from canonical weights (tied unembedding: no lm_head). */
export function gpt2HfTensors(w: Map<string, RawTensor>, nLayers: number): Map<string, RawTensor> {
  const get = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`missing canonical weight ${n}`);
    return t;
  };
  const out = new Map<string, RawTensor>([
    ['transformer.wte.weight', get('embed.W_E')],
    ['transformer.wpe.weight', get('pos_embed.W_pos')],
    ['transformer.ln_f.weight', get('ln_final.w')],
    ['transformer.ln_f.bias', get('ln_final.b')],
  ]);
  for (let l = 0; l < nLayers; l++) {
    const b = `blocks.${l}.`;
    const h = `transformer.h.${l}.`;
    out.set(h + 'ln_1.weight', get(b + 'ln1.w'));
    out.set(h + 'ln_1.bias', get(b + 'ln1.b'));
    out.set(h + 'attn.c_attn.weight', concatColumns(['W_Q', 'W_K', 'W_V'].map((n) => get(b + 'attn.' + n))));
    out.set(h + 'attn.c_attn.bias', concat1d(['b_Q', 'b_K', 'b_V'].map((n) => get(b + 'attn.' + n))));
    out.set(h + 'attn.c_proj.weight', get(b + 'attn.W_O'));
    out.set(h + 'attn.c_proj.bias', get(b + 'attn.b_O'));
    out.set(h + 'ln_2.weight', get(b + 'ln2.w'));
    out.set(h + 'ln_2.bias', get(b + 'ln2.b'));
    out.set(h + 'mlp.c_fc.weight', get(b + 'mlp.W_in'));
    out.set(h + 'mlp.c_fc.bias', get(b + 'mlp.b_in'));
    out.set(h + 'mlp.c_proj.weight', get(b + 'mlp.W_out'));
    out.set(h + 'mlp.c_proj.bias', get(b + 'mlp.b_out'));
  }
  return out;
}

/** Write config.json + model.safetensors (+ any extra JSON files) into `dir`, each atomically. */
export function writeGpt2Directory(dir: string, shape: Gpt2Shape, weights: Map<string, RawTensor>, extraFiles: Record<string, unknown> = {}, configExtra: Record<string, unknown> = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), gpt2HfTensors(weights, shape.nLayers), { format: 'pt' });
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(gpt2ConfigJson(shape, configExtra), null, 2) + '\n');
  for (const [name, obj] of Object.entries(extraFiles)) writeFileAtomic(path.join(dir, name), JSON.stringify(obj, null, 2) + '\n');
}

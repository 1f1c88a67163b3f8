/**
 * A GPT-2-small-shaped checkpoint with random weights (12 layers, d 768, 12 heads, vocab 50257),
 * written in Hugging Face layout to a temp dir. Real architecture and sizes, so timings are real;
 * nothing is downloaded.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeSafetensors } from '../src/io/safetensors.js';
import type { RawTensor } from '../src/io/raw-tensor.js';
import { mulberry32 } from '../src/util/random.js';

export const GPT2_SMALL = { n_layer: 12, n_embd: 768, n_head: 12, vocab_size: 50257, n_positions: 1024 };


export function makeGpt2SmallCheckpoint(dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-gpt2-small-'))): string {
  const { n_layer: L, n_embd: d, vocab_size: V, n_positions: P } = GPT2_SMALL;
  const rand = mulberry32(1234);
  const t = (shape: number[], std = 0.02, mean = 0): RawTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = mean + std * (rand() * 2 - 1) * 1.732;
    return { shape, data };
  };
  const tensors: Record<string, RawTensor> = {
    'transformer.wte.weight': t([V, d]),
    'transformer.wpe.weight': t([P, d], 0.01),
    'transformer.ln_f.weight': t([d], 0.05, 1),
    'transformer.ln_f.bias': t([d], 0.01),
  };
  for (let l = 0; l < L; l++) {
    const h = `transformer.h.${l}.`;
    Object.assign(tensors, {
      [h + 'ln_1.weight']: t([d], 0.05, 1),
      [h + 'ln_1.bias']: t([d], 0.01),
      [h + 'attn.c_attn.weight']: t([d, 3 * d]),
      [h + 'attn.c_attn.bias']: t([3 * d], 0.01),
      [h + 'attn.c_proj.weight']: t([d, d]),
      [h + 'attn.c_proj.bias']: t([d], 0.01),
      [h + 'ln_2.weight']: t([d], 0.05, 1),
      [h + 'ln_2.bias']: t([d], 0.01),
      [h + 'mlp.c_fc.weight']: t([d, 4 * d]),
      [h + 'mlp.c_fc.bias']: t([4 * d], 0.01),
      [h + 'mlp.c_proj.weight']: t([4 * d, d]),
      [h + 'mlp.c_proj.bias']: t([d], 0.01),
    });
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], ...GPT2_SMALL, n_ctx: 1024, layer_norm_epsilon: 1e-5, activation_function: 'gelu_new' }),
  );
  return dir;
}

/** Multiply-add FLOPs (×2) of one forward over T tokens, matmuls and attention only. */
export function gpt2ForwardFlops(T: number): number {
  const { n_layer: L, n_embd: d, vocab_size: V } = GPT2_SMALL;
  const perLayer = 2 * T * (d * 3 * d + d * d + 2 * d * 4 * d) + 2 * 2 * T * T * d;
  return L * perLayer + 2 * T * d * V;
}

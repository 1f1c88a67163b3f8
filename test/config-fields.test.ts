/**
 * Config values are read with their JSON type checked: wrong types are refused with one line
 * naming the file and the field, never coerced ("n_layer": "3" is a broken config).
 */
import { describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { ConfigFields } from '../src/models/config-fields.js';
import { gpt2Config } from '../src/models/families/gpt2.js';
import { ggufLlamaConfig, llamaConfig } from '../src/models/families/llama.js';

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(HooklensError);
    const m = (e as Error).message;
    expect(m.split('\n')).toHaveLength(1);
    return m;
  }
  throw new Error('expected a HooklensError');
}

const GPT2 = { model_type: 'gpt2', n_embd: 48, n_head: 4, n_layer: 3, vocab_size: 211, n_positions: 64 };
const LLAMA = { model_type: 'llama', hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 3, intermediate_size: 96, vocab_size: 211 };

describe('typed config fields', () => {
  it('reads integers, numbers, booleans and strings; null means unset', () => {
    const f = new ConfigFields({ a: 3, b: 1e-5, c: true, d: 'x', e: null, g: 3.0 }, 'cfg.json');
    expect([f.int('a'), f.num('b'), f.bool('c', false), f.str('d'), f.int('e', 7), f.int('g')]).toEqual([3, 1e-5, true, 'x', 7, 3]);
    expect(f.optInt('e')).toBeNull();
    expect(f.has('e')).toBe(false);
  });

  it('refuses each wrong type with the field and the value', () => {
    const f = new ConfigFields({ s: '3', fl: 3.5, b: 'false', n: 1, arr: [1], o: { x: 1 } }, 'cfg.json');
    expect(message(() => f.int('s'))).toBe('cfg.json: config field "s" must be an integer, got "3" (a string)');
    expect(message(() => f.int('fl'))).toBe('cfg.json: config field "fl" must be an integer, got 3.5 (a number)');
    expect(message(() => f.bool('b', true))).toBe('cfg.json: config field "b" must be true or false, got "false" (a string)');
    expect(message(() => f.str('n'))).toBe('cfg.json: config field "n" must be a string, got 1 (a number)');
    expect(message(() => f.num('arr'))).toContain('an array');
    expect(message(() => f.int('missing'))).toBe('cfg.json: config field "missing" is missing');
    expect(message(() => f.sub('o')!.str('x'))).toBe('cfg.json: config field "o.x" must be a string, got 1 (a number)');
  });

  it('special-token ids: an integer or a list (Llama 3 lists several EOS ids)', () => {
    const f = new ConfigFields({ a: 2, b: [128001, 128009], c: ['x'], d: null }, 'cfg.json');
    expect([f.optTokenId('a'), f.optTokenId('b'), f.optTokenId('d')]).toEqual([2, 128001, null]);
    expect(message(() => f.optTokenId('c'))).toContain('an integer or a list of integers');
  });

  it('every family refuses strings where numbers belong (consistently, any field)', () => {
    for (const key of ['n_layer', 'n_embd', 'n_head', 'vocab_size', 'n_positions']) {
      expect(message(() => gpt2Config({ ...GPT2, [key]: String((GPT2 as Record<string, unknown>)[key]) }, 'c.json'))).toContain(`"${key}" must be an integer`);
    }
    expect(message(() => gpt2Config({ ...GPT2, layer_norm_epsilon: '1e-5' }, 'c.json'))).toContain('"layer_norm_epsilon" must be a number');
    for (const key of ['num_hidden_layers', 'hidden_size', 'intermediate_size', 'num_attention_heads']) {
      expect(message(() => llamaConfig({ ...LLAMA, [key]: String((LLAMA as Record<string, unknown>)[key]) }, 'llama', 'c.json'))).toContain(`"${key}" must be an integer`);
    }
    expect(message(() => llamaConfig({ ...LLAMA, rope_theta: '10000' }, 'llama', 'c.json'))).toContain('"rope_theta" must be a number');
    expect(message(() => llamaConfig({ ...LLAMA, attention_bias: 1 }, 'llama', 'c.json'))).toContain('"attention_bias" must be true or false');
    expect(llamaConfig({ ...LLAMA, eos_token_id: [5, 6], head_dim: null }, 'llama', 'c.json')).toMatchObject({ eosTokenId: 5, dHead: 16 });
  });

  it('GGUF metadata of the wrong type is refused the same way', () => {
    const tensors = new Map([['token_embd.weight', { shape: [211, 64], data: new Float32Array(0) }]]);
    const meta = { 'general.architecture': 'llama', 'llama.embedding_length': 64, 'llama.attention.head_count': 4, 'llama.block_count': '3', 'llama.feed_forward_length': 96 };
    expect(message(() => ggufLlamaConfig(meta, tensors, 'm.gguf'))).toBe('m.gguf: GGUF metadata "llama.block_count" must be an integer, got "3" (a string)');
    expect(ggufLlamaConfig({ ...meta, 'llama.block_count': 3 }, tensors, 'm.gguf').nLayers).toBe(3);
  });
});

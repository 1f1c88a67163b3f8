/**
 * One internal config for every supported architecture. Family adapters (families/*.ts) map a
 * checkpoint's own config keys onto it; the generic block (transformer.ts) reads nothing else.
 */
export type NormKind = 'layernorm' | 'rmsnorm';
export type PositionalKind = 'learned' | 'rope' | 'none';
export type MlpKind = 'standard' | 'gated';
export type ActivationKind = 'gelu_new' | 'gelu' | 'silu' | 'relu';

export interface ModelConfig {
  /** Family tag, e.g. 'gpt2', 'llama', 'qwen2'. */
  architecture: string;
  nLayers: number;
  dModel: number;
  nHeads: number;
  /** Key/value heads: nHeads for MHA, fewer for GQA, 1 for MQA. */
  nKvHeads: number;
  dHead: number;
  dMlp: number;
  dVocab: number;
  /** Longest sequence the positional scheme supports. */
  nCtx: number;
  norm: NormKind;
  normEps: number;
  positional: PositionalKind;
  ropeTheta: number;
  /** Leading dims of each head that RoPE rotates (HF rotate-half layout). */
  rotaryDim: number;
  mlp: MlpKind;
  act: ActivationKind;
  /** Bias terms present in the checkpoint. */
  qkvBias: boolean;
  attnOutBias: boolean;
  mlpBias: boolean;
  unembedBias: boolean;
  tiedEmbeddings: boolean;
  /** Causal self-attention (language models); a ViT tower sets false. */
  causal: boolean;
  /** Prefix of every hook name, '' for the language model, 'vision.' for a vision tower. */
  hookPrefix: string;
  bosTokenId: number | null;
  eosTokenId: number | null;
  padTokenId: number | null;
}

export const ACTIVATIONS: readonly ActivationKind[] = ['gelu_new', 'gelu', 'silu', 'relu'];

/**
 * Internal configs. Family adapters (families/*.ts) map a checkpoint's own config keys onto
 * them; the generic block (components.ts, stages/blocks.ts) reads nothing but BlockConfig, so a
 * text decoder and a ViT tower run the very same code.
 */
export type NormKind = 'layernorm' | 'rmsnorm';
export type PositionalKind = 'learned' | 'rope' | 'none';
export type MlpKind = 'standard' | 'gated';
export type ActivationKind = 'gelu_new' | 'gelu' | 'silu' | 'relu' | 'quick_gelu';

/** What one stack of pre-norm transformer blocks needs. */
export interface BlockConfig {
  /** Family tag, e.g. 'gpt2', 'llama', 'qwen2', 'clip', 'siglip'. */
  architecture: string;
  nLayers: number;
  dModel: number;
  nHeads: number;
  /** Key/value heads: nHeads for MHA, fewer for GQA, 1 for MQA. */
  nKvHeads: number;
  dHead: number;
  dMlp: number;
  norm: NormKind;
  normEps: number;
  /** Positions inside attention (rope) or added to the embeddings (learned); 'none' for ViTs, whose embedding stage adds them. */
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
  /** Causal self-attention (language models); a ViT tower sets false. */
  causal: boolean;
}

/** A decoder-only language model: token embedding → blocks → final norm → unembedding. */
export interface ModelConfig extends BlockConfig {
  dVocab: number;
  /** Longest sequence the positional scheme supports. */
  nCtx: number;
  unembedBias: boolean;
  tiedEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | null;
  padTokenId: number | null;
}

/** A ViT image tower (CLIP / SigLIP): patch embedding (+ CLS) + learned positions → blocks. */
export interface VisionConfig extends BlockConfig {
  imageSize: number;
  patchSize: number;
  nChannels: number;
  /** CLIP prepends a learned CLS token; SigLIP has none. */
  classToken: boolean;
  /** CLIP's pre_layrnorm on the embeddings. */
  preNorm: boolean;
  /** Post-LayerNorm on the last hidden state of a standalone tower (SigLIP's last_hidden_state). */
  postNorm: boolean;
  /** Patch-grid side (imageSize / patchSize) and sequence length (patches + CLS). */
  gridSize: number;
  nPositions: number;
}

/** How a LLaVA model wires its tower into the language model. */
export interface LlavaWiring {
  /** Index into the tower's hidden states (0 = embedding output, L = last block), already made non-negative. */
  featureLayer: number;
  /** 'default' drops the first position (CLS for CLIP), 'full' keeps all. */
  selectStrategy: 'default' | 'full';
  projectorAct: ActivationKind;
  imageTokenIndex: number;
  /** Image tokens per image in the language model's sequence. */
  nImageTokens: number;
}

export const ACTIVATIONS: readonly ActivationKind[] = ['gelu_new', 'gelu', 'silu', 'relu', 'quick_gelu'];

/** Hugging Face activation names (hidden_act, projector_hidden_act) → ours. */
export function activationKind(name: string): ActivationKind | null {
  switch (name) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return 'gelu_new';
    case 'gelu':
      return 'gelu';
    case 'silu':
    case 'swish':
      return 'silu';
    case 'relu':
      return 'relu';
    case 'quick_gelu':
      return 'quick_gelu';
    default:
      return null;
  }
}

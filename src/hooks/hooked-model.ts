/**
 * HookedModel: the one interface every analysis (patching, circuits, SAEs, caches, probing) is
 * written against. Implemented by StagedModel (hooks/staged-model.ts), which runs any model
 * graph — a text decoder, a LLaVA VLM, a standalone vision tower — with TransformerLens-named
 * hook points that can be read, replaced, cached or differentiated in one pass across stages.
 *
 * Tensor ownership: `run*` return tensors the caller disposes (logits, cache, grads); everything
 * created inside a call is freed before it returns.
 */
import type * as tf from '@tensorflow/tfjs';
import type { ModelConfig, VisionConfig } from '../models/config.js';
import type { GraphExtras, InputDims, ModelGraph } from '../models/graph.js';
import type { ImageBatch } from '../models/image-batch.js';
import type { RelpRule } from '../models/grad-rules.js';
import type { TokenBatch } from '../models/transformer.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import type { ActivationCache } from './activation-cache.js';
import type { HookSelector, HookSpace } from './hook-names.js';
import type { PaddingSide } from './token-batch.js';

export type HookFn = (activation: tf.Tensor, info: { name: string }) => tf.Tensor | void;
export type FwdHook = [HookSelector, HookFn];

/** Prompts (text or ids) with the images their placeholders stand for, in order. */
export interface MultimodalInput {
  prompts: string | string[] | number[] | number[][];
  images: ImageBatch;
}

/** Text(s), token ids (one prompt or several), prompts with images, or a ready batch with its mask. */
export type ModelInput = string | string[] | number[] | number[][] | MultimodalInput | TokenBatch;

/** Keep a subset of positions in the cache: one index (negative counts from the end) or [start, end). */
export type PosSlice = number | [number, number];

export interface RunOptions extends GraphExtras {
  fwdHooks?: FwdHook[];
  /** RelP rules: change only the backward pass (gradients), never forward values. */
  rules?: readonly RelpRule[];
  /** How ragged prompts are padded (default right). */
  padding?: PaddingSide;
}

export interface CacheOptions extends RunOptions {
  /** Hooks to cache; default every hook except opt-in ones (hook_result). */
  names?: HookSelector[] | HookSelector;
  posSlice?: PosSlice;
}

export interface GenerateOptions {
  stopAtEos?: boolean;
  /** Images for the prompts' placeholders, in prompt order. */
  images?: ImageBatch;
  /** Forward hooks: they fire on the prompt pass and on every new position. */
  fwdHooks?: FwdHook[];
  /** Reuse past keys/values (default true); false reruns the whole sequence every step. */
  kvCache?: boolean;
}

export interface GradientResult {
  value: number;
  grads: Map<string, tf.Tensor>;
  cache: ActivationCache | null;
}

export interface HookedModel extends HookSpace {
  readonly graph: ModelGraph;
  /** The language model's config (text models and VLMs); a standalone vision tower has none and says so. */
  readonly cfg: ModelConfig;
  /** The vision tower's config, or null for a text-only model. */
  readonly visionCfg: VisionConfig | null;
  readonly tokenizer: Tokenizer | null;
  /** Where the model came from (path), for messages and cache metadata. */
  readonly source: string;

  /** Every hook name in forward order, all stages. */
  hookNames(): string[];
  /** A hook's activation shape for the given batch sizes. */
  hookShape(name: string, dims: InputDims): number[];
  /** Names matching selectors (literal names must exist, patterns must match something). */
  resolveHooks(selectors: HookSelector[] | HookSelector): string[];

  /** Weight tensor by canonical name (e.g. 'blocks.0.attn.W_O', 'vision.blocks.0.attn.W_Q'); owned by the model. */
  weight(name: string): tf.Tensor;
  hasWeight(name: string): boolean;
  /** Names of every loaded weight (stage-prefixed). */
  weightNames(): string[];

  /** Tokenize, expand image placeholders, pad; images travel with the batch. */
  toTokens(input: ModelInput, padding?: PaddingSide): TokenBatch;
  encode(text: string): number[];
  /** A VLM prompt's single image placeholders expanded to the tower's run of image tokens (text models: unchanged). */
  expandPrompt(ids: readonly number[], where?: string): number[];

  /** Logits [batch, pos, vocab] (a standalone tower: its last hidden state [images, P, d]). */
  run(input: ModelInput, opts?: RunOptions): tf.Tensor3D;
  runWithHooks(input: ModelInput, fwdHooks: FwdHook[], opts?: RunOptions): tf.Tensor3D;
  runWithCache(input: ModelInput, opts?: CacheOptions): { logits: tf.Tensor3D; cache: ActivationCache };
  /**
   * Value of a scalar metric and its gradient with respect to each named hook activation (any
   * stage), from one forward and one backward pass; optionally caches from the same forward.
   */
  gradients(
    input: ModelInput,
    names: HookSelector[] | HookSelector,
    metric: (logits: tf.Tensor3D, tokens: TokenBatch) => tf.Scalar,
    opts?: CacheOptions & { cacheNames?: HookSelector[] | HookSelector },
  ): GradientResult;
  /** Greedy decoding; returns prompt (placeholders expanded) and new token ids. */
  generate(prompt: string | number[], maxNewTokens: number, opts?: GenerateOptions): number[];
  /** Several prompts at once (left-padded); each row: its prompt ids, then its new tokens. */
  generateBatch(prompts: readonly (string | number[])[], maxNewTokens: number, opts?: GenerateOptions): number[][];

  /** Final norm without hooks, for logit lens and direct logit attribution. x: [..., d]. */
  applyFinalNorm(x: tf.Tensor): tf.Tensor;
  /** x [..., d] → logits [..., vocab]. */
  unembed(x: tf.Tensor): tf.Tensor;
  /** Final-position logits per prompt (last real token, whatever the padding). [batch, vocab] */
  finalLogits(logits: tf.Tensor3D, tokens: TokenBatch): tf.Tensor2D;
  dispose(): void;
}

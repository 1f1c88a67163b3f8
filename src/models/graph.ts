/**
 * A model as a small graph of stages — vision tower → projector → splice → language model →
 * head — each stage with its own weight namespace and hook prefix, run by the same generic
 * blocks. Three graphs cover the supported checkpoints:
 *
 *   causal-lm     language_model                              (GPT-2, Llama, Qwen2, Mistral)
 *   llava         vision_tower → projector → splice → language_model
 *   vision-tower  vision_tower                                (standalone CLIP / SigLIP towers)
 *
 * The runtime (hooks/staged-model.ts) owns weights, hooks, caches and gradients and asks the
 * graph only for names, shapes and the forward pass, so every analysis works on every graph.
 */
import type * as tf from '@tensorflow/tfjs';
import { fail } from '../errors.js';
import { allHookNames, lastLayerNeeded, stackHookShape, unknownStackHookMessage, visionHookNames } from '../hooks/hook-names.js';
import type { StageContext } from './components.js';
import type { BlockConfig, LlavaWiring, ModelConfig, VisionConfig } from './config.js';
import { imageCount, type ImageBatch } from './image-batch.js';
import { projectorForward } from './stages/projector.js';
import { layoutImageCount, spliceImageEmbeds, spliceLayout, type SpliceLayout } from './stages/splice.js';
import { checkImages, visionTowerForward } from './stages/vision-tower.js';
import { transformerForward, validateTokens, type ForwardExtras, type TokenBatch } from './transformer.js';

export type StageName = 'vision_tower' | 'projector' | 'language_model';

export interface Stage {
  name: StageName;
  /** Prefix of the stage's weights in the model's weight map ('vision.', 'projector.', ''). */
  weightPrefix: string;
  /** Prefix of the stage's hook names ('vision.'; '' for the projector and the language model). */
  hookPrefix: string;
  cfg: BlockConfig;
}

/** Sizes that hook shapes depend on: prompts, padded length, images. */
export interface InputDims {
  batch: number;
  seqLen: number;
  images: number;
}

export interface GraphExtras extends ForwardExtras {
  /** Resume inside the vision tower instead of the language model (resume.layer is a tower block). */
  resumeStage?: 'vision_tower' | 'language_model';
  /** Stop after this tower block and return its hook_resid_post [images, P, d]: nothing later runs. */
  visionStopAtLayer?: number;
  /** Projector output [images, P, d] computed earlier (e.g. once per generation): tower and projector are skipped. */
  imageEmbeds?: tf.Tensor;
}

/** What a forward pass gets from the runtime. */
export interface GraphRun {
  /** The stage's context: local hook and weight names, scoped by the stage's prefixes. */
  scope(stage: Stage): StageContext;
  /** Every hook some consumer asked for in this pass (hooked, cached or differentiated). */
  requested: ReadonlySet<string>;
}

export interface ModelGraph {
  readonly kind: 'causal-lm' | 'llava' | 'vision-tower';
  readonly stages: readonly Stage[];
  /** The language model's config (null for a standalone tower). */
  readonly lm: ModelConfig | null;
  readonly vision: VisionConfig | null;
  readonly llava: LlavaWiring | null;
  /** For messages: 'gpt2 model', 'llava model (clip tower, llama language model)'. */
  readonly description: string;
  hookNames(): string[];
  hookShape(name: string, dims: InputDims): number[];
  stageOf(name: string): Stage;
  unknownHookMessage(name: string): string;
  /** Check a batch (tokens and images) against the model; one-line errors naming `source`. */
  validate(batch: TokenBatch, source: string): void;
  forward(run: GraphRun, batch: TokenBatch, extras: GraphExtras): tf.Tensor;
  /** The cheapest extras that still fire every hook in `names` (skipping later blocks and stages). */
  stopFor(names: readonly string[]): GraphExtras;
  /** Block from which a resumed run reproduces patching stage `prefix`'s block `layer` exactly. */
  resumeLayer(prefix: string, layer: number): number;
}

function lmStage(cfg: ModelConfig): Stage {
  return { name: 'language_model', weightPrefix: '', hookPrefix: '', cfg };
}

const VISION_PREFIX = 'vision.';

function visionStage(cfg: VisionConfig): Stage {
  return { name: 'vision_tower', weightPrefix: VISION_PREFIX, hookPrefix: VISION_PREFIX, cfg };
}

function localNames(names: readonly string[], prefix: string): string[] {
  return names.filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length));
}

/** Highest tower block any requested hook names (-1 for none). */
export function lastVisionBlockRequested(requested: Iterable<string>): number {
  let last = -1;
  for (const n of requested) {
    const m = /^vision\.blocks\.(\d+)\./.exec(n);
    if (m) last = Math.max(last, Number(m[1]));
  }
  return last;
}

export class CausalLmGraph implements ModelGraph {
  readonly kind = 'causal-lm';
  readonly stages: readonly Stage[];
  readonly vision = null;
  readonly llava = null;
  readonly description: string;
  private readonly names: string[];

  constructor(readonly lm: ModelConfig) {
    this.stages = [lmStage(lm)];
    this.names = allHookNames(lm);
    this.description = `${lm.architecture} model`;
  }

  hookNames(): string[] {
    return this.names;
  }

  hookShape(name: string, dims: InputDims): number[] {
    return stackHookShape(this.lm, name, dims.batch, dims.seqLen);
  }

  stageOf(): Stage {
    return this.stages[0];
  }

  unknownHookMessage(name: string): string {
    return unknownStackHookMessage(this.lm.nLayers, '', name, this.description);
  }

  validate(batch: TokenBatch, source: string): void {
    if (imageCount(batch.images) > 0) fail(`${source}: an image was given to a text-only model (${this.lm.architecture}); images need a vision-language checkpoint`);
    validateTokens(this.lm, batch);
  }

  forward(run: GraphRun, batch: TokenBatch, extras: GraphExtras): tf.Tensor {
    if (extras.resumeStage === 'vision_tower' || extras.visionStopAtLayer !== undefined) fail(`${this.description} has no vision tower`);
    return transformerForward(run.scope(this.stages[0]), batch, extras);
  }

  stopFor(names: readonly string[]): GraphExtras {
    const stop = lastLayerNeeded(this.lm.nLayers, names);
    return stop === undefined ? {} : { stopAtLayer: stop };
  }

  resumeLayer(_prefix: string, layer: number): number {
    return layer;
  }
}

export class LlavaGraph implements ModelGraph {
  readonly kind = 'llava';
  readonly stages: readonly Stage[];
  readonly description: string;
  private readonly names: string[];
  private readonly tower: Stage;
  private readonly projector: Stage;
  private readonly text: Stage;

  constructor(
    readonly vision: VisionConfig,
    readonly lm: ModelConfig,
    readonly llava: LlavaWiring,
  ) {
    this.tower = visionStage(vision);
    // The projector has no blocks; its context carries the language model's config (unused).
    this.projector = { name: 'projector', weightPrefix: 'projector.', hookPrefix: '', cfg: lm };
    this.text = lmStage(lm);
    this.stages = [this.tower, this.projector, this.text];
    this.names = [...visionHookNames(vision, VISION_PREFIX, false), 'hook_image_embeds', ...allHookNames(lm)];
    this.description = `llava model (${vision.architecture} tower, ${lm.architecture} language model)`;
  }

  hookNames(): string[] {
    return this.names;
  }

  hookShape(name: string, dims: InputDims): number[] {
    if (name.startsWith(VISION_PREFIX)) return stackHookShape(this.vision, name.slice(VISION_PREFIX.length), dims.images, this.vision.nPositions);
    if (name === 'hook_image_embeds') return [dims.images, this.llava.nImageTokens, this.lm.dModel];
    return stackHookShape(this.lm, name, dims.batch, dims.seqLen);
  }

  stageOf(name: string): Stage {
    if (name.startsWith(VISION_PREFIX)) return this.tower;
    if (name === 'hook_image_embeds') return this.projector;
    return this.text;
  }

  unknownHookMessage(name: string): string {
    if (name.startsWith(VISION_PREFIX)) return unknownStackHookMessage(this.vision.nLayers, VISION_PREFIX, name, this.description);
    return unknownStackHookMessage(this.lm.nLayers, '', name, this.description);
  }

  layout(batch: TokenBatch, source = 'input'): SpliceLayout {
    return spliceLayout(batch, this.llava.imageTokenIndex, this.llava.nImageTokens, source);
  }

  validate(batch: TokenBatch, source: string): void {
    validateTokens(this.lm, batch);
    const runs = layoutImageCount(this.layout(batch, source));
    const n = imageCount(batch.images);
    if (runs !== n) {
      const placeholder = `image token ${this.llava.imageTokenIndex}`;
      fail(`${source}: the prompts hold ${runs} image placeholder(s) (${placeholder}) but ${n} image(s) were given`);
    }
    if (batch.images) checkImages(this.vision, batch.images, source);
  }

  /** The tower's selected features through the projector: [images, nImageTokens, d]. */
  private imageEmbeds(run: GraphRun, images: ImageBatch | undefined, extras: GraphExtras): tf.Tensor {
    const { featureLayer, selectStrategy, projectorAct } = this.llava;
    const resume = extras.resumeStage === 'vision_tower' ? extras.resume : undefined;
    const features = visionTowerForward(run.scope(this.tower), images ?? null, {
      outputLayer: featureLayer,
      runThrough: lastVisionBlockRequested(run.requested),
      resume,
    });
    const P = features.shape[1]!;
    const selected = selectStrategy === 'default' ? features.slice([0, 1, 0], [-1, P - 1, -1]) : features;
    return projectorForward(run.scope(this.projector), selected, projectorAct);
  }

  forward(run: GraphRun, batch: TokenBatch, extras: GraphExtras): tf.Tensor {
    const lmCtx = run.scope(this.text);
    if (extras.visionStopAtLayer !== undefined) {
      const l = extras.visionStopAtLayer;
      const resume = extras.resumeStage === 'vision_tower' ? extras.resume : undefined;
      return visionTowerForward(run.scope(this.tower), batch.images ?? null, { outputLayer: l + 1, runThrough: l, resume });
    }
    const { resumeStage, ...lmExtras } = extras;
    // Resuming inside the language model: the image embeddings are already in its residual stream.
    if (extras.resume && resumeStage !== 'vision_tower') return transformerForward(lmCtx, batch, lmExtras);
    // A later generation step: the images went into the cache with the prompt, and a generated
    // image-token id is a plain token (as in transformers, which merges images only with pixel_values).
    if ((extras.kvCache?.length ?? 0) > 0) return transformerForward(lmCtx, batch, { ...lmExtras, resume: undefined });
    const layout = this.layout(batch);
    if (layoutImageCount(layout) === 0 && !extras.imageEmbeds) return transformerForward(lmCtx, batch, { ...lmExtras, resume: undefined });
    const imageEmbeds = extras.imageEmbeds ?? this.imageEmbeds(run, batch.images, extras);
    return transformerForward(lmCtx, batch, {
      ...lmExtras,
      resume: undefined,
      spliceEmbeds: (tokenEmbeds) => spliceImageEmbeds(tokenEmbeds, imageEmbeds, layout),
    });
  }

  stopFor(names: readonly string[]): GraphExtras {
    const lmNames = names.filter((n) => !n.startsWith(VISION_PREFIX));
    if (lmNames.length === 0) {
      const stop = lastLayerNeeded(this.vision.nLayers, localNames(names, VISION_PREFIX));
      return stop === undefined ? {} : { visionStopAtLayer: stop };
    }
    const stop = lastLayerNeeded(this.lm.nLayers, lmNames.filter((n) => n !== 'hook_image_embeds'));
    return stop === undefined ? {} : { stopAtLayer: stop };
  }

  resumeLayer(prefix: string, layer: number): number {
    // A tower block past the feature layer does not feed the language model: resuming at the
    // feature layer keeps the features the base run had, and the later blocks still run.
    return prefix === VISION_PREFIX ? Math.min(layer, this.llava.featureLayer) : layer;
  }
}

export class VisionTowerGraph implements ModelGraph {
  readonly kind = 'vision-tower';
  readonly stages: readonly Stage[];
  readonly lm = null;
  readonly llava = null;
  readonly description: string;
  private readonly names: string[];

  constructor(readonly vision: VisionConfig) {
    this.stages = [visionStage(vision)];
    this.names = visionHookNames(vision, VISION_PREFIX, vision.postNorm);
    this.description = `${vision.architecture} vision tower`;
  }

  hookNames(): string[] {
    return this.names;
  }

  hookShape(name: string, dims: InputDims): number[] {
    if (!name.startsWith(VISION_PREFIX)) fail(this.unknownHookMessage(name));
    return stackHookShape(this.vision, name.slice(VISION_PREFIX.length), dims.images, this.vision.nPositions);
  }

  stageOf(): Stage {
    return this.stages[0];
  }

  unknownHookMessage(name: string): string {
    return unknownStackHookMessage(this.vision.nLayers, VISION_PREFIX, name, this.description);
  }

  validate(batch: TokenBatch, source: string): void {
    if (!batch.images || imageCount(batch.images) === 0) fail(`${source}: a vision tower runs on images (--image), not on text`);
    checkImages(this.vision, batch.images, source);
  }

  forward(run: GraphRun, batch: TokenBatch, extras: GraphExtras): tf.Tensor {
    const L = this.vision.nLayers;
    const stop = extras.visionStopAtLayer;
    const resume = extras.resume;
    return visionTowerForward(run.scope(this.stages[0]), batch.images ?? null, {
      outputLayer: stop === undefined ? L : stop + 1,
      runThrough: stop,
      resume,
      postNorm: this.vision.postNorm && stop === undefined,
    });
  }

  stopFor(names: readonly string[]): GraphExtras {
    const stop = lastLayerNeeded(this.vision.nLayers, localNames(names, VISION_PREFIX), ['ln_post']);
    return stop === undefined ? {} : { visionStopAtLayer: stop };
  }

  resumeLayer(_prefix: string, layer: number): number {
    return layer;
  }
}

/**
 * LLaVA (`LlavaForConditionalGeneration`): a CLIP or SigLIP tower, a two-layer projector, and a
 * Llama / Qwen2 / Mistral language model that reads the projected patches as tokens. Both
 * checkpoint layouts real models use are mapped:
 *   llava-hf legacy:      vision_tower.vision_model.*, multi_modal_projector.linear_{1,2},
 *                         language_model.model.*, language_model.lm_head.weight
 *   transformers ≥ 4.52:  model.vision_tower.vision_model.*, model.multi_modal_projector.*,
 *                         model.language_model.*, lm_head.weight
 */
import { fail } from '../../errors.js';
import type { LlavaWiring, ModelConfig, VisionConfig } from '../config.js';
import { ConfigFields } from '../config-fields.js';
import { take, takeOptional, transpose2d, type WeightMap } from '../weights.js';
import { llamaConfigFrom, llamaWeights } from './llama.js';
import { isVisionTowerType, visionConfig, visionWeights, VISION_TOWER_TYPES } from './vision.js';

type Json = Record<string, unknown>;

/** Vision-language model types we recognise but do not run, with what they are. */
export const UNSUPPORTED_VLMS: Record<string, string> = {
  qwen2_vl: 'Qwen2-VL',
  qwen2_5_vl: 'Qwen2.5-VL',
  idefics2: 'Idefics2',
  idefics3: 'Idefics3',
  smolvlm: 'SmolVLM',
  paligemma: 'PaliGemma',
  llava_next: 'LLaVA-NeXT (any-resolution tiling)',
  llava_next_video: 'LLaVA-NeXT-Video',
  llava_onevision: 'LLaVA-OneVision',
  mllama: 'Llama 3.2 Vision',
  mistral3: 'Mistral 3 (Pixtral tower)',
  pixtral: 'Pixtral',
  gemma3: 'Gemma 3',
  internvl: 'InternVL',
  blip_2: 'BLIP-2',
  'blip-2': 'BLIP-2',
  instructblip: 'InstructBLIP',
  clip: 'CLIP (text + vision; use its vision tower alone as clip_vision_model)',
  siglip: 'SigLIP (text + vision; use its vision tower alone as siglip_vision_model)',
};

const TEXT_TYPES = ['llama', 'mistral', 'qwen2'] as const;
type TextType = (typeof TEXT_TYPES)[number];

/** LlamaConfig's defaults: llava-hf configs often list only what differs from them. */
const LLAMA_DEFAULTS: Json = { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, vocab_size: 32000 };

export interface LlavaConfig {
  vision: VisionConfig;
  text: ModelConfig;
  wiring: LlavaWiring;
  projectorBias: boolean;
}

export function llavaConfig(json: Json, source: string): LlavaConfig {
  const f = new ConfigFields(json, source);
  const vf = f.sub('vision_config');
  if (!vf) fail(`${source}: llava config has no "vision_config"`);
  const vType = vf.str('model_type', 'clip_vision_model');
  if (!isVisionTowerType(vType)) fail(`${source}: unsupported vision tower "vision_config.model_type" = '${vType}' (supported: ${VISION_TOWER_TYPES.join(', ')})`);
  const vision = visionConfig(vf, vType);
  const tRaw = f.sub('text_config');
  const tType = tRaw ? tRaw.str('model_type', 'llama') : 'llama';
  if (!(TEXT_TYPES as readonly string[]).includes(tType)) fail(`${source}: unsupported language model "text_config.model_type" = '${tType}' (supported: ${TEXT_TYPES.join(', ')})`);
  const tf = new ConfigFields({ ...LLAMA_DEFAULTS, ...(tRaw?.json ?? {}) }, source, 'text_config.');
  const text = llamaConfigFrom(tf, tType as TextType);
  if (Array.isArray(json.vision_feature_layer)) fail(`${source}: "vision_feature_layer" lists several layers; hooklens supports one feature layer`);
  const L = vision.nLayers;
  const raw = f.int('vision_feature_layer', -2);
  const featureLayer = raw < 0 ? L + 1 + raw : raw;
  if (featureLayer < 0 || featureLayer > L) fail(`${source}: "vision_feature_layer" ${raw} is outside the tower's hidden states (${-(L + 1)}..${L})`);
  const strategy = f.str('vision_feature_select_strategy', 'default');
  if (strategy !== 'default' && strategy !== 'full') fail(`${source}: "vision_feature_select_strategy" must be 'default' or 'full', got '${strategy}'`);
  const imageTokenIndex = f.has('image_token_index') ? f.int('image_token_index') : f.int('image_token_id', 32000);
  if (imageTokenIndex < 0 || imageTokenIndex >= text.dVocab) fail(`${source}: image token id ${imageTokenIndex} is outside the language model's vocabulary (0..${text.dVocab - 1})`);
  return {
    vision,
    text,
    projectorBias: f.bool('multimodal_projector_bias', true),
    wiring: {
      featureLayer,
      selectStrategy: strategy,
      projectorAct: f.act('projector_hidden_act', 'gelu'),
      imageTokenIndex,
      nImageTokens: vision.nPositions - (strategy === 'default' ? 1 : 0),
    },
  };
}

const LAYOUTS = [
  { name: 'llava-hf', vision: 'vision_tower.vision_model.', projector: 'multi_modal_projector.', base: 'language_model.model.', head: 'language_model.lm_head.weight' },
  { name: 'transformers ≥ 4.52', vision: 'model.vision_tower.vision_model.', projector: 'model.multi_modal_projector.', base: 'model.language_model.', head: 'lm_head.weight' },
];

export function llavaWeights(c: LlavaConfig, src: WeightMap, source: string): WeightMap {
  const layout = LAYOUTS.find((l) => src.has(`${l.vision}embeddings.patch_embedding.weight`));
  if (!layout) fail(`${source}: no vision tower weights (expected '${LAYOUTS.map((l) => l.vision + 'embeddings.patch_embedding.weight').join("' or '")}')`);
  const out: WeightMap = new Map([...visionWeights(c.vision, src, layout.vision, source, false)]);
  const dv = c.vision.dModel;
  const d = c.text.dModel;
  const p = layout.projector;
  out.set('projector.W_1', transpose2d(take(src, `${p}linear_1.weight`, [d, dv], source)));
  out.set('projector.W_2', transpose2d(take(src, `${p}linear_2.weight`, [d, d], source)));
  if (c.projectorBias) {
    out.set('projector.b_1', take(src, `${p}linear_1.bias`, [d], source));
    out.set('projector.b_2', take(src, `${p}linear_2.bias`, [d], source));
  } else {
    const b1 = takeOptional(src, `${p}linear_1.bias`, [d], source);
    if (b1) fail(`${source}: projector has biases but the config says multimodal_projector_bias false`);
  }
  for (const [k, v] of llamaWeights(c.text, src, source, { base: layout.base, head: layout.head })) out.set(k, v);
  return out;
}

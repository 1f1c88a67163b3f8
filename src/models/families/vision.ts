/**
 * ViT image towers: CLIP (`clip_vision_model`: CLS token, pre_layrnorm, quick_gelu) and SigLIP
 * (`siglip_vision_model`: no CLS, no pre-norm, patch bias, gelu_pytorch_tanh, post-LayerNorm on
 * its last hidden state). Both are the generic pre-norm block with bidirectional attention;
 * this file only maps config keys and weight names into the 'vision.' weight namespace.
 */
import { fail } from '../../errors.js';
import type { VisionConfig } from '../config.js';
import type { ConfigFields } from '../config-fields.js';
import { take, takeOptional, transpose2d, type WeightMap } from '../weights.js';

export const VISION_TOWER_TYPES = ['clip_vision_model', 'siglip_vision_model'] as const;
export type VisionTowerType = (typeof VISION_TOWER_TYPES)[number];

export function isVisionTowerType(t: string): t is VisionTowerType {
  return (VISION_TOWER_TYPES as readonly string[]).includes(t);
}

/** A tower's config from its own config.json or a VLM's vision_config (HF defaults where unset). */
export function visionConfig(f: ConfigFields, type: VisionTowerType): VisionConfig {
  const clip = type === 'clip_vision_model';
  const d = f.int('hidden_size', 768);
  const nHeads = f.int('num_attention_heads', 12);
  const imageSize = f.int('image_size', 224);
  const patchSize = f.int('patch_size', clip ? 32 : 16);
  if (imageSize % patchSize !== 0) fail(`${f.source}: image_size ${imageSize} is not a multiple of patch_size ${patchSize}`);
  const gridSize = imageSize / patchSize;
  return {
    architecture: clip ? 'clip' : 'siglip',
    nLayers: f.int('num_hidden_layers', 12),
    dModel: d,
    nHeads,
    nKvHeads: nHeads,
    dHead: d / nHeads,
    dMlp: f.int('intermediate_size', 3072),
    norm: 'layernorm',
    normEps: f.num('layer_norm_eps', clip ? 1e-5 : 1e-6),
    positional: 'none',
    ropeTheta: 0,
    rotaryDim: 0,
    mlp: 'standard',
    act: f.act('hidden_act', clip ? 'quick_gelu' : 'gelu_pytorch_tanh'),
    qkvBias: true,
    attnOutBias: true,
    mlpBias: true,
    causal: false,
    imageSize,
    patchSize,
    nChannels: f.int('num_channels', 3),
    classToken: clip,
    preNorm: clip,
    postNorm: !clip,
    gridSize,
    nPositions: gridSize * gridSize + (clip ? 1 : 0),
  };
}

/**
 * Tower weights under `p` (e.g. 'vision_model.', 'vision_tower.vision_model.') → 'vision.*'.
 * `withPostNorm`: keep post_layernorm (a standalone tower's output uses it; LLaVA's does not).
 */
export function visionWeights(cfg: VisionConfig, src: WeightMap, p: string, source: string, withPostNorm: boolean): WeightMap {
  const { dModel: d, dMlp: m, patchSize: ps, nChannels: C, nPositions: P } = cfg;
  const out: WeightMap = new Map();
  const put = (name: string, t: ReturnType<typeof take>) => out.set('vision.' + name, t);
  // Conv2d [d, C, p, p] → rows [C·p·p, d]: the patch embedding is one matMul (stages/vision-tower.ts).
  const conv = take(src, `${p}embeddings.patch_embedding.weight`, [d, C, ps, ps], source);
  put('embed.W_patch', transpose2d({ shape: [d, C * ps * ps], data: conv.data }));
  const bias = takeOptional(src, `${p}embeddings.patch_embedding.bias`, [d], source);
  if (bias) put('embed.b_patch', bias);
  if (cfg.classToken) put('embed.cls', take(src, `${p}embeddings.class_embedding`, [d], source));
  put('pos_embed.W_pos', take(src, `${p}embeddings.position_embedding.weight`, [P, d], source));
  if (cfg.preNorm) {
    put('ln_pre.w', take(src, `${p}pre_layrnorm.weight`, [d], source));
    put('ln_pre.b', take(src, `${p}pre_layrnorm.bias`, [d], source));
  }
  const linear = (name: string, shape: [number, number]) => transpose2d(take(src, name, shape, source));
  for (let l = 0; l < cfg.nLayers; l++) {
    const h = `${p}encoder.layers.${l}.`;
    const b = `blocks.${l}.`;
    put(b + 'ln1.w', take(src, h + 'layer_norm1.weight', [d], source));
    put(b + 'ln1.b', take(src, h + 'layer_norm1.bias', [d], source));
    put(b + 'ln2.w', take(src, h + 'layer_norm2.weight', [d], source));
    put(b + 'ln2.b', take(src, h + 'layer_norm2.bias', [d], source));
    for (const [ours, theirs] of [['Q', 'q_proj'], ['K', 'k_proj'], ['V', 'v_proj'], ['O', 'out_proj']] as const) {
      put(b + `attn.W_${ours}`, linear(`${h}self_attn.${theirs}.weight`, [d, d]));
      put(b + `attn.b_${ours}`, take(src, `${h}self_attn.${theirs}.bias`, [d], source));
    }
    put(b + 'mlp.W_in', linear(h + 'mlp.fc1.weight', [m, d]));
    put(b + 'mlp.b_in', take(src, h + 'mlp.fc1.bias', [m], source));
    put(b + 'mlp.W_out', linear(h + 'mlp.fc2.weight', [d, m]));
    put(b + 'mlp.b_out', take(src, h + 'mlp.fc2.bias', [d], source));
  }
  if (withPostNorm) {
    put('ln_post.w', take(src, `${p}post_layernorm.weight`, [d], source));
    put('ln_post.b', take(src, `${p}post_layernorm.bias`, [d], source));
  }
  return out;
}

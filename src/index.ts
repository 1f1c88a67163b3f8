/** Public API. */
export { initBackend } from './backend/index.js';
export { HooklensError } from './errors.js';
export { loadModel, loadHfDir, loadGguf } from './models/load.js';
export type { ModelConfig, VisionConfig, BlockConfig, LlavaWiring } from './models/config.js';
export type { TokenBatch } from './models/transformer.js';
export type { HookedModel, FwdHook, HookFn, ModelInput, MultimodalInput, CacheOptions, RunOptions } from './hooks/hooked-model.js';
export { StagedModel } from './hooks/staged-model.js';
export { CausalLmGraph, LlavaGraph, VisionTowerGraph, type ModelGraph, type Stage } from './models/graph.js';
export type { ImageBatch } from './models/image-batch.js';
export { ActivationCache } from './hooks/activation-cache.js';
export { allHookNames, hookShape, resolveHookNames, type HookSelector } from './hooks/hook-names.js';
export { padBatch, lastPositions } from './hooks/token-batch.js';
export { writeActivationCache, cachedActivationTensor } from './hooks/cache-to-arrow.js';
export { ArrowCacheWriter, readArrowCache, cacheColumnToArray } from './io/arrow-cache.js';
export { readSafetensors, readSafetensorsDir, writeSafetensors } from './io/safetensors.js';
export { readGguf } from './io/gguf.js';
export { convertGgufToHf } from './io/gguf-to-hf.js';
export { resolveModelPath } from './io/hub.js';

/** Images named on the command line, loaded for the model they go with. */
import fs from 'node:fs';
import path from 'node:path';
import type { HookedModel } from '../hooks/hooked-model.js';
import { loadImageList } from '../io/images.js';
import type { ImageBatch } from '../models/image-batch.js';
import type { PromptSpec } from './args.js';

/** The directory holding the model's preprocessor_config.json. */
function modelDir(model: HookedModel): string {
  return fs.existsSync(model.source) && fs.statSync(model.source).isDirectory() ? model.source : path.dirname(model.source);
}

/** Image files → one batch (undefined when none are named). */
export async function imagesFromFiles(model: HookedModel, files: readonly string[] | undefined): Promise<ImageBatch | undefined> {
  if (!files || files.length === 0) return undefined;
  return loadImageList(files, modelDir(model), model.visionCfg, model.source);
}

/** Prompt specs → expanded ids and images, one entry per prompt. */
export async function promptInputs(model: HookedModel, specs: readonly PromptSpec[], cmd: string): Promise<{ ids: number[]; images?: ImageBatch }[]> {
  const out: { ids: number[]; images?: ImageBatch }[] = [];
  for (const [i, p] of specs.entries()) {
    const where = specs.length > 1 ? `${cmd}: prompt ${i + 1}` : `${cmd}: prompt`;
    const raw = 'text' in p ? model.encode(p.text) : p.tokens;
    const images = await imagesFromFiles(model, p.images);
    out.push({ ids: model.graph.kind === 'vision-tower' ? raw : model.expandPrompt(raw, where), ...(images ? { images } : {}) });
  }
  return out;
}

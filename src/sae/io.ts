/**
 * SAE directories in SAELens layout: `cfg.json` + `sae_weights.safetensors` (+ optional
 * `sparsity.safetensors` holding `sparsity` [d_sae] = log10 feature density). Saving writes the
 * whole directory beside the target and renames it into place, so a failed save leaves the
 * previous contents (or nothing) — never a half-written SAE.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeDirAtomic } from '../io/atomic.js';
import { fail, HooklensError } from '../errors.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { parseSaelensCfg, toSaelensCfg, type SaeConfig } from './config.js';
import { Sae } from './sae.js';

export const SAE_CFG_FILE = 'cfg.json';
export const SAE_WEIGHTS_FILE = 'sae_weights.safetensors';
export const SAE_SPARSITY_FILE = 'sparsity.safetensors';
const SAE_FILES = [SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAE_SPARSITY_FILE];

export interface LoadedSae {
  sae: Sae;
  /** log10 feature density per latent, when the directory has sparsity.safetensors. */
  sparsity?: Float32Array;
}

/** Read and validate `dir/cfg.json` (no tensors are created; usable before the backend is up). */
export function readSaeConfig(dir: string): SaeConfig {
  const file = path.join(dir, SAE_CFG_FILE);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    fail(`${dir}: SAE directory does not exist`);
  }
  if (!st.isDirectory()) fail(`${dir}: not a directory (an SAE is a directory with ${SAE_CFG_FILE} and ${SAE_WEIGHTS_FILE})`);
  if (!fs.existsSync(file)) fail(`${dir}: not an SAE directory (no ${SAE_CFG_FILE})`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(`${file}: invalid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  return parseSaelensCfg(json, file);
}

/** Load an SAE directory; F32, F16 and BF16 weights are converted to float32. */
export function loadSae(dir: string): LoadedSae {
  const cfg = readSaeConfig(dir);
  const weightsFile = path.join(dir, SAE_WEIGHTS_FILE);
  if (!fs.existsSync(weightsFile)) fail(`${dir}: missing ${SAE_WEIGHTS_FILE}`);
  const tensors = readSafetensors(weightsFile).tensors;
  // SAELens used to store an all-ones `scaling_factor` it now drops; anything else changes decode.
  const sf = tensors.get('scaling_factor');
  if (sf) {
    if (!sf.data.every((v) => v === 1)) fail(`${weightsFile}: tensor "scaling_factor" (finetuning scaling) is not supported`);
    tensors.delete('scaling_factor');
  }
  const sae = new Sae(cfg, Object.fromEntries(tensors), weightsFile);
  const sparsityFile = path.join(dir, SAE_SPARSITY_FILE);
  if (!fs.existsSync(sparsityFile)) return { sae };
  try {
    const s = readSafetensors(sparsityFile).tensors.get('sparsity');
    if (!s) fail(`${sparsityFile}: no tensor "sparsity"`);
    if (s.data.length !== cfg.dSae) fail(`${sparsityFile}: tensor "sparsity" has shape [${s.shape.join(', ')}], expected [${cfg.dSae}]`);
    return { sae, sparsity: s.data };
  } catch (e) {
    sae.dispose();
    throw e;
  }
}

export interface SaveSaeOptions {
  /** log10 feature density per latent → sparsity.safetensors. */
  sparsity?: Float32Array;
}

/**
 * Write `sae` to `dir` in SAELens layout (cfg.json keeps every field of the loaded cfg.json).
 * Files are written into a temp directory beside `dir`, which then replaces it; other files
 * already in `dir` are carried over, a stale sparsity.safetensors is not.
 */
export function saveSae(sae: Sae, dir: string, opts: SaveSaeOptions = {}): void {
  const target = path.resolve(dir);
  if (fs.existsSync(target) && !fs.statSync(target).isDirectory()) fail(`${dir}: exists and is not a directory`);
  if (opts.sparsity && opts.sparsity.length !== sae.cfg.dSae) {
    fail(`${dir}: sparsity has ${opts.sparsity.length} values, the SAE has ${sae.cfg.dSae} latents`);
  }
  fs.mkdirSync(path.dirname(target), { recursive: true });
  try {
    writeDirAtomic(
      target,
      (tmp) => {
        fs.writeFileSync(path.join(tmp, SAE_CFG_FILE), JSON.stringify(toSaelensCfg(sae.cfg), null, 2) + '\n');
        writeSafetensors(path.join(tmp, SAE_WEIGHTS_FILE), sae.tensors());
        if (opts.sparsity) writeSafetensors(path.join(tmp, SAE_SPARSITY_FILE), { sparsity: { shape: [sae.cfg.dSae], data: opts.sparsity } });
      },
      // Other files in an existing SAE directory (READMEs, training logs) are kept.
      (f) => !SAE_FILES.includes(f),
    );
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    fail(`${dir}: cannot save SAE (${code ?? String(e).split('\n')[0]})`);
  }
}

/**
 * Resumable training checkpoints for CausalLmTrainer: weights and Adam state as safetensors in a
 * directory, the step in the weights file's metadata. The optimizer file is written first and the
 * weights last, so a checkpoint counts only once its weights (with the step) are complete; each
 * file is written atomically by writeSafetensors.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { CausalLmTrainer } from './causal-lm.js';

const files = (dir: string) => ({ weights: path.join(dir, 'weights.safetensors'), optimizer: path.join(dir, 'optimizer.safetensors') });

/** Restore the trainer from `dir` if it holds a checkpoint; returns the step to continue from (0 without one). */
export async function restoreCheckpoint(trainer: CausalLmTrainer, dir: string): Promise<number> {
  const f = files(dir);
  if (!fs.existsSync(f.weights) || !fs.existsSync(f.optimizer)) return 0;
  const w = readSafetensors(f.weights);
  await trainer.restore(w.tensors, readSafetensors(f.optimizer).tensors);
  return Number(w.metadata.step);
}

export async function saveCheckpoint(trainer: CausalLmTrainer, dir: string, step: number): Promise<void> {
  const f = files(dir);
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(f.optimizer, await trainer.optimizerState(), { step: String(step) });
  writeSafetensors(f.weights, trainer.weights(), { step: String(step) });
}

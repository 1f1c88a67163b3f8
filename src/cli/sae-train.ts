/** `hooklens sae train`: train an SAE on Arrow activation caches (streamed, shuffled, resumable). */
import fs from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { initBackend } from '../backend/index.js';
import { fail } from '../errors.js';
import {
  B_DEC_INITS,
  hasCheckpoint,
  TRAIN_ARCHITECTURES,
  TRAIN_NORMALIZE_MODES,
  trainSae,
  type BDecInit,
  type SaeTrainOptions,
  type TrainArchitecture,
  type TrainNormalizeMode,
  type TrainProgress,
} from '../sae/train.js';
import { parseOptions, parsePositiveInt, printJson, requireString, type Command } from './args.js';

const CMD = 'sae train';

function parseNumber(flag: string, s: string | undefined, test: (x: number) => boolean, what: string): number | undefined {
  if (s === undefined) return undefined;
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v) || !test(v)) fail(`${CMD}: ${flag}: expected ${what}, got '${s}'`);
  return v;
}

function parseChoice<T extends string>(flag: string, s: string | undefined, choices: readonly T[]): T | undefined {
  if (s === undefined) return undefined;
  if (!(choices as readonly string[]).includes(s)) fail(`${CMD}: ${flag}: expected one of ${choices.join(', ')}, got '${s}'`);
  return s as T;
}

function optInt(flag: string, s: string | undefined): number | undefined {
  return s === undefined ? undefined : parsePositiveInt(`${CMD}: ${flag}`, s, 0);
}

function optNonNegInt(flag: string, s: string | undefined): number | undefined {
  return parseNumber(flag, s, (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
}

/** Live progress on an interactive stderr; nothing in CI or when stderr is piped. */
function trainBar(): { update(p: TrainProgress): void; stop(): void } {
  if (!process.stderr.isTTY || process.env.CI) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: 'train [{bar}] {value}/{total} | L0 {l0} | EV {ev} | MSE {mse} | dead {dead}% | {tps} tok/s | ETA {eta_formatted}',
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      const payload = {
        l0: p.l0.toFixed(1),
        ev: p.explainedVariance.toFixed(3),
        mse: p.mse.toPrecision(3),
        dead: (100 * p.deadFraction).toFixed(1),
        tps: Math.round(p.tokensPerSecond),
      };
      if (!started) {
        bar.start(p.totalSteps, p.step, payload);
        started = true;
      } else bar.update(p.step, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

export const saeTrainCommand: Command = {
  name: 'train',
  summary: 'train an SAE (standard/L1, topk, batchtopk) on Arrow activation caches',
  usage: `hooklens sae train --cache FILE.arrow[,FILE2.arrow] --hook NAME --out DIR
                    --architecture standard|topk|batchtopk --d-sae N [--k K] [--l1 λ]
                    (--steps N | --tokens N) [--batch N] [--lr X] [--seed N]
                    [--normalize none|expected_average_only_in] [--resume] [--checkpoint-every N]
                    [--log FILE.jsonl] [--json] [more options below]

  --cache FILES          activation caches from \`hooklens cache\` (comma-separated; rows of all
                         files form one dataset), streamed with a shuffle buffer (bounded memory)
  --hook NAME            hook column to train on, e.g. blocks.2.hook_resid_post
  --out DIR              the trained SAE, SAELens layout (cfg.json, sae_weights.safetensors,
                         sparsity.safetensors), written atomically at the end
  --architecture A       standard (ReLU + L1 penalty, dead latents resampled), topk, batchtopk
                         (AuxK loss on dead latents; batchtopk is saved with its JumpReLU threshold)
  --d-sae N              number of latents
  --k K                  topk/batchtopk: latents per token (batchtopk: on average, may be fractional)
  --l1 λ                 standard: L1 coefficient on Σ f·‖W_dec row‖ (default 1)
  --steps N | --tokens N training length (tokens are rounded up to whole batches)
  --batch N              tokens per step (default 4096)
  --lr X                 Adam learning rate (default 3e-4)
  --lr-warmup-steps N    linear warm-up (default 0)
  --lr-decay-steps N     linear decay to lr/10 over the last N steps (default 0)
  --l1-warmup-steps N    standard: ramp λ over the first N steps (default 0)
  --seed N               weights, shuffling and resampling seed (default 0)
  --normalize MODE       none (default) or expected_average_only_in (scale so E‖x‖ = sqrt(d_in);
                         the factor is stored in cfg.json as norm_scaling_factor)
  --b-dec-init MODE      geometric_median (default), mean or zeros
  --dead-tokens N        a latent is dead after N tokens without firing (default 1000 batches)
  --aux-k-coef X         topk/batchtopk: AuxK coefficient (default 1/32; 0 = off)
  --resample-every N     standard: resample dead latents every N steps (default 2500; 0 = never)
  --exclude-pos0         skip position 0 (BOS) of every prompt
  --checkpoint-every N   checkpoint every N steps (default 1000; 0 = only at the end and on Ctrl-C)
  --checkpoint-dir DIR   default OUT/checkpoint; a loadable SAE plus optimizer and trainer state
  --resume               continue from the checkpoint (same settings; --steps/--tokens may grow)
  --log FILE.jsonl       append the progress reports (L0, MSE, explained variance, dead fraction,
                         tokens/s, ...) as JSON lines
  --log-every N          steps per report (default 10)
  --json                 print {"out","steps","tokens","seconds","tokens_per_second","l0",
                         "explained_variance","mse","dead_fraction"} at the end

  Ctrl-C writes a checkpoint and stops; --resume then continues exactly where it stopped.
  A TTY shows a progress bar with live L0 / EV / MSE / dead fraction; CI and pipes stay quiet.`,
  async run(argv) {
    const { values } = parseOptions(CMD, argv, {
      cache: { type: 'string' },
      hook: { type: 'string' },
      out: { type: 'string' },
      architecture: { type: 'string' },
      'd-sae': { type: 'string' },
      k: { type: 'string' },
      l1: { type: 'string' },
      lr: { type: 'string' },
      'lr-warmup-steps': { type: 'string' },
      'lr-decay-steps': { type: 'string' },
      'l1-warmup-steps': { type: 'string' },
      steps: { type: 'string' },
      tokens: { type: 'string' },
      batch: { type: 'string' },
      seed: { type: 'string' },
      normalize: { type: 'string' },
      'b-dec-init': { type: 'string' },
      'dead-tokens': { type: 'string' },
      'aux-k-coef': { type: 'string' },
      'resample-every': { type: 'string' },
      'exclude-pos0': { type: 'boolean' },
      'checkpoint-every': { type: 'string' },
      'checkpoint-dir': { type: 'string' },
      resume: { type: 'boolean' },
      log: { type: 'string' },
      'log-every': { type: 'string' },
      json: { type: 'boolean' },
    });
    const cache = requireString(CMD, values, 'cache').split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (cache.length === 0) fail(`${CMD}: --cache: no files given`);
    for (const f of cache) {
      if (!fs.existsSync(f)) fail(`${CMD}: --cache: ${f} does not exist`);
      if (!fs.statSync(f).isFile()) fail(`${CMD}: --cache: ${f} is not a file`);
    }
    const hook = requireString(CMD, values, 'hook');
    const out = requireString(CMD, values, 'out');
    const resume = values.resume === true;
    const architecture = parseChoice('--architecture', values.architecture, TRAIN_ARCHITECTURES);
    if (!resume && architecture === undefined) fail(`${CMD}: missing --architecture (${TRAIN_ARCHITECTURES.join(', ')})`);
    const dSae = optInt('--d-sae', values['d-sae']);
    if (!resume && dSae === undefined) fail(`${CMD}: missing --d-sae`);
    const k = parseNumber('--k', values.k, (x) => x > 0, 'a positive number');
    if (k !== undefined && architecture === 'topk' && !Number.isInteger(k)) fail(`${CMD}: --k: a topk SAE needs an integer k, got '${values.k}'`);
    if (values.steps !== undefined && values.tokens !== undefined) fail(`${CMD}: give --steps or --tokens, not both`);
    const steps = optInt('--steps', values.steps);
    const tokens = optInt('--tokens', values.tokens);
    if (!resume && steps === undefined && tokens === undefined) fail(`${CMD}: give --steps N or --tokens N`);
    const checkpointDir = path.resolve(values['checkpoint-dir'] ?? path.join(out, 'checkpoint'));
    if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) fail(`${CMD}: --out: ${out} exists and is not a directory`);
    const haveCheckpoint = hasCheckpoint(checkpointDir);
    if (resume && !haveCheckpoint) fail(`${CMD}: --resume: no checkpoint in ${checkpointDir}`);
    if (!resume && haveCheckpoint) fail(`${CMD}: ${checkpointDir} already holds a checkpoint; pass --resume to continue it, or choose another --out`);
    if (values.log !== undefined && fs.existsSync(values.log) && fs.statSync(values.log).isDirectory()) fail(`${CMD}: --log: ${values.log} is a directory`);

    const opts: SaeTrainOptions = {
      cache,
      hook,
      architecture: architecture as TrainArchitecture,
      dSae: dSae as number,
      k,
      l1Coefficient: parseNumber('--l1', values.l1, (x) => x >= 0, 'a non-negative number'),
      lr: parseNumber('--lr', values.lr, (x) => x > 0, 'a positive number'),
      lrWarmupSteps: optNonNegInt('--lr-warmup-steps', values['lr-warmup-steps']),
      lrDecaySteps: optNonNegInt('--lr-decay-steps', values['lr-decay-steps']),
      l1WarmupSteps: optNonNegInt('--l1-warmup-steps', values['l1-warmup-steps']),
      steps,
      tokens,
      batchSize: optInt('--batch', values.batch),
      seed: parseNumber('--seed', values.seed, (x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32, 'an integer in [0, 2^32)'),
      normalizeActivations: parseChoice<TrainNormalizeMode>('--normalize', values.normalize, TRAIN_NORMALIZE_MODES),
      bDecInit: parseChoice<BDecInit>('--b-dec-init', values['b-dec-init'], B_DEC_INITS),
      deadTokens: optInt('--dead-tokens', values['dead-tokens']),
      auxKCoefficient: parseNumber('--aux-k-coef', values['aux-k-coef'], (x) => x >= 0, 'a non-negative number'),
      resampleEvery: optNonNegInt('--resample-every', values['resample-every']),
      excludePos0: values['exclude-pos0'] ? true : undefined,
      checkpointDir,
      checkpointEvery: optNonNegInt('--checkpoint-every', values['checkpoint-every']) ?? 1000,
      resume,
      out,
      logFile: values.log,
      logEvery: optInt('--log-every', values['log-every']),
    };
    if (resume) {
      // Settings come from the checkpoint; only the ones given explicitly are checked against it.
      if (architecture === undefined) delete (opts as Partial<SaeTrainOptions>).architecture;
      if (dSae === undefined) delete (opts as Partial<SaeTrainOptions>).dSae;
    }
    for (const key of Object.keys(opts) as (keyof SaeTrainOptions)[]) if (opts[key] === undefined) delete opts[key];

    await initBackend();
    const ac = new AbortController();
    const onSigint = () => ac.abort();
    process.once('SIGINT', onSigint);
    const bar = trainBar();
    let result;
    try {
      result = await trainSae({ ...opts, signal: ac.signal, onProgress: (p) => bar.update(p) });
    } finally {
      bar.stop();
      process.removeListener('SIGINT', onSigint);
    }
    const { sae, last } = result;
    try {
      if (result.interrupted) {
        fail(`interrupted at step ${result.step} of ${result.totalSteps}; checkpoint saved in ${checkpointDir} (continue with --resume)`);
      }
      const summary = {
        out,
        steps: result.step,
        tokens: result.tokensSeen,
        seconds: Number(result.seconds.toFixed(3)),
        tokens_per_second: Math.round(result.tokensPerSecond),
        l0: last?.l0 ?? null,
        explained_variance: last?.explainedVariance ?? null,
        mse: last?.mse ?? null,
        dead_fraction: result.deadFraction,
      };
      if (values.json) return printJson(summary);
      const c = sae.cfg;
      console.log(
        `trained ${c.architecture} SAE (d_in ${c.dIn}, d_sae ${c.dSae}${c.k !== undefined ? `, k ${c.k}` : ''}) at ${c.hookName}: ` +
          `${result.step} steps, ${result.tokensSeen} tokens in ${result.seconds.toFixed(1)} s (${Math.round(result.tokensPerSecond)} tokens/s)`,
      );
      if (last) {
        console.log(`  last ${Math.min(last.step, opts.logEvery ?? 10)} steps: L0 ${last.l0.toFixed(2)}, explained variance ${last.explainedVariance.toFixed(4)}, MSE ${last.mse.toPrecision(4)}`);
      }
      console.log(`  dead latents: ${(100 * result.deadFraction).toFixed(1)}%`);
      console.log(`  saved to ${out} (checkpoint in ${checkpointDir})`);
    } finally {
      sae.dispose();
    }
  },
};

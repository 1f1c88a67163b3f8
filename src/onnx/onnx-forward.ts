/**
 * Forward passes of a loaded model on onnxruntime-node (CPU, both cores): the graph is emitted from
 * the same model definition (lm-graph.ts) once per hook set and kept, and fed with the same mask,
 * positions and rotary tables the tfjs forward computes. Hook-free and read-only-hook forwards run
 * here; anything that edits activations or needs gradients stays on tfjs.
 */
import os from 'node:os';
import type { InferenceSession as OrtSession, Tensor as OrtTensor } from 'onnxruntime-node';
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { ropeTables } from '../models/components.js';
import type { ModelConfig } from '../models/config.js';
import { lastPositionOneHot, maskBias, positionIds, validateTokens, type TokenBatch } from '../models/transformer.js';
import { lmGraph, type LmGraphOptions } from './lm-graph.js';

type Ort = typeof import('onnxruntime-node');
let ortModule: Promise<Ort> | null = null;

/** onnxruntime-node, loaded on first use (it is a dependency of @huggingface/transformers). */
function ort(): Promise<Ort> {
  ortModule ??= import('onnxruntime-node').catch((e: unknown) => fail(`onnx backend: cannot load onnxruntime-node (${(e as Error).message.split('\n')[0]})`));
  return ortModule;
}

export interface HostTensor {
  data: Float32Array;
  shape: number[];
}

export interface OnnxRunResult {
  logits: HostTensor | null;
  hooks: Map<string, HostTensor>;
}

export interface OnnxForwardOptions {
  /** Intra-op threads (default: every core). */
  threads?: number;
}

export class OnnxForward {
  private readonly sessions = new Map<string, Promise<{ session: OrtSession; inputs: string[]; outputs: string[] }>>();

  constructor(
    readonly model: HookedModel,
    private readonly opts: OnnxForwardOptions = {},
  ) {
    if (model.graph.kind !== 'causal-lm') fail(`onnx backend: ${model.source} is a ${model.graph.description}; only text language models run on onnx so far (use --backend tfjs)`);
  }

  private session(o: LmGraphOptions) {
    const key = JSON.stringify([o.hooks, !!o.finalPositionOnly, o.stopAtLayer ?? null]);
    let s = this.sessions.get(key);
    if (!s) {
      s = (async () => {
        const { InferenceSession } = await ort();
        const g = lmGraph(this.model, o);
        const threads = this.opts.threads ?? Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
        const session = await InferenceSession.create(g.bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionProviders: ['cpu'] });
        return { session, inputs: g.inputs, outputs: g.outputs };
      })();
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  /** Logits (unless stopAtLayer) and the requested hooks, on the host. */
  async run(tokens: TokenBatch, o: LmGraphOptions): Promise<OnnxRunResult> {
    const cfg = this.model.cfg as ModelConfig;
    validateTokens(cfg, tokens);
    const { Tensor } = await ort();
    const { session, inputs, outputs } = await this.session(o);
    const { batch: b, seqLen: T } = tokens;
    const pos = positionIds(tokens);
    const feeds: Record<string, OrtTensor> = {};
    const safeIds = BigInt64Array.from(tokens.ids, (id, i) => BigInt(tokens.mask[i] ? id : 0));
    feeds.input_ids = new Tensor('int64', safeIds, [b, T]);
    const mask = maskBias(tokens, cfg.causal);
    feeds.mask_bias = new Tensor('float32', mask.dataSync() as Float32Array, [b, 1, T, T]);
    mask.dispose();
    if (inputs.includes('positions')) feeds.positions = new Tensor('int64', BigInt64Array.from(pos, (p) => BigInt(p)), [b, T]);
    if (inputs.includes('rope_cos')) {
      const { cos, sin } = ropeTables(cfg, pos, b, T);
      feeds.rope_cos = new Tensor('float32', cos.dataSync() as Float32Array, [b, T, 1, cfg.rotaryDim]);
      feeds.rope_sin = new Tensor('float32', sin.dataSync() as Float32Array, [b, T, 1, cfg.rotaryDim]);
      cos.dispose();
      sin.dispose();
    }
    if (inputs.includes('last_onehot')) {
      const oh = lastPositionOneHot(tokens);
      feeds.last_onehot = new Tensor('float32', oh.dataSync() as Float32Array, [b, T, 1]);
      oh.dispose();
    }
    const res = await session.run(feeds);
    const host = (name: string): HostTensor => {
      const t = res[name];
      return { data: t.data as Float32Array, shape: t.dims.map(Number) };
    };
    const hooks = new Map<string, HostTensor>();
    for (const n of outputs) if (n !== 'logits') hooks.set(n, host(n));
    return { logits: outputs.includes('logits') ? host('logits') : null, hooks };
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions.values()) {
      try {
        await (await s).session.release();
      } catch {
        /* a session that failed to build has nothing to release */
      }
    }
    this.sessions.clear();
  }
}

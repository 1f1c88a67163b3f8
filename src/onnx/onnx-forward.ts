/**
 * Forward passes of a loaded model on onnxruntime-node (CPU, both cores): graphs are emitted from
 * the same model definition (lm-graph.ts, vision-graph.ts) once per variant and kept, and fed with
 * the same mask, positions, rotary tables and image rows the tfjs forward computes. Reading hooks
 * and declarative interventions (patches, zero/mean ablation, probe edits, resuming from a cached
 * residual, past keys/values) run here; JS hooks and gradients stay on tfjs.
 */
import os from 'node:os';
import type { InferenceSession as OrtSession, Tensor as OrtTensor } from 'onnxruntime-node';
import { fail } from '../errors.js';
import type { HookedModel } from '../hooks/hooked-model.js';
import { ropeTables } from '../models/components.js';
import type { ModelConfig } from '../models/config.js';
import { lastPositionOneHot, maskBias, positionIds, validateTokens, type TokenBatch } from '../models/transformer.js';
import { lmGraph, type LmGraphOptions } from './lm-graph.js';
import { visionGraph } from './vision-graph.js';
import { isVisionStageHook } from './block-graph.js';
import type { EmittedGraph } from './graph-builder.js';
import { imageCount, type ImageBatch } from '../models/image-batch.js';
import { imagePositionMask, spliceLayout } from '../models/stages/splice.js';
import { imagePatches } from '../models/stages/vision-tower.js';
import { appendColumn, decodingRows, recordNextTokens, tileBatch } from '../hooks/token-batch.js';
import { editPositionMask, type DirectionEdit } from '../probing/steer.js';

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
  /** Weight bytes serialised into a graph's protobuf; the rest go as external data (tests set it low). */
  maxEmbeddedBytes?: number;
}

function withEdits<O extends LmGraphOptions>(o: O, edits: readonly DirectionEdit[]): O {
  return edits.length ? { ...o, edits: edits.map((e) => ({ hook: e.hook, kind: e.kind })) } : o;
}

/** The edits at hooks of block l ('blocks.{l}.…'). */
function editsIn(edits: readonly DirectionEdit[], l: number): DirectionEdit[] {
  return edits.filter((e) => e.hook.startsWith(`blocks.${l}.`));
}

/**
 * Edit inputs for a pass of T positions (the masks depend on T). With `from`, the pass is
 * positions from..T−1 of a T-position run and the masks are that run's, cut to the pass.
 */
function editFeeds(edits: readonly DirectionEdit[], T: number, from = 0): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  edits.forEach((e, i) => {
    feeds[`edit_${i}_mask`] = { data: editPositionMask(e.positions, T).subarray(from), shape: [1, T - from, 1] };
    if (e.kind === 'add') feeds[`edit_${i}_vec`] = { data: e.vector, shape: [e.vector.length] };
    else feeds[`edit_${i}_basis`] = { data: e.basis, shape: [e.rank, e.basis.length / e.rank] };
  });
  return feeds;
}

/** A patched run for runPatchedSuffix: joins at block `layer` with its residual and patch. */
/** What every block call of one runPatchedSuffix shares: patch points, edits, rows per run, positions, base keys/values. */
interface SuffixRun {
  pointSuffixes: readonly string[];
  edits: readonly DirectionEdit[];
  /** Rows per run. */
  b: number;
  T: number;
  from: number;
  past: readonly { k: HostTensor; v: HostTensor }[];
}

export interface PatchedRun {
  layer: number;
  residPre: HostTensor;
  patch: { hook: string; mask: HostTensor; src: HostTensor };
}

/** Rows [b, ...] stacked along the first axis. */
function concatRows(parts: readonly HostTensor[]): HostTensor {
  if (parts.length === 1) return parts[0];
  const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { data, shape: [parts.reduce((n, p) => n + p.shape[0], 0), ...parts[0].shape.slice(1)] };
}

/** x [b, ...] repeated k times along the first axis. */
function tileRows(x: HostTensor, k: number): HostTensor {
  if (k === 1) return x;
  const data = new Float32Array(x.data.length * k);
  for (let i = 0; i < k; i++) data.set(x.data, i * x.data.length);
  return { data, shape: [x.shape[0] * k, ...x.shape.slice(1)] };
}

/** Rows a..b−1 of x [n, ...]. */
function sliceRows(x: HostTensor, a: number, b: number): HostTensor {
  const per = x.data.length / x.shape[0];
  return { data: x.data.slice(a * per, b * per), shape: [b - a, ...x.shape.slice(1)] };
}

export class OnnxForward {
  private readonly sessions = new Map<string, Promise<{ session: OrtSession; inputs: string[]; outputs: string[] }>>();

  constructor(
    readonly model: HookedModel,
    private readonly opts: OnnxForwardOptions = {},
  ) {}

  /** Graph variants built so far (each one onnxruntime session). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** The language-model graph variant `o`, built on first use. */
  private session(o: LmGraphOptions) {
    const key = JSON.stringify([o.hooks, !!o.finalPositionOnly, o.stopAtLayer ?? null, o.fromLayer ?? null, o.patch?.hooks ?? null, !!o.kvCache, o.edits ?? [], !!o.logitColumns, !!o.imageSplice, !!o.finalRowOnly]);
    // Block sessions (patching runs one per block, in turn) must not spin: a finished session's
    // spinning threads starve the next one's on two cores (measured: blocks ~5× slower).
    // Whole-model sessions keep ORT's default, which is faster for one graph.
    return this.cached(key, () => lmGraph(this.model, o, this.opts.maxEmbeddedBytes), o.fromLayer !== undefined);
  }

  private cached(key: string, build: () => EmittedGraph, noSpin: boolean) {
    let s = this.sessions.get(key);
    if (!s) {
      s = (async () => {
        const { InferenceSession } = await ort();
        const g = build();
        const threads = this.opts.threads ?? Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
        const spin = noSpin ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {};
        const session = await InferenceSession.create(g.bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionProviders: ['cpu'], externalData: g.externalData, ...spin });
        return { session, inputs: g.inputs, outputs: g.outputs };
      })();
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  /**
   * The vision stages on a batch's images: the projector's output [n, nImageTokens, d] (llava) or
   * the tower's last hidden state (standalone tower), plus the requested vision hooks.
   */
  private async runVision(images: ImageBatch, hooks: readonly string[]): Promise<Map<string, HostTensor>> {
    const { Tensor } = await ort();
    const vision = this.model.graph.vision!;
    const { session, outputs } = await this.cached(JSON.stringify(['vision', hooks]), () => visionGraph(this.model, hooks, this.opts.maxEmbeddedBytes), false);
    const patches = imagePatches(images, vision.patchSize);
    const res = await session.run({ patches: new Tensor('float32', patches.data, patches.shape) });
    const out = new Map<string, HostTensor>();
    for (const n of outputs) out.set(n, { data: res[n].data as Float32Array, shape: res[n].dims.map(Number) });
    return out;
  }

  /**
   * A VLM batch's image rows for the splice: image_rows [b, T, d] (the projector's output at each
   * image-token position, 0 elsewhere) and text_keep [b, T, 1] — HF's masked_scatter, as on tfjs.
   */
  private spliceFeeds(tokens: TokenBatch, imageEmbeds: HostTensor): Record<string, HostTensor> {
    const llava = this.model.graph.llava!;
    const { batch: b, seqLen: T } = tokens;
    const d = imageEmbeds.shape[2];
    // The batch was validated (one image per placeholder run) before the tower ran.
    const layout = spliceLayout(tokens, llava.imageTokenIndex, llava.nImageTokens);
    const P = llava.nImageTokens;
    const rows = new Float32Array(b * T * d);
    let image = 0;
    layout.runs.forEach((starts, p) => {
      for (const s0 of starts) {
        const at = image++ * P * d;
        rows.set(imageEmbeds.data.subarray(at, at + P * d), (p * T + s0) * d);
      }
    });
    const keep = Float32Array.from(imagePositionMask(tokens, layout), (m) => 1 - m);
    return { image_rows: { data: rows, shape: [b, T, d] }, text_keep: { data: keep, shape: [b, T, 1] } };
  }

  /**
   * Vision hooks and splice inputs for a batch that starts at its first position: the tower and
   * projector run when the batch has images; `o` gains imageSplice then.
   */
  private async visionPass(tokens: TokenBatch, visionHooks: readonly string[], o: LmGraphOptions): Promise<{ o: LmGraphOptions; feeds: Record<string, HostTensor>; hooks: Map<string, HostTensor> }> {
    const kind = this.model.graph.kind;
    if (kind === 'causal-lm' || !tokens.images || imageCount(tokens.images) === 0) {
      if (visionHooks.length) fail(`onnx backend: ${visionHooks[0]} needs images (--image)`);
      return { o, feeds: {}, hooks: new Map() };
    }
    this.model.graph.validate(tokens, 'input');
    const res = await this.runVision(tokens.images, visionHooks);
    const hooks = new Map([...res].filter(([n]) => visionHooks.includes(n)));
    if (kind === 'vision-tower') return { o, feeds: {}, hooks: new Map([...hooks, ['hidden', res.get('hidden')!]]) };
    return { o: { ...o, imageSplice: true }, feeds: this.spliceFeeds(tokens, res.get('image_embeds')!), hooks };
  }

  /**
   * Logits (unless stopAtLayer) and the requested hooks, on the host; `edits` applied on the way.
   * A VLM batch with images runs its tower and projector first (vision hooks included); a
   * standalone tower returns its last hidden state as `logits`, as the tfjs runtime does;
   * `visionOnly` stops after the vision stages (every hook asked for is a tower/projector hook).
   */
  async run(tokens: TokenBatch, o: LmGraphOptions & { visionOnly?: boolean }, edits: readonly DirectionEdit[] = []): Promise<OnnxRunResult> {
    // Hook patterns ('blocks.*.hook_resid_post') as the tfjs runtime takes them.
    const names = o.hooks.length ? this.model.resolveHooks([...o.hooks]) : [];
    const isVision = (n: string) => isVisionStageHook(this.model, n);
    const { visionOnly, ...lm } = o;
    const vision = await this.visionPass(tokens, names.filter(isVision), lm);
    if (this.model.graph.kind === 'vision-tower' || visionOnly) {
      const hidden = vision.hooks.get('hidden') ?? null;
      vision.hooks.delete('hidden');
      return { logits: hidden, hooks: vision.hooks };
    }
    const lmHooks = names.filter((n) => !isVision(n));
    const res = await this.runGraph(withEdits({ ...vision.o, hooks: lmHooks }, edits), { ...vision.feeds, ...editFeeds(edits, tokens.seqLen) }, this.commonFeeds(tokens));
    const hooks = new Map<string, HostTensor>();
    for (const n of names) hooks.set(n, vision.hooks.get(n) ?? res.get(n)!);
    return { logits: res.get('logits') ?? null, hooks };
  }

  /**
   * One block's session for suffix patching: block `l` from resid_in with past keys/values and
   * every patch point (block hooks `pointSuffixes`) an input — idle with a scalar 0 mask — so that
   * one session serves the base run and every patched run of every position-resolved component.
   * No hook outputs: each costs a copy per run (measured: five made the grid 1.6× slower).
   */
  private blockVariant(l: number, pointSuffixes: readonly string[], edits: readonly DirectionEdit[], finalRowOnly = false): LmGraphOptions & { patch: { hooks: string[] } } {
    return withEdits({ hooks: [], fromLayer: l, stopAtLayer: l, kvCache: true, patch: { hooks: pointSuffixes.map((p) => `blocks.${l}.${p}`) }, finalRowOnly }, editsIn(edits, l));
  }

  /**
   * Whether a run patched at `patchLayer` may carry only the final position through the last block
   * past its keys/values: when neither the patch nor an edit sits in it (their masks span every
   * position).
   */
  private lastBlockFinalRow(patchLayer: number, edits: readonly DirectionEdit[]): boolean {
    const last = this.model.cfg.nLayers - 1;
    return patchLayer !== last && editsIn(edits, last).length === 0;
  }

  private idlePatch(points: number): Record<string, HostTensor> {
    const off: HostTensor = { data: Float32Array.of(0), shape: [1] };
    const feeds: Record<string, HostTensor> = {};
    for (let i = 0; i < points; i++) feeds[`patch_mask_${i}`] = feeds[`patch_src_${i}`] = off;
    return feeds;
  }

  /**
   * A batch run block by block from its embeddings (`embeds` = blocks.0.hook_resid_pre [b, T, d])
   * through runPatchedSuffix's block sessions: each block's hook_resid_pre, keys [b, K, dh, T] and
   * values [b, K, T, dh] — what suffix patching resumes from — without a whole-model session (for
   * GPT-2 small that one costs ~5 s to emit and load).
   */
  async blockStreams(tokens: TokenBatch, embeds: HostTensor, pointSuffixes: readonly string[], edits: readonly DirectionEdit[] = []): Promise<{ residPre: HostTensor[]; keys: HostTensor[]; values: HostTensor[] }> {
    const { nLayers: L, nKvHeads: K, dHead: dh } = this.model.cfg as ModelConfig;
    const common = this.commonFeeds(tokens);
    const b = tokens.batch;
    const residPre: HostTensor[] = [];
    const keys: HostTensor[] = [];
    const values: HostTensor[] = [];
    let resid = embeds;
    for (let l = 0; l < L; l++) {
      residPre.push(resid);
      const extra: Record<string, HostTensor> = {
        resid_in: resid,
        [`past_k_${l}`]: { data: new Float32Array(0), shape: [b, K, dh, 0] },
        [`past_v_${l}`]: { data: new Float32Array(0), shape: [b, K, 0, dh] },
        ...this.idlePatch(pointSuffixes.length),
        ...editFeeds(editsIn(edits, l), tokens.seqLen),
      };
      const res = await this.runGraph(this.blockVariant(l, pointSuffixes, edits), extra, common);
      keys.push(res.get(`present_k_${l}`)!);
      values.push(res.get(`present_v_${l}`)!);
      resid = res.get('resid_out')!;
    }
    return { residPre, keys, values };
  }

  /**
   * runPatched for patches at positions ≥ `from` only: by causality the earlier positions are the
   * base run's at every layer, so each block runs just positions from.. with the base run's keys
   * and values of the earlier ones (`past[l]`: k [b, K, dh, from], v [b, K, from, dh]) — about
   * half the work of patching at position p on average.
   *
   * `runs` are patched runs of the same `tokens` (b rows each) at ascending layers; a run joins the
   * batch at its layer's block, where its `residPre` (positions from.. only) enters with its patch,
   * and rows that joined earlier pass through with the patch idle. So a set of runs costs one call
   * per block rather than one per (run, block). `pointSuffixes` are the block hooks (suffixes of
   * blocks.{l}.) each block session takes a patch at, so that one session per block serves every
   * such component. Returns each run's final-position logits [b, 1, vocab] (or [b, 1, C] of the
   * token ids `columns`).
   */
  async runPatchedSuffix(tokens: TokenBatch, from: number, runs: readonly PatchedRun[], past: readonly { k: HostTensor; v: HostTensor }[], pointSuffixes: readonly string[], columns?: readonly number[], edits: readonly DirectionEdit[] = []): Promise<HostTensor[]> {
    const L = this.model.cfg.nLayers;
    const last = L - 1;
    if (runs.length === 0) fail('onnx backend: runPatchedSuffix needs at least one patched run');
    for (let i = 1; i < runs.length; i++) if (runs[i].layer < runs[i - 1].layer) fail('onnx backend: patched runs must come in ascending layer order');
    const points = new Set(pointSuffixes);
    for (const r of runs) if (!points.has(r.patch.hook.slice(`blocks.${r.layer}.`.length))) fail(`onnx backend: ${r.patch.hook} is not a position-resolved patch point`);
    const b = tokens.batch;
    // Step feeds for the first k runs' rows together (the same rows tiled k times).
    const feedsFor = new Map<number, ReturnType<OnnxForward['stepFeeds']>>();
    const common = (k: number) => {
      let f = feedsFor.get(k);
      if (!f) feedsFor.set(k, (f = this.stepFeeds(tileBatch(tokens, k), from)));
      return f;
    };
    // The last block carries only the final position of rows patched before it (past its keys
    // and values), when no edit sits in it; rows patched in it need all its positions.
    const trimLast = editsIn(edits, last).length === 0;
    const rowsOf = (x: HostTensor) => Array.from({ length: x.shape[0] / b }, (_, r) => sliceRows(x, r * b, (r + 1) * b));
    const suffix: SuffixRun = { pointSuffixes, edits, b, T: tokens.seqLen, from, past };
    let resid: HostTensor | null = null;
    let k = 0;
    for (let l = runs[0].layer; ; l++) {
      let j = k;
      while (j < runs.length && runs[j].layer === l) j++;
      const entering = runs.slice(k, j);
      if (l < last || !trimLast) {
        resid = await this.blockCall(suffix, l, { entering, carried: resid, k0: k }, common(j));
        k = j;
        if (l === last) return rowsOf(await this.head(resid, common(k), columns, false));
        continue;
      }
      // The trimmed last block: rows that joined earlier, then (in their own call) rows patched here.
      const out: HostTensor[] = [];
      if (k > 0) {
        const x = await this.blockCall(suffix, l, { entering: [], carried: resid, k0: k, finalRowOnly: true }, common(k));
        out.push(...rowsOf(await this.head(x, common(k), columns, true)));
      }
      if (entering.length) {
        const x = await this.blockCall(suffix, l, { entering, carried: null, k0: 0 }, common(entering.length));
        out.push(...rowsOf(await this.head(x, common(entering.length), columns, false)));
      }
      return out;
    }
  }

  /**
   * One block over the rows so far (`carried`, k0 runs of b rows, patch idle) and the runs that
   * enter at this block (their residPre and patch): the block's resid_out for all of them.
   */
  private async blockCall(
    { pointSuffixes, edits, b, T, from, past: pastAll }: SuffixRun,
    l: number,
    { entering, carried, k0, finalRowOnly = false }: { entering: readonly PatchedRun[]; carried: HostTensor | null; k0: number; finalRowOnly?: boolean },
    common: ReturnType<OnnxForward['stepFeeds']>,
  ): Promise<HostTensor> {
    const past = pastAll[l];
    const o = this.blockVariant(l, pointSuffixes, edits, finalRowOnly);
    const points = o.patch.hooks;
    const k = k0 + entering.length;
    const resid = carried && entering.length === 0 ? carried : concatRows([...(carried ? [carried] : []), ...entering.map((r) => r.residPre)]);
    const extra: Record<string, HostTensor> = { resid_in: resid, [`past_k_${l}`]: tileRows(past.k, k), [`past_v_${l}`]: tileRows(past.v, k), ...this.idlePatch(points.length), ...editFeeds(editsIn(edits, l), T, from) };
    points.forEach((point, i) => {
      const at = entering.filter((r) => r.patch.hook === point);
      if (at.length === 0) return;
      // Rows without this patch get mask 0 (their src is ignored, zeros).
      const parts = (pick: (r: PatchedRun) => HostTensor) => {
        const one = pick(at[0]);
        const per = one.data.length / b;
        const data = new Float32Array(k * b * per);
        entering.forEach((r, j) => {
          if (r.patch.hook === point) data.set(pick(r).data, (k0 + j) * b * per);
        });
        return { data, shape: [k * b, ...one.shape.slice(1)] };
      };
      extra[`patch_mask_${i}`] = parts((r) => r.patch.mask);
      extra[`patch_src_${i}`] = parts((r) => r.patch.src);
    });
    return (await this.runGraph(o, extra, common)).get('resid_out')!;
  }

  /**
   * Final-position logits [b, 1, vocab] from the residual after the last block — or, with
   * `columns`, the logits of those token ids only [b, 1, C] (W_U's columns as inputs: no
   * vocabulary-sized session to build).
   */
  private async head(resid: HostTensor, common: ReturnType<OnnxForward['stepFeeds']>, columns?: readonly number[], finalRowOnly = false): Promise<HostTensor> {
    const L = this.model.cfg.nLayers;
    // A residual already cut to the final position [b, 1, d] is its own last row.
    const b = resid.shape[0];
    const rows: Record<string, HostTensor> = finalRowOnly ? { resid_in: resid, last_onehot: { data: new Float32Array(b).fill(1), shape: [b, 1, 1] } } : { resid_in: resid };
    if (!columns) return (await this.runGraph({ hooks: [], fromLayer: L, finalPositionOnly: true }, rows, common)).get('logits')!;
    const res = await this.runGraph({ hooks: [], fromLayer: L, finalPositionOnly: true, logitColumns: true }, { ...rows, ...this.unembedColumns(columns) }, common);
    return res.get('logits')!;
  }

  private readonly columnFeeds = new Map<string, Record<string, HostTensor>>();

  /** W_U's columns (and b_U's entries) of the token ids, as head inputs; kept per id list. */
  private unembedColumns(columns: readonly number[]): Record<string, HostTensor> {
    const key = columns.join(',');
    let feeds = this.columnFeeds.get(key);
    if (!feeds) {
      const W = this.model.weight('unembed.W_U');
      const [d, V] = W.shape;
      const w = W.dataSync() as Float32Array;
      const C = columns.length;
      const cols = new Float32Array(d * C);
      for (let i = 0; i < d; i++) for (let c = 0; c < C; c++) cols[i * C + c] = w[i * V + columns[c]];
      const b = this.model.hasWeight('unembed.b_U') ? (this.model.weight('unembed.b_U').dataSync() as Float32Array) : null;
      feeds = { unembed_cols: { data: cols, shape: [d, C] }, unembed_bias: { data: Float32Array.from(columns, (c) => (b ? b[c] : 0)), shape: [C] } };
      this.columnFeeds.set(key, feeds);
    }
    return feeds;
  }

  /**
   * All-position logits with hook `hook` replaced by `src` where `mask` is 1 (default: everywhere).
   * Both broadcast against the hook's shape, so the declarative interventions are all this one
   * graph input: a cached activation (src of the hook's shape; SAE eval splices its
   * reconstruction this way), zero ablation (src a scalar 0), mean ablation (src the mean [d]),
   * at chosen positions (mask [b, T, 1]).
   */
  async runReplaced(tokens: TokenBatch, hook: string, src: HostTensor, mask: HostTensor = { data: Float32Array.of(1), shape: [1] }): Promise<HostTensor> {
    const res = await this.runGraph({ hooks: [], patch: { hooks: [hook] } }, { patch_mask_0: mask, patch_src_0: src }, this.commonFeeds(tokens));
    return res.get('logits')!;
  }

  /**
   * Activation patching from a cached residual stream: block `layer` with `patch.hook` replaced
   * at the masked entries, the later blocks, and the final-position unembedding, each block its
   * own session (so every patched layer reuses the plain sessions of the blocks after it).
   * Returns logits [b, 1, vocab] (or [b, 1, C] of the token ids `columns`).
   */
  async runPatched(tokens: TokenBatch, layer: number, residPre: HostTensor, patch: { hook: string; mask: HostTensor; src: HostTensor }, columns?: readonly number[], edits: readonly DirectionEdit[] = []): Promise<HostTensor> {
    const L = this.model.cfg.nLayers;
    const common = this.commonFeeds(tokens);
    let resid = residPre;
    const finalRow = this.lastBlockFinalRow(layer, edits);
    for (let l = layer; l < L; l++) {
      const extra: Record<string, HostTensor> = { resid_in: resid, ...editFeeds(editsIn(edits, l), tokens.seqLen) };
      const o: LmGraphOptions = withEdits({ hooks: [], fromLayer: l, stopAtLayer: l, finalRowOnly: finalRow && l === L - 1 }, editsIn(edits, l));
      if (l === layer) {
        o.patch = { hooks: [patch.hook] };
        extra.patch_mask_0 = patch.mask;
        extra.patch_src_0 = patch.src;
      }
      resid = (await this.runGraph(o, extra, common)).get('resid_out')!;
    }
    return this.head(resid, common, columns, finalRow);
  }

  /**
   * Greedy decoding with past keys/values as graph inputs and outputs (one session for the prompt
   * pass and every step); the same contract as HookedModel.generateBatch: left-padded prompts,
   * each row its prompt ids then its new tokens (up to EOS with stopAtEos).
   */
  async generateBatch(prompts: readonly number[][], maxNewTokens: number, opts: { stopAtEos?: boolean; edits?: readonly DirectionEdit[]; images?: ImageBatch } = {}): Promise<number[][]> {
    const edits = opts.edits ?? [];
    const cfg = this.model.cfg as ModelConfig;
    if (this.model.graph.kind === 'vision-tower') fail(`onnx backend: ${this.model.graph.description} does not generate text`);
    const seqs = prompts.map((p) => [...p]);
    const start = this.model.toTokens(opts.images ? { prompts: seqs, images: opts.images } : seqs, 'left');
    this.model.graph.validate(start, 'prompt');
    const eos = cfg.eosTokenId ?? this.model.tokenizer?.eosTokenId ?? null;
    const b = start.batch;
    let T = start.seqLen;
    let ids = start.ids;
    let mask = start.mask;
    const { out, longest, done } = decodingRows(start);
    const { nKvHeads: K, dHead: dh, nLayers: L } = cfg;
    let past: Record<string, HostTensor> = {};
    for (let l = 0; l < L; l++) {
      past[`past_k_${l}`] = { data: new Float32Array(0), shape: [b, K, dh, 0] };
      past[`past_v_${l}`] = { data: new Float32Array(0), shape: [b, K, 0, dh] };
    }
    let cached = 0;
    for (let i = 0; i < maxNewTokens && longest + i < cfg.nCtx; i++) {
      const full: TokenBatch = { ids, mask, batch: b, seqLen: T, ...(start.images ? { images: start.images } : {}) };
      // The prompt pass splices the images in; later steps are plain tokens (as on tfjs).
      const step: LmGraphOptions = { hooks: [], finalPositionOnly: true, kvCache: true };
      const vision = cached === 0 ? await this.visionPass(full, [], step) : { o: step, feeds: {} };
      const res = await this.runGraph(withEdits(vision.o, edits), { ...past, ...vision.feeds, ...editFeeds(edits, T - cached) }, this.stepFeeds(full, cached));
      const logits = res.get('logits')!;
      const V = logits.shape[2];
      const next = new Int32Array(b);
      for (let r = 0; r < b; r++) {
        let best = 0;
        for (let v = 1; v < V; v++) if (logits.data[r * V + v] > logits.data[r * V + best]) best = v;
        next[r] = best;
      }
      past = {};
      for (let l = 0; l < L; l++) {
        past[`past_k_${l}`] = res.get(`present_k_${l}`)!;
        past[`past_v_${l}`] = res.get(`present_v_${l}`)!;
      }
      cached = T;
      ({ ids, mask } = appendColumn(ids, mask, b, T, next));
      T++;
      if (recordNextTokens(out, done, next, eos, opts.stopAtEos)) break;
    }
    return out;
  }

  /** Feeds for the positions after `past` of a batch (all of them when past = 0). */
  private stepFeeds(tokens: TokenBatch, past: number): Record<string, { type: 'float32' | 'int64'; data: Float32Array | BigInt64Array; dims: number[] }> {
    const cfg = this.model.cfg as ModelConfig;
    const { batch: b, seqLen: T } = tokens;
    const Tn = T - past;
    const cols = <A extends Int32Array>(a: A): A => {
      const o = new (a.constructor as new (n: number) => A)(b * Tn);
      for (let r = 0; r < b; r++) o.set(a.subarray(r * T + past, (r + 1) * T), r * Tn);
      return o;
    };
    const pos = cols(positionIds(tokens));
    const newPart: TokenBatch = { ids: cols(tokens.ids), mask: cols(tokens.mask), batch: b, seqLen: Tn };
    const feeds: ReturnType<OnnxForward['stepFeeds']> = {};
    feeds.input_ids = { type: 'int64', data: BigInt64Array.from(newPart.ids, (id, i) => BigInt(newPart.mask[i] ? id : 0)), dims: [b, Tn] };
    const m = maskBias(tokens, cfg.causal, past);
    feeds.mask_bias = { type: 'float32', data: m.dataSync() as Float32Array, dims: [b, 1, Tn, T] };
    m.dispose();
    feeds.positions = { type: 'int64', data: BigInt64Array.from(pos, (p) => BigInt(p)), dims: [b, Tn] };
    if (cfg.positional === 'rope') {
      const { cos, sin } = ropeTables(cfg, pos, b, Tn);
      feeds.rope_cos = { type: 'float32', data: cos.dataSync() as Float32Array, dims: [b, Tn, 1, cfg.rotaryDim] };
      feeds.rope_sin = { type: 'float32', data: sin.dataSync() as Float32Array, dims: [b, Tn, 1, cfg.rotaryDim] };
      cos.dispose();
      sin.dispose();
    }
    const oh = lastPositionOneHot(newPart);
    feeds.last_onehot = { type: 'float32', data: oh.dataSync() as Float32Array, dims: [b, Tn, 1] };
    oh.dispose();
    return feeds;
  }

  /** Mask, positions, rotary tables and last-position one-hot for a whole batch (host arrays). */
  private commonFeeds(tokens: TokenBatch): ReturnType<OnnxForward['stepFeeds']> {
    validateTokens(this.model.cfg as ModelConfig, tokens);
    return this.stepFeeds(tokens, 0);
  }

  /** Run one graph variant with the feeds it declares; outputs by name, on the host. */
  private async runGraph(o: LmGraphOptions, extra: Record<string, HostTensor>, common: ReturnType<OnnxForward['stepFeeds']>): Promise<Map<string, HostTensor>> {
    const { Tensor } = await ort();
    const { session, inputs, outputs } = await this.session(o);
    const feeds: Record<string, OrtTensor> = {};
    for (const name of inputs) {
      const e = extra[name];
      if (e) feeds[name] = new Tensor('float32', e.data, e.shape);
      else if (common[name]) {
        const c = common[name];
        feeds[name] = c.type === 'int64' ? new Tensor('int64', c.data as BigInt64Array, c.dims) : new Tensor('float32', c.data as Float32Array, c.dims);
      } else fail(`onnx backend: no value for graph input '${name}'`);
    }
    const res = await session.run(feeds);
    const out = new Map<string, HostTensor>();
    for (const n of outputs) out.set(n, { data: res[n].data as Float32Array, shape: res[n].dims.map(Number) });
    return out;
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
    this.columnFeeds.clear();
  }
}

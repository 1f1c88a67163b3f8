/**
 * SAE configuration in SAELens terms: parse `cfg.json` (pre-6 flat layout with top-level
 * `hook_name`/`hook_point`, and SAELens 6 with `metadata.hook_name`) into a typed SaeConfig, and
 * write it back. The original JSON is kept in `raw`, so unknown fields survive a load → save.
 */
import { fail } from '../errors.js';

export const SAE_ARCHITECTURES = ['standard', 'topk', 'batchtopk', 'jumprelu', 'gated'] as const;
export type SaeArchitecture = (typeof SAE_ARCHITECTURES)[number];

export const NORMALIZE_MODES = ['none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'] as const;
export type NormalizeMode = (typeof NORMALIZE_MODES)[number];

export interface SaeConfig {
  architecture: SaeArchitecture;
  dIn: number;
  dSae: number;
  hookName: string;
  hookLayer?: number;
  hookHeadIndex?: number;
  /** Latents kept per row (topk, integer) or on average per row over a batch (batchtopk, may be fractional). */
  k?: number;
  applyBDecToInput: boolean;
  normalizeActivations: NormalizeMode;
  /**
   * expected_average_only_in: the fixed dataset-level factor sqrt(d_in) / E‖x‖ the input is
   * multiplied by (and the output divided by). Stored in cfg.json as `norm_scaling_factor` (the
   * name SAELens' pretrained directory uses). Absent → identity, as SAELens does when it has none.
   */
  scalingFactor?: number;
  modelName?: string;
  /** The cfg.json this came from (or will be written as), for a lossless round trip. */
  raw: Record<string, unknown>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** SAELens 6 nests model/hook metadata under `metadata` (some dev versions used `meta`). */
function metadataOf(raw: Record<string, unknown>): Record<string, unknown> | undefined {
  if (isObject(raw.metadata)) return raw.metadata;
  if (isObject(raw.meta)) return raw.meta;
  return undefined;
}

/** First defined value among top-level keys, then the same keys in metadata. */
function lookup(raw: Record<string, unknown>, keys: string[]): unknown {
  const meta = metadataOf(raw);
  for (const src of [raw, meta]) {
    if (!src) continue;
    for (const k of keys) if (src[k] !== undefined && src[k] !== null) return src[k];
  }
  return undefined;
}

function positiveInt(file: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(`${file}: "${field}" must be a positive integer, got ${JSON.stringify(v) ?? 'nothing'}`);
  return v;
}

function optionalInt(file: string, field: string, v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail(`${file}: "${field}" must be a non-negative integer or null, got ${JSON.stringify(v)}`);
  return v;
}

function parseArchitecture(file: string, raw: Record<string, unknown>): SaeArchitecture {
  const a = raw.architecture ?? 'standard';
  if (typeof a !== 'string' || !(SAE_ARCHITECTURES as readonly string[]).includes(a)) {
    fail(`${file}: unknown "architecture" ${JSON.stringify(a)} (supported: ${SAE_ARCHITECTURES.join(', ')})`);
  }
  // Pre-6 SAELens wrote TopK SAEs as architecture "standard" with activation_fn "topk".
  const fn = raw.activation_fn ?? raw.activation_fn_str;
  if (a === 'standard' && fn === 'topk') return 'topk';
  if (a === 'standard' && fn !== undefined && fn !== null && fn !== 'relu') {
    fail(`${file}: "activation_fn" ${JSON.stringify(fn)} is not supported for a standard SAE (relu or topk)`);
  }
  return a as SaeArchitecture;
}

function parseK(file: string, arch: SaeArchitecture, raw: Record<string, unknown>): number | undefined {
  if (arch !== 'topk' && arch !== 'batchtopk') return undefined;
  const kwargs = isObject(raw.activation_fn_kwargs) ? raw.activation_fn_kwargs : {};
  const k = raw.k ?? kwargs.k;
  if (arch === 'topk') return positiveInt(file, 'k', k);
  if (typeof k !== 'number' || !(k > 0) || !Number.isFinite(k)) fail(`${file}: "k" must be a positive number for batchtopk, got ${JSON.stringify(k) ?? 'nothing'}`);
  return k;
}

function parseNormalize(file: string, v: unknown): NormalizeMode {
  // SAELens ≤ 3 stored a boolean: true meant the (April update) expected-average scaling.
  if (v === undefined || v === null || v === false) return 'none';
  if (v === true) return 'expected_average_only_in';
  if (typeof v !== 'string' || !(NORMALIZE_MODES as readonly string[]).includes(v)) {
    fail(`${file}: unknown "normalize_activations" ${JSON.stringify(v)} (supported: ${NORMALIZE_MODES.join(', ')})`);
  }
  return v as NormalizeMode;
}

/** Parse a SAELens cfg.json object; `file` names it in one-line errors. */
export function parseSaelensCfg(json: unknown, file: string): SaeConfig {
  if (!isObject(json)) fail(`${file}: SAE config is not a JSON object`);
  const raw = json;
  const architecture = parseArchitecture(file, raw);
  const dIn = positiveInt(file, 'd_in', raw.d_in);
  const dSae = positiveInt(file, 'd_sae', raw.d_sae);
  const hookName = lookup(raw, ['hook_name', 'hook_point']);
  if (typeof hookName !== 'string' || hookName === '') fail(`${file}: missing "hook_name" (top level or in "metadata")`);
  const hookLayer = optionalInt(file, 'hook_layer', lookup(raw, ['hook_layer', 'hook_point_layer']));
  const hookHeadIndex = optionalInt(file, 'hook_head_index', lookup(raw, ['hook_head_index', 'hook_point_head_index']));
  const applyBDecToInput = raw.apply_b_dec_to_input ?? true;
  if (typeof applyBDecToInput !== 'boolean') fail(`${file}: "apply_b_dec_to_input" must be true or false, got ${JSON.stringify(applyBDecToInput)}`);
  const normalizeActivations = parseNormalize(file, raw.normalize_activations);
  let scalingFactor: number | undefined;
  if (raw.norm_scaling_factor !== undefined && raw.norm_scaling_factor !== null) {
    const s = raw.norm_scaling_factor;
    if (typeof s !== 'number' || !(s > 0) || !Number.isFinite(s)) fail(`${file}: "norm_scaling_factor" must be a positive number, got ${JSON.stringify(s)}`);
    scalingFactor = s;
  }
  // A learned per-latent decode scale (SAELens ≤ 3 fine-tuning); we do not implement it.
  if (raw.finetuning_scaling_factor === true) fail(`${file}: "finetuning_scaling_factor": true is not supported`);
  const modelName = lookup(raw, ['model_name']);
  return {
    architecture,
    dIn,
    dSae,
    hookName,
    hookLayer,
    hookHeadIndex,
    k: parseK(file, architecture, raw),
    applyBDecToInput,
    normalizeActivations,
    scalingFactor,
    modelName: typeof modelName === 'string' ? modelName : undefined,
    raw,
  };
}

/**
 * The cfg.json object for `cfg`: the raw JSON with the typed fields written over it. Hook and model
 * fields go where the raw JSON kept them (metadata for SAELens 6 files, top level otherwise), so
 * pre-6 readers and SAELens 6 (which converts flat configs) both load the result. Idempotent.
 */
export function toSaelensCfg(cfg: SaeConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...cfg.raw };
  out.architecture = cfg.architecture;
  out.d_in = cfg.dIn;
  out.d_sae = cfg.dSae;
  // Weights are always written as float32.
  out.dtype = 'float32';
  if (out.device === undefined) out.device = 'cpu';
  out.apply_b_dec_to_input = cfg.applyBDecToInput;
  out.normalize_activations = cfg.normalizeActivations;
  if (cfg.k !== undefined) out.k = cfg.k;
  else delete out.k;
  if (cfg.scalingFactor !== undefined) out.norm_scaling_factor = cfg.scalingFactor;
  else delete out.norm_scaling_factor;
  const metaKey = isObject(cfg.raw.metadata) ? 'metadata' : isObject(cfg.raw.meta) ? 'meta' : undefined;
  const fields: [string, unknown][] = [
    ['hook_name', cfg.hookName],
    ['hook_layer', cfg.hookLayer ?? null],
    ['hook_head_index', cfg.hookHeadIndex ?? null],
  ];
  if (cfg.modelName !== undefined) fields.push(['model_name', cfg.modelName]);
  if (metaKey) {
    const meta = { ...(cfg.raw[metaKey] as Record<string, unknown>) };
    for (const [k, v] of fields) meta[k] = v;
    out[metaKey] = meta;
    // Keep top-level copies in step where an older writer left them.
    for (const [k, v] of fields) if (k in out) out[k] = v;
  } else {
    for (const [k, v] of fields) out[k] = v;
  }
  // Legacy aliases would contradict the fields above on the next load.
  for (const k of ['hook_point', 'hook_point_layer', 'hook_point_head_index']) delete out[k];
  return out;
}

/** SaeConfig without `raw`; apply_b_dec_to_input and normalisation default to true and 'none'. */
export type NewSaeConfig = Omit<SaeConfig, 'raw' | 'applyBDecToInput' | 'normalizeActivations'> &
  Partial<Pick<SaeConfig, 'applyBDecToInput' | 'normalizeActivations'>> & {
    /** Further cfg.json fields (e.g. context_size, prepend_bos, dataset_path). */
    extra?: Record<string, unknown>;
  };

/** A config for a new SAE (e.g. before training), validated as if read from cfg.json. */
export function makeSaeConfig(o: NewSaeConfig): SaeConfig {
  const m = /(?:^|\.)blocks\.(\d+)\./.exec(o.hookName);
  const layer = o.hookLayer ?? (m ? Number(m[1]) : undefined);
  const draft: SaeConfig = {
    architecture: o.architecture,
    dIn: o.dIn,
    dSae: o.dSae,
    hookName: o.hookName,
    hookLayer: layer,
    hookHeadIndex: o.hookHeadIndex,
    k: o.k,
    applyBDecToInput: o.applyBDecToInput ?? true,
    normalizeActivations: o.normalizeActivations ?? 'none',
    scalingFactor: o.scalingFactor,
    modelName: o.modelName,
    raw: { ...(o.extra ?? {}) },
  };
  const json = toSaelensCfg(draft);
  return parseSaelensCfg(json, 'new SAE config');
}

/** sqrt(d_in) / mean‖x‖: SAELens' dataset-level factor for expected_average_only_in. rows: [n, d]. */
export function estimateNormScalingFactor(rows: Float32Array, d: number): number {
  const n = rows.length / d;
  if (!Number.isInteger(n) || n === 0) fail(`estimateNormScalingFactor: ${rows.length} values are not a whole number of ${d}-wide rows`);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += rows[i * d + j] ** 2;
    sum += Math.sqrt(s);
  }
  return Math.sqrt(d) / (sum / n);
}

/**
 * Typed reads of a checkpoint's config (config.json, a nested text/vision config, or GGUF
 * metadata). Wrong types are refused, never coerced: `"n_layer": "3"` is a broken config that
 * PyTorch would not run either, and silently accepting it would hide the error behind numbers.
 * `null` means "not set", as Hugging Face writes unset optional fields.
 */
import { fail } from '../errors.js';
import { activationKind, type ActivationKind } from './config.js';

type Json = Record<string, unknown>;

function describe(v: unknown): string {
  if (typeof v === 'string') return `${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)} (a string)`;
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `${String(v)} (a ${typeof v})`;
}

export class ConfigFields {
  constructor(
    readonly json: Json,
    /** File the fields come from, for messages. */
    readonly source: string,
    /** Dotted path of this object inside the file ('' at the top, 'text_config.' nested). */
    private readonly prefix = '',
    private readonly kind = 'config field',
  ) {}

  /** True when the key is present and not null. */
  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  private bad(key: string, want: string): never {
    fail(`${this.source}: ${this.kind} "${this.prefix}${key}" must be ${want}, got ${describe(this.json[key])}`);
  }

  private missing(key: string): never {
    fail(`${this.source}: ${this.kind} "${this.prefix}${key}" is missing`);
  }

  /** A number (finite). Without a fallback the key is required. */
  num(key: string, fallback?: number): number {
    if (!this.has(key)) return fallback ?? this.missing(key);
    const v = this.json[key];
    if (typeof v === 'bigint') return Number(v);
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, 'a number');
    return v;
  }

  /** An integer (JSON 3.0 counts: it parses to 3). */
  int(key: string, fallback?: number): number {
    if (!this.has(key)) return fallback ?? this.missing(key);
    const v = this.json[key];
    if (typeof v === 'bigint') return Number(v);
    if (typeof v !== 'number' || !Number.isInteger(v)) this.bad(key, 'an integer');
    return v;
  }

  /** An integer, or null when absent. */
  optInt(key: string): number | null {
    return this.has(key) ? this.int(key) : null;
  }

  /** A special-token id: an integer, or a list of them (Llama 3 lists several EOS ids; the first is used). */
  optTokenId(key: string): number | null {
    const v = this.json[key];
    if (Array.isArray(v)) {
      if (v.length === 0) return null;
      if (!v.every((x) => Number.isInteger(x))) this.bad(key, 'an integer or a list of integers');
      return v[0] as number;
    }
    return this.optInt(key);
  }

  bool(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const v = this.json[key];
    if (typeof v !== 'boolean') this.bad(key, 'true or false');
    return v;
  }

  str(key: string, fallback?: string): string {
    if (!this.has(key)) return fallback ?? this.missing(key);
    const v = this.json[key];
    if (typeof v !== 'string') this.bad(key, 'a string');
    return v;
  }

  /** An activation function name (hidden_act, …) we implement. */
  act(key: string, fallback: string): ActivationKind {
    const name = this.str(key, fallback);
    const kind = activationKind(name);
    if (!kind) fail(`${this.source}: unsupported ${this.kind} "${this.prefix}${key}" = '${name}' (supported: gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, silu, relu)`);
    return kind;
  }

  /** A nested object (e.g. text_config), or undefined when absent. */
  sub(key: string): ConfigFields | undefined {
    if (!this.has(key)) return undefined;
    const v = this.json[key];
    if (typeof v !== 'object' || Array.isArray(v)) this.bad(key, 'an object');
    return new ConfigFields(v as Json, this.source, `${this.prefix}${key}.`, this.kind);
  }
}

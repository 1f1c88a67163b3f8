/** Shared command-line plumbing: strict option parsing and the common input options. */
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { fail, HooklensError } from '../errors.js';
import { readJsonLines } from '../io/jsonl.js';

export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** The command prints its own help (commands with subcommands show the subcommand's). */
  handlesHelp?: boolean;
  run(argv: string[]): Promise<void>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs in strict mode, with its errors turned into one-line HooklensErrors. */
export function parseOptions<T extends Options>(cmd: string, argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false });
  } catch (e) {
    throw new HooklensError(`${cmd}: ${(e as Error).message.split('\n')[0]}`);
  }
}

export function requireString(cmd: string, values: Record<string, unknown>, key: string): string {
  const v = values[key];
  if (typeof v !== 'string' || v === '') fail(`${cmd}: missing --${key}`);
  return v;
}

/** "1,2,3" → [1,2,3] with a clear error on anything that is not an integer. */
export function parseTokenList(flag: string, s: string): number[] {
  const parts = s.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (parts.length === 0) fail(`${flag}: no token ids given`);
  return parts.map((p) => {
    if (!/^-?\d+$/.test(p)) fail(`${flag}: '${p}' is not an integer token id`);
    return Number(p);
  });
}

export function parsePositiveInt(flag: string, s: string | undefined, dflt: number): number {
  if (s === undefined) return dflt;
  if (!/^\d+$/.test(s) || Number(s) < 1) fail(`${flag}: expected a positive integer, got '${s}'`);
  return Number(s);
}

/** A prompt (text or exact ids) and, for a vision-language model, its image files in placeholder order. */
export type PromptSpec = ({ text: string } | { tokens: number[] }) & { images?: string[] };

/**
 * One JSONL line: {"tokens": [...]}, {"text": ...}, or a bare JSON string. A line with both uses
 * the tokens: they are exact, while text need not re-encode to the same ids (e.g. sampled stories).
 * "image": a path or a list of paths (relative to the file) for a vision-language model.
 */
export function readPromptsFile(file: string): PromptSpec[] {
  return readJsonLines(file, 'prompts', (v, where): PromptSpec => {
    if (typeof v === 'string') return { text: v };
    const o = (v ?? {}) as { text?: unknown; tokens?: unknown; image?: unknown };
    let images: string[] | undefined;
    if (o.image !== undefined) {
      const list = Array.isArray(o.image) ? o.image : [o.image];
      if (!list.every((f) => typeof f === 'string' && f !== '')) fail(`${where}: "image" must be an image path or a list of paths`);
      images = (list as string[]).map((f) => path.resolve(path.dirname(file), f));
    }
    const withImages = <T extends object>(p: T): T & { images?: string[] } => (images ? { ...p, images } : p);
    if (Array.isArray(o.tokens)) {
      if (!o.tokens.every((t) => Number.isInteger(t) && t >= 0)) fail(`${where}: "tokens" must be non-negative integers`);
      return withImages({ tokens: o.tokens as number[] });
    }
    if (typeof o.text === 'string') return withImages({ text: o.text });
    fail(`${where}: expected {"text": ...} or {"tokens": [...]}`);
  });
}

/** `--image FILE` (repeatable): PNG/JPEG through the model's preprocessor, or .safetensors pixel_values. */
export const IMAGE_OPTION = { image: { type: 'string', multiple: true } } as const;

/** Exactly one of --text / --tokens (/ --prompts where allowed). */
export function promptsFromArgs(cmd: string, values: Record<string, unknown>, allowFile: boolean): PromptSpec[] {
  const given = ['text', 'tokens', ...(allowFile ? ['prompts'] : [])].filter((k) => values[k] !== undefined);
  const choices = allowFile ? '--text, --tokens or --prompts' : '--text or --tokens';
  if (given.length !== 1) fail(`${cmd}: give exactly one of ${choices}`);
  const images = Array.isArray(values.image) && values.image.length ? (values.image as string[]) : undefined;
  const attach = (p: PromptSpec): PromptSpec => (images && !p.images ? { ...p, images } : p);
  if (values.text !== undefined) return [attach({ text: String(values.text) })];
  if (values.tokens !== undefined) return [attach({ tokens: parseTokenList('--tokens', String(values.tokens)) })];
  // --image with --prompts: the image(s) of every line that names none.
  return readPromptsFile(String(values.prompts)).map(attach);
}

export function printJson(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/**
 * Helpers for the CLI tests: spawn `node bin/hooklens.mjs` asynchronously (so an in-process HTTP
 * server can still answer, and concurrent tests overlap), and build broken model files.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(REPO_ROOT, 'bin', 'hooklens.mjs');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** A hermetic environment: CI=true, no hub endpoint, hub cache in `hubCache` (never ~/.cache). */
export function cliEnv(hubCache: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CI: 'true', HF_HUB_CACHE: hubCache, ...extra };
  for (const k of ['HF_ENDPOINT', 'HF_HOME', 'HUGGINGFACE_HUB_CACHE', 'HOOKLENS_DEBUG', 'HOOKLENS_BACKEND', 'NODE_OPTIONS']) {
    if (!(k in extra)) delete env[k];
  }
  return env;
}

/**
 * At most this many CLI processes run at once, however many tests vitest runs concurrently
 * (each process is CPU-bound for ~2 s; more than ~cores+1 at once only adds contention).
 */
const MAX_PARALLEL = Number(process.env.HOOKLENS_CLI_TEST_PARALLEL) || Math.max(2, Math.min(4, (os.availableParallelism?.() ?? os.cpus().length) + 1));
let running = 0;
const waiting: (() => void)[] = [];

async function withSlot<T>(fn: () => Promise<T>): Promise<T> {
  // A released slot is handed straight to the next waiter, so `running` never overshoots.
  if (running >= MAX_PARALLEL) await new Promise<void>((r) => waiting.push(r));
  else running++;
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

/** Run `hooklens ...args`; resolves when the process exits (killed after `timeoutMs`). */
export function runCli(args: string[], opts: { env: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number }): Promise<CliResult> {
  return withSlot(() => spawnCli(args, opts));
}

function spawnCli(args: string[], opts: { env: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number }): Promise<CliResult> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? REPO_ROOT, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 90_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: Date.now() - t0 });
    });
  });
}

/** Non-empty stderr lines, ignoring `npm warn` noise. */
export function stderrLines(stderr: string): string[] {
  return stderr
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .filter((l) => !/^npm warn/i.test(l));
}

/** Copy a (flat) model directory, making the copies writable (the shared fixtures are read-only). */
export function copyModelDir(src: string, dst: string): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const f of fs.readdirSync(src)) {
    if (f === 'reference.json') continue;
    const to = path.join(dst, f);
    fs.copyFileSync(path.join(src, f), to);
    fs.chmodSync(to, 0o644);
  }
}

export function copyWritable(src: string, dst: string): void {
  fs.copyFileSync(src, dst);
  fs.chmodSync(dst, 0o644);
}

export interface SafetensorsParts {
  header: Record<string, unknown>;
  data: Buffer;
}

/** Split a safetensors file into its parsed header and its data section. */
export function readSafetensorsParts(file: string): SafetensorsParts {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), data: Buffer.from(buf.subarray(8 + n)) };
}

/** Assemble a safetensors file from a raw header string (may be invalid JSON) and data bytes. */
export function writeSafetensorsRaw(file: string, headerText: string, data: Uint8Array): void {
  const header = Buffer.from(headerText, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  fs.writeFileSync(file, Buffer.concat([len, header, data]));
}

export function writeSafetensorsParts(file: string, parts: SafetensorsParts): void {
  writeSafetensorsRaw(file, JSON.stringify(parts.header), parts.data);
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The tensors of a file in data order, each with its own bytes. */
export function tensorsInDataOrder(parts: SafetensorsParts): { name: string; dtype: string; shape: number[]; bytes: Buffer }[] {
  return Object.entries(parts.header)
    .filter(([k]) => k !== '__metadata__')
    .map(([name, e]) => ({ name, ...(e as HeaderEntry) }))
    .sort((a, b) => a.data_offsets[0] - b.data_offsets[0])
    .map(({ name, dtype, shape, data_offsets: [b, e] }) => ({ name, dtype, shape, bytes: parts.data.subarray(b, e) }));
}

/**
 * Lay tensors out back to back (a well-formed file). `place(i, cursor)` may move tensor i's start
 * (e.g. back into its predecessor, to build overlapping ranges); later tensors follow it.
 */
export function layOutSafetensors(
  tensors: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[],
  place: (i: number, cursor: number) => number = (_i, c) => c,
): SafetensorsParts {
  const header: Record<string, unknown> = {};
  const spans: [number, Uint8Array][] = [];
  let cursor = 0;
  tensors.forEach((t, i) => {
    const begin = place(i, cursor);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [begin, begin + t.bytes.length] };
    spans.push([begin, t.bytes]);
    cursor = begin + t.bytes.length;
  });
  const data = Buffer.alloc(cursor);
  for (const [b, bytes] of spans) data.set(bytes, b);
  return { header, data };
}

/**
 * Rewrite tensor `name` as I64 (values rounded) with its original shape: a well-formed safetensors
 * file with an integer tensor where a float weight belongs.
 */
export function withI64Tensor(parts: SafetensorsParts, name: string): SafetensorsParts {
  return layOutSafetensors(
    tensorsInDataOrder(parts).map((t) => {
      if (t.name !== name) return t;
      const f32 = new Float32Array(t.bytes.buffer.slice(t.bytes.byteOffset, t.bytes.byteOffset + t.bytes.length));
      const i64 = new BigInt64Array(f32.length);
      for (let i = 0; i < f32.length; i++) i64[i] = BigInt(Math.round(f32[i] * 100));
      return { ...t, dtype: 'I64', bytes: Buffer.from(i64.buffer) };
    }),
  );
}

export function mkTmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Every file below `dir` (relative paths), hidden ones included. */
export function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

/**
 * Per-file CLI test scaffolding: a temp dir (removed afterwards), an env with an empty hub cache,
 * fresh per-test directories, and a `cli` runner bound to that env.
 */
export function cliSuite(prefix: string): {
  caseDir(name: string): string;
  cli(args: string[], opts?: { cwd?: string; env?: NodeJS.ProcessEnv }): Promise<CliResult>;
} {
  let tmp = '';
  let env: NodeJS.ProcessEnv = {};
  beforeAll(() => {
    tmp = mkTmp(prefix);
    const hubCache = path.join(tmp, 'empty-hub-cache');
    fs.mkdirSync(hubCache);
    env = cliEnv(hubCache);
  });
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });
  return {
    caseDir(name) {
      const d = path.join(tmp, `${name}-${Math.random().toString(36).slice(2, 8)}`);
      fs.mkdirSync(d, { recursive: true });
      return d;
    },
    cli: (args, opts = {}) => runCli(args, { env: opts.env ?? env, cwd: opts.cwd }),
  };
}

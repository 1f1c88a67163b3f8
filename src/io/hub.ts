/**
 * Resolve a `--model` argument to a local file or directory.
 *
 * 1. An existing local path is returned as is (resolved).
 * 2. A hub id (`org/name` or `name`) is looked up in the Hugging Face hub cache
 *    (`models--org--name/refs/{revision}` → `snapshots/{hash}/`).
 * 3. Otherwise, if an endpoint is configured (option or `HF_ENDPOINT`; there is no default
 *    remote), the model files are downloaded into the cache in the same layout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fail, HooklensError } from '../errors.js';
import { writeFileAtomic, writeThroughTempAsync } from './atomic.js';
import { SAFETENSORS_INDEX, SAFETENSORS_SINGLE, safetensorsIndexShards } from './safetensors.js';

export interface ResolveModelOptions {
  /** Hub cache root; default `HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Hub endpoint to download from; default `HF_ENDPOINT`. No default remote. */
  endpoint?: string;
  /** Branch, tag or commit hash; default `main`. */
  revision?: string;
  onProgress?: (file: string, received: number, total: number | null) => void;
}

const OPTIONAL_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'preprocessor_config.json', 'processor_config.json'];
/** Extensions that mean "this was meant as a local file", never a hub id. */
const LOCAL_FILE_EXT = /\.(safetensors|gguf|bin|json|pt|pth|ggml|onnx)$/i;
const HUB_PART = '[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?';
const HUB_ID = new RegExp(`^(?:${HUB_PART}/)?${HUB_PART}$`);
const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** True if `spec` is shaped like a hub repo id (`org/name` or `name`). */
export function isHubId(spec: string): boolean {
  return HUB_ID.test(spec) && !spec.includes('--') && !spec.includes('..') && !LOCAL_FILE_EXT.test(spec);
}

/** The hub cache root: option, `HF_HUB_CACHE`, `$HF_HOME/hub`, then `~/.cache/huggingface/hub`. */
export function hubCacheDir(cacheDir?: string): string {
  const env = process.env;
  if (cacheDir) return path.resolve(cacheDir);
  if (env.HF_HUB_CACHE) return path.resolve(env.HF_HUB_CACHE);
  if (env.HUGGINGFACE_HUB_CACHE) return path.resolve(env.HUGGINGFACE_HUB_CACHE);
  if (env.HF_HOME) return path.resolve(env.HF_HOME, 'hub');
  return path.join(os.homedir(), '.cache', 'huggingface', 'hub');
}

/** `models--org--name` directory of a repo inside the cache. */
export function hubRepoDir(cacheRoot: string, repo: string): string {
  return path.join(cacheRoot, `models--${repo.split('/').join('--')}`);
}

function checkRevision(revision: string): void {
  if (revision === '' || revision.split('/').some((p) => p === '' || p === '.' || p === '..') || /[\\\0\n]/.test(revision)) {
    fail(`invalid model revision ${JSON.stringify(revision)}`);
  }
}

/** True if `dir` has config.json and a full set of safetensors weights. */
export function isCompleteSnapshot(dir: string): boolean {
  if (!fs.existsSync(path.join(dir, 'config.json'))) return false;
  const index = path.join(dir, SAFETENSORS_INDEX);
  if (fs.existsSync(index)) {
    try {
      return safetensorsIndexShards(index).every((s) => fs.existsSync(path.join(dir, s)));
    } catch {
      return false;
    }
  }
  if (fs.existsSync(path.join(dir, SAFETENSORS_SINGLE))) return true;
  try {
    return fs.readdirSync(dir).some((f) => f.endsWith('.safetensors') && !f.startsWith('.'));
  } catch {
    return false;
  }
}

/** The cached snapshot directory for `repo@revision`, if complete. */
function findCachedSnapshot(repoDir: string, revision: string): string | null {
  let hash: string | null = null;
  const refFile = path.join(repoDir, 'refs', revision);
  try {
    hash = fs.readFileSync(refFile, 'utf8').trim();
  } catch {
    hash = null;
  }
  const candidates = [hash, COMMIT_HASH.test(revision) ? revision : null].filter(
    (h): h is string => !!h && !h.includes('/') && !h.includes('\\') && h !== '.' && h !== '..',
  );
  for (const h of candidates) {
    const snap = path.join(repoDir, 'snapshots', h);
    if (isCompleteSnapshot(snap)) return snap;
  }
  return null;
}

/** Resolve a `--model` argument (local path or hub id) to a local path, downloading if needed. */
export async function resolveModelPath(spec: string, opts: ResolveModelOptions = {}): Promise<string> {
  if (spec === '') fail('empty --model argument');
  const expanded = spec === '~' || spec.startsWith('~/') ? path.join(os.homedir(), spec.slice(1)) : spec;
  if (fs.existsSync(expanded)) return path.resolve(expanded);

  if (!isHubId(spec)) fail(`model path not found: ${spec}`);
  const revision = opts.revision ?? 'main';
  checkRevision(revision);
  const cacheRoot = hubCacheDir(opts.cacheDir);
  const repoDir = hubRepoDir(cacheRoot, spec);
  const cached = findCachedSnapshot(repoDir, revision);
  if (cached) return cached;

  const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? '').trim().replace(/\/+$/, '');
  if (!endpoint) {
    fail(
      `model ${JSON.stringify(spec)} not found: no such local path and not in the Hugging Face cache at ${cacheRoot}; pass a local directory/file, or set HF_ENDPOINT to download from a hub`,
    );
  }
  return downloadSnapshot(endpoint, spec, revision, repoDir, opts.onProgress);
}

interface FetchedFile {
  status: 'ok' | 'missing';
  commit: string | null;
}

function fileUrl(endpoint: string, repo: string, revision: string, file: string): string {
  const encFile = file.split('/').map(encodeURIComponent).join('/');
  return `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${encFile}`;
}

/**
 * GET `url` into `target` (temp file + rename). A 404 returns `missing` when `optional`;
 * any other failure is a one-line HooklensError naming the URL.
 */
async function fetchToFile(
  url: string,
  target: string,
  file: string,
  optional: boolean,
  onProgress?: ResolveModelOptions['onProgress'],
): Promise<FetchedFile> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { 'accept-encoding': 'identity' }, redirect: 'follow' });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (e as Error).message;
    fail(`download failed: GET ${url}: ${String(why).replace(/\s+/g, ' ')}`);
  }
  const commit = res.headers.get('x-repo-commit');
  if (res.status === 404 && optional) {
    await res.body?.cancel().catch(() => undefined);
    return { status: 'missing', commit };
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => undefined);
    fail(`download failed: GET ${url} returned HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`);
  }
  const lenHeader = res.headers.get('content-length');
  const encoded = !!res.headers.get('content-encoding') && res.headers.get('content-encoding') !== 'identity';
  const total = lenHeader !== null && /^\d+$/.test(lenHeader) && !encoded ? Number(lenHeader) : null;

  fs.mkdirSync(path.dirname(target), { recursive: true });
  try {
    await writeThroughTempAsync(target, async (fd) => {
      let received = 0;
      onProgress?.(file, 0, total);
      const reader = res.body!.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          const cause = (e as { cause?: { code?: string; message?: string } }).cause;
          fail(`download failed: GET ${url}: connection lost after ${received} bytes (${cause?.code ?? cause?.message ?? (e as Error).message})`);
        }
        if (chunk.done) break;
        let off = 0;
        while (off < chunk.value.byteLength) off += fs.writeSync(fd, chunk.value, off);
        received += chunk.value.byteLength;
        onProgress?.(file, received, total);
      }
      if (total !== null && received !== total) {
        fail(`download failed: GET ${url}: got ${received} of ${total} bytes`);
      }
    });
  } catch (e) {
    if (e instanceof HooklensError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    fail(`download failed: cannot write ${target} (${code ?? String(e).replace(/\s+/g, ' ')})`);
  }
  return { status: 'ok', commit };
}

/** Remove a directory we created if nothing ended up in it (never recursive). */
function removeEmptyDir(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    /* not empty or already gone */
  }
}

async function downloadSnapshot(
  endpoint: string,
  repo: string,
  revision: string,
  repoDir: string,
  onProgress?: ResolveModelOptions['onProgress'],
): Promise<string> {
  // config.json first: it tells us the commit (x-repo-commit) and hence the snapshot name.
  const repoDirExisted = fs.existsSync(repoDir);
  const configUrl = fileUrl(endpoint, repo, revision, 'config.json');
  const configTmpTarget = path.join(repoDir, `.config.json.${process.pid}.download`);
  let first: FetchedFile;
  try {
    first = await fetchToFile(configUrl, configTmpTarget, 'config.json', true, onProgress);
  } catch (e) {
    fs.rmSync(configTmpTarget, { force: true });
    if (!repoDirExisted) removeEmptyDir(repoDir);
    throw e;
  }
  if (first.status === 'missing') {
    if (!repoDirExisted) removeEmptyDir(repoDir);
    fail(`model ${JSON.stringify(repo)} (revision ${revision}) not found at ${endpoint}: GET ${configUrl} returned HTTP 404`);
  }
  const headerCommit = first.commit?.trim() ?? '';
  const snapName = COMMIT_HASH.test(revision)
    ? revision
    : /^[A-Za-z0-9._-]+$/.test(headerCommit) && headerCommit !== '.' && headerCommit !== '..'
      ? headerCommit
      : revision;
  const snapDir = path.join(repoDir, 'snapshots', snapName);
  fs.mkdirSync(snapDir, { recursive: true });
  fs.renameSync(configTmpTarget, path.join(snapDir, 'config.json'));

  const get = async (file: string, optional: boolean): Promise<boolean> => {
    const target = path.join(snapDir, file);
    if (fs.existsSync(target)) return true; // earlier (interrupted) run already completed this file
    const r = await fetchToFile(fileUrl(endpoint, repo, revision, file), target, file, optional, onProgress);
    return r.status === 'ok';
  };

  if (await get(SAFETENSORS_INDEX, true)) {
    let shards: string[];
    try {
      shards = safetensorsIndexShards(path.join(snapDir, SAFETENSORS_INDEX));
    } catch (e) {
      // A bad index must not make the snapshot look complete on the next run.
      fs.rmSync(path.join(snapDir, SAFETENSORS_INDEX), { force: true });
      throw e;
    }
    for (const shard of shards) await get(shard, false);
  } else {
    await get(SAFETENSORS_SINGLE, false);
  }
  for (const file of OPTIONAL_FILES) await get(file, true);

  if (!COMMIT_HASH.test(revision)) {
    const refFile = path.join(repoDir, 'refs', revision);
    fs.mkdirSync(path.dirname(refFile), { recursive: true });
    writeFileAtomic(refFile, snapName);
  }
  if (!isCompleteSnapshot(snapDir)) fail(`download of ${repo} into ${snapDir} is incomplete`);
  return snapDir;
}

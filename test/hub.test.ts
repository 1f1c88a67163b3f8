import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HooklensError } from '../src/errors.js';
import { hubCacheDir, isHubId, resolveModelPath } from '../src/io/hub.js';
import { readSafetensors, readSafetensorsDir, writeSafetensorsSharded } from '../src/io/safetensors.js';
import { readPixelValues } from '../src/io/images.js';
import { loadModel } from '../src/models/load.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixturesDir = process.env.HOOKLENS_FIXTURES ?? path.resolve(repoRoot, '../shared/fixtures');
const COMMIT = '0123456789abcdef0123456789abcdef01234567';

let tmp: string;
let served: string; // root of the served repos: served/{org}/{name}/files
let server: http.Server | null = null;
let endpoint = '';
const requests: string[] = [];

function startServer(): Promise<void> {
  server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url ?? '');
    requests.push(url);
    const m = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(url);
    if (!m) {
      res.writeHead(400).end('bad request');
      return;
    }
    const [, repo, , file] = m as unknown as [string, string, string, string];
    if (repo === 'broken/server') {
      res.writeHead(500, 'Internal Server Error').end('boom');
      return;
    }
    if (repo === 'broken/weights' && file === 'model.safetensors') {
      res.writeHead(503, 'Service Unavailable').end('try later');
      return;
    }
    const local = path.join(served, repo, file);
    if (!local.startsWith(served + path.sep) || !fs.existsSync(local) || !fs.statSync(local).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
      return;
    }
    const body = fs.readFileSync(local);
    const headers: Record<string, string | number> = { 'content-length': body.length };
    if (repo === 'tiny/gpt2-sharded') headers['x-repo-commit'] = COMMIT;
    if (repo === 'broken/truncated' && file === 'model.safetensors') {
      // Promise the whole file, send half of it, then drop the connection.
      res.writeHead(200, headers);
      res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.writeHead(200, headers).end(body);
  });
  return new Promise((resolve) => {
    server!.listen(0, '127.0.0.1', () => {
      endpoint = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
      resolve();
    });
  });
}

function stopServer(): Promise<void> {
  const s = server;
  server = null;
  if (!s) return Promise.resolve();
  s.closeAllConnections();
  return new Promise((resolve) => s.close(() => resolve()));
}

function copyDir(src: string, dst: string): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(dst, f));
}

/** Files visible in a directory tree (relative paths), including hidden ones. */
function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => fs.statSync(path.join(dir, f)).isFile())
    .sort();
}

async function expectHooklensError(p: Promise<unknown>, ...parts: string[]): Promise<string> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a HooklensError').toBeInstanceOf(HooklensError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const part of parts) expect(msg).toContain(part);
  return msg;
}

let savedEnv: Record<string, string | undefined>;
beforeAll(async () => {
  const gpt2 = path.join(fixturesDir, 'tiny-gpt2');
  if (!fs.existsSync(path.join(gpt2, 'model.safetensors'))) {
    throw new Error(`fixture ${gpt2} is missing; set HOOKLENS_FIXTURES to the shared fixtures directory`);
  }
  savedEnv = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HOME: process.env.HF_HOME };
  delete process.env.HF_ENDPOINT;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-hub-'));
  served = path.join(tmp, 'served');
  copyDir(gpt2, path.join(served, 'tiny', 'gpt2'));
  fs.writeFileSync(path.join(served, 'tiny', 'gpt2', 'tokenizer_config.json'), '{"model_max_length": 64}');
  const sharded = path.join(served, 'tiny', 'gpt2-sharded');
  fs.mkdirSync(sharded, { recursive: true });
  fs.copyFileSync(path.join(gpt2, 'config.json'), path.join(sharded, 'config.json'));
  writeSafetensorsSharded(sharded, readSafetensors(path.join(gpt2, 'model.safetensors')).tensors, 100 * 1024);
  // A sharded LLaVA (transformers ≥ 4.52 layout) with an image preprocessor config.
  const vlm = path.join(served, 'tiny', 'llava-sharded');
  copyDir(path.join(repoRoot, 'test', 'fixtures', 'vlm', 'llava-new-siglip-qwen2'), vlm);
  fs.copyFileSync(path.join(repoRoot, 'test', 'fixtures', 'vlm', 'preprocess', 'siglip', 'preprocessor_config.json'), path.join(vlm, 'preprocessor_config.json'));
  copyDir(gpt2, path.join(served, 'solo'));
  copyDir(gpt2, path.join(served, 'broken', 'truncated'));
  copyDir(gpt2, path.join(served, 'broken', 'weights'));
  await startServer();
});

afterEach(async () => {
  if (!server) await startServer();
});

afterAll(async () => {
  await stopServer();
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
const freshCache = () => path.join(tmp, `cache-${n++}`);

describe('resolveModelPath', () => {
  it('returns existing local paths resolved', async () => {
    const dir = path.join(fixturesDir, 'tiny-gpt2');
    expect(await resolveModelPath(dir)).toBe(path.resolve(dir));
    const file = path.join(dir, 'model.safetensors');
    expect(await resolveModelPath(path.relative(process.cwd(), file))).toBe(file);
  });

  it('fails clearly for a missing local file path', async () => {
    await expectHooklensError(resolveModelPath('./nope/model.gguf'), 'model path not found', './nope/model.gguf');
    await expectHooklensError(resolveModelPath('weights.safetensors', { endpoint: 'http://127.0.0.1:9' }), 'model path not found');
  });

  it('recognises hub ids', () => {
    expect(isHubId('openai-community/gpt2')).toBe(true);
    expect(isHubId('gpt2')).toBe(true);
    expect(isHubId('Qwen/Qwen2.5-0.5B')).toBe(true);
    expect(isHubId('a/b/c')).toBe(false);
    expect(isHubId('../x')).toBe(false);
    expect(isHubId('/abs/path')).toBe(false);
    expect(isHubId('model.gguf')).toBe(false);
  });

  it('downloads a single-file repo into the hub layout, then hits the cache offline', async () => {
    const cacheDir = freshCache();
    const progress: [string, number, number | null][] = [];
    requests.length = 0;
    const snap = await resolveModelPath('tiny/gpt2', {
      cacheDir,
      endpoint,
      onProgress: (f, r, t) => progress.push([f, r, t]),
    });
    const repoDir = path.join(cacheDir, 'models--tiny--gpt2');
    expect(snap).toBe(path.join(repoDir, 'snapshots', 'main'));
    expect(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe('main');
    expect(listTree(snap)).toEqual(['config.json', 'model.safetensors', 'tokenizer_config.json']);
    // nothing else (no temp files) anywhere in the cache
    expect(listTree(repoDir)).toEqual(
      ['refs/main', 'snapshots/main/config.json', 'snapshots/main/model.safetensors', 'snapshots/main/tokenizer_config.json'].map(
        (p) => p.split('/').join(path.sep),
      ),
    );
    expect(requests).toContain('/tiny/gpt2/resolve/main/model.safetensors.index.json');
    expect(requests).toContain('/tiny/gpt2/resolve/main/generation_config.json');

    const orig = readSafetensors(path.join(fixturesDir, 'tiny-gpt2', 'model.safetensors')).tensors;
    const got = readSafetensorsDir(snap);
    expect([...got.keys()]).toEqual([...orig.keys()]);
    for (const [name, t] of orig) expect(got.get(name)!.data).toEqual(t.data);

    const size = fs.statSync(path.join(snap, 'model.safetensors')).size;
    const last = progress.filter(([f]) => f === 'model.safetensors').at(-1);
    expect(last).toEqual(['model.safetensors', size, size]);

    await stopServer();
    requests.length = 0;
    expect(await resolveModelPath('tiny/gpt2', { cacheDir, endpoint })).toBe(snap);
    expect(await resolveModelPath('tiny/gpt2', { cacheDir })).toBe(snap);
    expect(requests).toEqual([]);
  });

  it('downloads a sharded repo under the x-repo-commit snapshot name', async () => {
    const cacheDir = freshCache();
    const snap = await resolveModelPath('tiny/gpt2-sharded', { cacheDir, endpoint });
    const repoDir = path.join(cacheDir, 'models--tiny--gpt2-sharded');
    expect(snap).toBe(path.join(repoDir, 'snapshots', COMMIT));
    expect(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    const shards = fs.readdirSync(snap).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    expect(shards.length).toBeGreaterThan(1);
    expect(fs.existsSync(path.join(snap, 'model.safetensors.index.json'))).toBe(true);
    expect(fs.existsSync(path.join(snap, 'model.safetensors'))).toBe(false);

    const orig = readSafetensors(path.join(fixturesDir, 'tiny-gpt2', 'model.safetensors')).tensors;
    const got = readSafetensorsDir(snap);
    expect(got.size).toBe(orig.size);
    for (const [name, t] of orig) expect(got.get(name)!.data).toEqual(t.data);

    await stopServer();
    expect(await resolveModelPath('tiny/gpt2-sharded', { cacheDir })).toBe(snap);
    // a commit hash as revision resolves straight to its snapshot
    expect(await resolveModelPath('tiny/gpt2-sharded', { cacheDir, revision: COMMIT })).toBe(snap);
  });

  it('downloads a sharded vision-language repo with its preprocessor config; the model loads and runs as the local copy', async () => {
    const cacheDir = freshCache();
    const snap = await resolveModelPath('tiny/llava-sharded', { cacheDir, endpoint });
    const got = fs.readdirSync(snap).sort();
    expect(got).toEqual(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'preprocessor_config.json']);
    const local = path.join(repoRoot, 'test', 'fixtures', 'vlm', 'llava-new-siglip-qwen2');
    const [a, b] = [await loadModel(snap), await loadModel(local)];
    const images = readPixelValues(path.join(local, 'pixel_values.safetensors'), a.visionCfg!);
    const one = { data: images.data.slice(0, images.data.length / 2), shape: [1, ...images.shape.slice(1)] as [number, number, number, number] };
    const prompt = [1, 5, 93, 17];
    const [la, lb] = [a.run({ prompts: prompt, images: one }), b.run({ prompts: prompt, images: one })];
    expect(Array.from(la.dataSync())).toEqual(Array.from(lb.dataSync()));
    la.dispose();
    lb.dispose();
    a.dispose();
    b.dispose();
  });

  it('supports bare names, HF_ENDPOINT and HF_HUB_CACHE', async () => {
    const cacheDir = freshCache();
    process.env.HF_ENDPOINT = endpoint + '/';
    process.env.HF_HUB_CACHE = cacheDir;
    try {
      expect(hubCacheDir()).toBe(path.resolve(cacheDir));
      const snap = await resolveModelPath('solo');
      expect(snap).toBe(path.join(cacheDir, 'models--solo', 'snapshots', 'main'));
      expect(fs.existsSync(path.join(snap, 'model.safetensors'))).toBe(true);
    } finally {
      delete process.env.HF_ENDPOINT;
      delete process.env.HF_HUB_CACHE;
    }
  });

  it('a missing repo gives a clear error', async () => {
    const cacheDir = freshCache();
    await expectHooklensError(
      resolveModelPath('nobody/nothing', { cacheDir, endpoint }),
      '"nobody/nothing"',
      `${endpoint}/nobody/nothing/resolve/main/config.json`,
      '404',
    );
    expect(fs.existsSync(path.join(cacheDir, 'models--nobody--nothing'))).toBe(false);
  });

  it('a server error gives a clear error naming URL and status', async () => {
    await expectHooklensError(
      resolveModelPath('broken/server', { cacheDir: freshCache(), endpoint }),
      `${endpoint}/broken/server/resolve/main/config.json`,
      'HTTP 500',
    );
    const cacheDir = freshCache();
    await expectHooklensError(
      resolveModelPath('broken/weights', { cacheDir, endpoint }),
      `${endpoint}/broken/weights/resolve/main/model.safetensors`,
      'HTTP 503',
    );
    const repoDir = path.join(cacheDir, 'models--broken--weights');
    expect(fs.existsSync(path.join(repoDir, 'refs', 'main'))).toBe(false);
    // no endpoint → not found (incomplete snapshot is not a cache hit)
    await expectHooklensError(resolveModelPath('broken/weights', { cacheDir }), 'not found');
  });

  it('an interrupted download leaves no partial file visible', async () => {
    const cacheDir = freshCache();
    await expectHooklensError(
      resolveModelPath('broken/truncated', { cacheDir, endpoint }),
      `${endpoint}/broken/truncated/resolve/main/model.safetensors`,
    );
    const files = listTree(path.join(cacheDir, 'models--broken--truncated'));
    expect(files).toEqual([path.join('snapshots', 'main', 'config.json')]);
  });

  it('an unreachable endpoint gives a clear error', async () => {
    await stopServer();
    await expectHooklensError(
      resolveModelPath('tiny/gpt2', { cacheDir: freshCache(), endpoint }),
      'download failed',
      `${endpoint}/tiny/gpt2/resolve/main/config.json`,
    );
  });

  it('without an endpoint and not cached → clear error', async () => {
    const cacheDir = freshCache();
    const msg = await expectHooklensError(resolveModelPath('org/model', { cacheDir }), '"org/model"', 'HF_ENDPOINT', cacheDir);
    expect(msg).toMatch(/not found/);
  });
});

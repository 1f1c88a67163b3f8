/**
 * The SQLite feature store: one file holding a feature-analysis run (see feature-stats.ts) that
 * dashboards and queries read from.
 *
 * - better-sqlite3, WAL journal mode (persistent in the file header), `PRAGMA application_id`
 *   marks the file as ours and `PRAGMA user_version` is the schema version. Opening checks both:
 *   a newer version is refused with a one-line error, an older one is migrated in place (the
 *   MIGRATIONS list; version 1 is the first, so there is nothing to migrate yet).
 * - Atomicity: a store is written whole into a temp file beside the target (all inserts in one
 *   transaction), checkpointed so the WAL is empty, closed, and renamed over the target. Readers
 *   never see a half-written store and a failed or interrupted run leaves the old file untouched.
 *
 * Schema v1 (every float is REAL = float64; JSON columns hold arrays):
 *   meta(key TEXT PK, value TEXT JSON)                      run metadata (FeatureRunMeta fields)
 *   features(id INTEGER PK, n_active, density, max_act, mean_act, mean_active, has_logits)
 *   examples(feature, kind 'top'|'quantile', rank, band NULL|int, prompt, pos, act, start,
 *            tokens JSON ids, acts JSON, text)              PK (feature, kind, rank)
 *   bands(feature, band, lo, hi, count)                     quantile bands, PK (feature, band)
 *   histograms(feature, kind 'acts'|'logits', bin, lo, hi, count)   PK (feature, kind, bin)
 *   logits(feature, sign 'pos'|'neg', rank, token, value)   PK (feature, sign, rank)
 *   correlations(feature, rank, other, pearson, cosine)     PK (feature, rank)
 *   vocab(id INTEGER PK, str TEXT)                          strings of every token mentioned
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { fail, HooklensError } from '../errors.js';
import { tempPathFor } from '../io/atomic.js';
import type { Correlation, Example, FeatureRecord, Histogram, LogitEffect, QuantileExample } from './feature-stats.js';

export const FEATURE_STORE_SCHEMA_VERSION = 1;
/** 'HLFS' — PRAGMA application_id of hooklens feature stores. */
export const FEATURE_STORE_APPLICATION_ID = 0x484c4653;

/** Run metadata, stored as JSON values in the meta table. */
export interface FeatureRunMeta {
  /** Model path or id. */
  model: string;
  /** SAE directory. */
  sae: string;
  hook: string;
  hookLayer: number | null;
  architecture: string;
  dIn: number;
  dSae: number;
  /** Corpus file (or "--text"). */
  corpus: string;
  nPrompts: number;
  nTokens: number;
  maxPromptTokens: number;
  topK: number;
  context: number;
  quantileBands: number;
  quantileExamples: number;
  histBins: number;
  correlationTopN: number;
  seed: number;
  /** How the activation histogram is binned. */
  histogramConvention: string;
  /** How logit effects were computed, or "none". */
  logitConvention: string;
  /** "pearson over all tokens" or why correlations were not computed. */
  correlations: string;
  createdAt: string;
  [key: string]: unknown;
}

export interface FeatureStoreData {
  meta: FeatureRunMeta;
  features: readonly FeatureRecord[];
  /** Display strings of the token ids the records mention. */
  vocab: ReadonlyMap<number, string>;
}

export type FeatureSummary = Pick<FeatureRecord, 'id' | 'nActive' | 'density' | 'maxAct' | 'meanAct' | 'meanActive'>;

export type FeatureMetric = 'density' | 'max' | 'mean' | 'mean_active';

const METRIC_COLUMN: Record<FeatureMetric, string> = { density: 'density', max: 'max_act', mean: 'mean_act', mean_active: 'mean_active' };

const SCHEMA_V1 = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE features (
  id INTEGER PRIMARY KEY, n_active INTEGER NOT NULL, density REAL NOT NULL, max_act REAL NOT NULL,
  mean_act REAL NOT NULL, mean_active REAL NOT NULL, has_logits INTEGER NOT NULL);
CREATE TABLE examples (
  feature INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('top', 'quantile')), rank INTEGER NOT NULL,
  band INTEGER, prompt INTEGER NOT NULL, pos INTEGER NOT NULL, act REAL NOT NULL, start INTEGER NOT NULL,
  tokens TEXT NOT NULL, acts TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (feature, kind, rank));
CREATE TABLE bands (
  feature INTEGER NOT NULL, band INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, count INTEGER NOT NULL,
  PRIMARY KEY (feature, band));
CREATE TABLE histograms (
  feature INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('acts', 'logits')), bin INTEGER NOT NULL,
  lo REAL NOT NULL, hi REAL NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (feature, kind, bin));
CREATE TABLE logits (
  feature INTEGER NOT NULL, sign TEXT NOT NULL CHECK (sign IN ('pos', 'neg')), rank INTEGER NOT NULL,
  token INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (feature, sign, rank));
CREATE TABLE correlations (
  feature INTEGER NOT NULL, rank INTEGER NOT NULL, other INTEGER NOT NULL, pearson REAL NOT NULL,
  cosine REAL NOT NULL, PRIMARY KEY (feature, rank));
CREATE TABLE vocab (id INTEGER PRIMARY KEY, str TEXT NOT NULL);
`;
const INDEXES_V1 = `
CREATE INDEX features_density ON features (density);
CREATE INDEX features_max ON features (max_act);
CREATE INDEX features_mean ON features (mean_act);
`;

/**
 * Migrations: MIGRATIONS[v] takes a store from version v to v + 1 (inside one transaction).
 * Version 1 is the first schema, so the list is empty; add `(db) => db.exec('ALTER TABLE …')`
 * entries here when the schema changes and bump FEATURE_STORE_SCHEMA_VERSION.
 */
const MIGRATIONS: Record<number, (db: Database.Database) => void> = {};

type Db = Database.Database;

function jsonCell(v: unknown): string {
  return JSON.stringify(v);
}

/** The example's window as text (token strings joined), for text search. */
function windowText(tokens: readonly number[], vocab: ReadonlyMap<number, string>): string {
  return tokens.map((t) => vocab.get(t) ?? `<${t}>`).join('');
}

function insertAll(db: Db, data: FeatureStoreData): void {
  const { meta, features, vocab } = data;
  const putMeta = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)');
  const putFeature = db.prepare('INSERT INTO features (id, n_active, density, max_act, mean_act, mean_active, has_logits) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const putExample = db.prepare('INSERT INTO examples (feature, kind, rank, band, prompt, pos, act, start, tokens, acts, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
  const putBand = db.prepare('INSERT INTO bands (feature, band, lo, hi, count) VALUES (?, ?, ?, ?, ?)');
  const putHist = db.prepare('INSERT INTO histograms (feature, kind, bin, lo, hi, count) VALUES (?, ?, ?, ?, ?, ?)');
  const putLogit = db.prepare('INSERT INTO logits (feature, sign, rank, token, value) VALUES (?, ?, ?, ?, ?)');
  const putCorr = db.prepare('INSERT INTO correlations (feature, rank, other, pearson, cosine) VALUES (?, ?, ?, ?, ?)');
  const putVocab = db.prepare('INSERT INTO vocab (id, str) VALUES (?, ?)');
  const hist = (f: number, kind: 'acts' | 'logits', h: Histogram) => {
    h.counts.forEach((c, i) => putHist.run(f, kind, i, h.edges[i], h.edges[i + 1], c));
  };
  db.transaction(() => {
    putMeta.run('format', jsonCell('hooklens-feature-store'));
    for (const [k, v] of Object.entries(meta)) if (k !== 'format') putMeta.run(k, jsonCell(v));
    for (const f of features) {
      putFeature.run(f.id, f.nActive, f.density, f.maxAct, f.meanAct, f.meanActive, f.logits ? 1 : 0);
      f.top.forEach((e, r) => putExample.run(f.id, 'top', r, null, e.prompt, e.pos, e.act, e.start, jsonCell(e.tokens), jsonCell(e.acts), windowText(e.tokens, vocab)));
      f.quantiles.forEach((e, r) => putExample.run(f.id, 'quantile', r, e.band, e.prompt, e.pos, e.act, e.start, jsonCell(e.tokens), jsonCell(e.acts), windowText(e.tokens, vocab)));
      for (const b of f.bands) putBand.run(f.id, b.band, b.lo, b.hi, b.count);
      hist(f.id, 'acts', f.actHist);
      if (f.logits) {
        hist(f.id, 'logits', f.logits.hist);
        f.logits.pos.forEach((l, r) => putLogit.run(f.id, 'pos', r, l.token, l.value));
        f.logits.neg.forEach((l, r) => putLogit.run(f.id, 'neg', r, l.token, l.value));
      }
      f.correlations.forEach((c, r) => putCorr.run(f.id, r, c.feature, c.pearson, c.cosine));
    }
    for (const [id, s] of [...vocab].sort((a, b) => a[0] - b[0])) putVocab.run(id, s);
  })();
}

/** Can SQLite write the file and create its -wal/-shm files beside it? */
function canWriteBeside(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.W_OK);
    fs.accessSync(path.dirname(path.resolve(file)), fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function removeDbFiles(file: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) fs.rmSync(file + suffix, { force: true });
}

/**
 * Write a complete store to `file` atomically (temp file + rename); an existing file is replaced.
 * Errors are one-line HooklensErrors; nothing is left behind on failure.
 */
export function writeFeatureStore(file: string, data: FeatureStoreData): void {
  const target = path.resolve(file);
  if (fs.existsSync(target) && fs.statSync(target).isDirectory()) fail(`${file}: is a directory`);
  const dir = path.dirname(target);
  if (!fs.existsSync(dir)) fail(`${file}: directory ${dir} does not exist`);
  const tmp = tempPathFor(target);
  let db: Db | undefined;
  try {
    db = new Database(tmp);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma(`application_id = ${FEATURE_STORE_APPLICATION_ID}`);
    db.transaction(() => {
      db!.exec(SCHEMA_V1);
      db!.pragma(`user_version = ${FEATURE_STORE_SCHEMA_VERSION}`);
    })();
    insertAll(db, data);
    db.exec(INDEXES_V1);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    db = undefined;
    // A WAL/SHM left by an earlier store at this path must not be replayed onto the new file.
    fs.rmSync(`${target}-wal`, { force: true });
    fs.rmSync(`${target}-shm`, { force: true });
    fs.renameSync(tmp, target);
  } catch (e) {
    try {
      db?.close();
    } catch {
      /* closing is best effort */
    }
    removeDbFiles(tmp);
    if (e instanceof HooklensError) throw e;
    fail(`${file}: cannot write feature store (${(e as Error).message.split('\n')[0]})`);
  }
}

/** Check application id and schema version; migrate older stores when writable. */
function checkSchema(db: Db, file: string, writable: boolean): void {
  const appId = db.pragma('application_id', { simple: true }) as number;
  const version = db.pragma('user_version', { simple: true }) as number;
  if (appId !== FEATURE_STORE_APPLICATION_ID) {
    fail(`${file}: not a hooklens feature store (application_id ${appId}, schema version ${version})`);
  }
  if (version > FEATURE_STORE_SCHEMA_VERSION) {
    fail(`${file}: feature store schema v${version} is newer than this hooklens supports (v${FEATURE_STORE_SCHEMA_VERSION}); upgrade hooklens`);
  }
  if (version < 1) fail(`${file}: feature store has no schema version`);
  if (version < FEATURE_STORE_SCHEMA_VERSION) {
    if (!writable) fail(`${file}: feature store schema v${version} needs migrating to v${FEATURE_STORE_SCHEMA_VERSION}; open it writable`);
    for (let v = version; v < FEATURE_STORE_SCHEMA_VERSION; v++) {
      const step = MIGRATIONS[v];
      if (!step) fail(`${file}: no migration from feature store schema v${v}`);
      db.transaction(() => {
        step(db);
        db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }
}

interface ExampleRow {
  kind: 'top' | 'quantile';
  rank: number;
  band: number | null;
  prompt: number;
  pos: number;
  act: number;
  start: number;
  tokens: string;
  acts: string;
}

interface FeatureRow {
  id: number;
  n_active: number;
  density: number;
  max_act: number;
  mean_act: number;
  mean_active: number;
  has_logits: number;
}

function summaryOf(r: FeatureRow): FeatureSummary {
  return { id: r.id, nActive: r.n_active, density: r.density, maxAct: r.max_act, meanAct: r.mean_act, meanActive: r.mean_active };
}

export interface SearchHit {
  feature: number;
  /** The best matching top example of the feature. */
  act: number;
  prompt: number;
  pos: number;
  text: string;
}

/** Read access to a feature store. */
export class FeatureStore {
  private constructor(
    private readonly db: Db,
    readonly file: string,
  ) {}

  /**
   * Open a store. Read-only by default (migrating an older schema needs `writable`). Errors:
   * missing file, not a store, newer schema.
   */
  static open(file: string, opts: { writable?: boolean } = {}): FeatureStore {
    if (!fs.existsSync(file)) fail(`${file}: feature store does not exist`);
    if (fs.statSync(file).isDirectory()) fail(`${file}: is a directory, not a feature store`);
    let db: Db;
    try {
      // A read-only connection to a WAL database leaves empty -wal/-shm files behind when it
      // closes; a writable one set to query_only does not, so that is used whenever possible.
      const canWrite = canWriteBeside(file);
      if (opts.writable && !canWrite) fail(`${file}: feature store is not writable`);
      db = new Database(file, { readonly: !canWrite, fileMustExist: true });
      if (canWrite && !opts.writable) db.pragma('query_only = ON');
    } catch (e) {
      if (e instanceof HooklensError) throw e;
      fail(`${file}: cannot open feature store (${(e as Error).message.split('\n')[0]})`);
    }
    try {
      checkSchema(db, file, !!opts.writable);
    } catch (e) {
      db.close();
      if (e instanceof HooklensError) throw e;
      // SQLite rejects files that are not databases at the first read.
      fail(`${file}: not a hooklens feature store (${(e as Error).message.split('\n')[0]})`);
    }
    return new FeatureStore(db, file);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  journalMode(): string {
    return this.db.pragma('journal_mode', { simple: true }) as string;
  }

  meta(): FeatureRunMeta {
    const rows = this.db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[];
    const out: Record<string, unknown> = {};
    for (const r of rows) if (r.key !== 'format') out[r.key] = JSON.parse(r.value);
    return out as FeatureRunMeta;
  }

  featureCount(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM features').get() as { n: number }).n;
  }

  featureIds(): number[] {
    return (this.db.prepare('SELECT id FROM features ORDER BY id').all() as { id: number }[]).map((r) => r.id);
  }

  summaries(ids?: readonly number[]): FeatureSummary[] {
    const rows = this.db.prepare('SELECT * FROM features ORDER BY id').all() as FeatureRow[];
    if (!ids) return rows.map(summaryOf);
    const want = new Set(ids);
    return rows.filter((r) => want.has(r.id)).map(summaryOf);
  }

  /** Strings of the given token ids (or of every stored id). */
  vocab(ids?: Iterable<number>): Map<number, string> {
    const out = new Map<number, string>();
    if (!ids) {
      for (const r of this.db.prepare('SELECT id, str FROM vocab').all() as { id: number; str: string }[]) out.set(r.id, r.str);
      return out;
    }
    const get = this.db.prepare('SELECT str FROM vocab WHERE id = ?');
    for (const id of ids) {
      const r = get.get(id) as { str: string } | undefined;
      out.set(id, r ? r.str : `<${id}>`);
    }
    return out;
  }

  /** Everything stored for one feature, or null when there is no such feature. */
  getFeature(id: number): FeatureRecord | null {
    const f = this.db.prepare('SELECT * FROM features WHERE id = ?').get(id) as FeatureRow | undefined;
    if (!f) return null;
    const exRows = this.db.prepare('SELECT kind, rank, band, prompt, pos, act, start, tokens, acts FROM examples WHERE feature = ? ORDER BY kind, rank').all(id) as ExampleRow[];
    const ex = (r: ExampleRow): Example => ({ prompt: r.prompt, pos: r.pos, act: r.act, start: r.start, tokens: JSON.parse(r.tokens), acts: JSON.parse(r.acts) });
    const top = exRows.filter((r) => r.kind === 'top').map(ex);
    const quantiles: QuantileExample[] = exRows.filter((r) => r.kind === 'quantile').map((r) => ({ band: r.band!, ...ex(r) }));
    const bands = this.db.prepare('SELECT band, lo, hi, count FROM bands WHERE feature = ? ORDER BY band DESC').all(id) as FeatureRecord['bands'];
    const hist = (kind: 'acts' | 'logits'): Histogram => {
      const rows = this.db.prepare('SELECT lo, hi, count FROM histograms WHERE feature = ? AND kind = ? ORDER BY bin').all(id, kind) as { lo: number; hi: number; count: number }[];
      if (rows.length === 0) return { edges: [], counts: [] };
      return { edges: [rows[0].lo, ...rows.map((r) => r.hi)], counts: rows.map((r) => r.count) };
    };
    const logitRows = this.db.prepare('SELECT sign, token, value FROM logits WHERE feature = ? ORDER BY sign, rank').all(id) as { sign: string; token: number; value: number }[];
    const pick = (sign: string): LogitEffect[] => logitRows.filter((r) => r.sign === sign).map((r) => ({ token: r.token, value: r.value }));
    const correlations = (this.db.prepare('SELECT other, pearson, cosine FROM correlations WHERE feature = ? ORDER BY rank').all(id) as { other: number; pearson: number; cosine: number }[]).map(
      (r): Correlation => ({ feature: r.other, pearson: r.pearson, cosine: r.cosine }),
    );
    return {
      ...summaryOf(f),
      top,
      quantiles,
      bands,
      actHist: hist('acts'),
      correlations,
      logits: f.has_logits ? { pos: pick('pos'), neg: pick('neg'), hist: hist('logits') } : null,
    };
  }

  /** Features ranked by a metric (highest first unless ascending); dead features are left out unless includeDead. */
  topFeaturesBy(metric: FeatureMetric, opts: { limit?: number; ascending?: boolean; includeDead?: boolean } = {}): FeatureSummary[] {
    const col = METRIC_COLUMN[metric];
    if (!col) fail(`unknown feature metric '${metric}' (one of ${Object.keys(METRIC_COLUMN).join(', ')})`);
    const where = opts.includeDead ? '' : 'WHERE n_active > 0';
    const dir = opts.ascending ? 'ASC' : 'DESC';
    const rows = this.db.prepare(`SELECT * FROM features ${where} ORDER BY ${col} ${dir}, id ASC LIMIT ?`).all(opts.limit ?? -1) as FeatureRow[];
    return rows.map(summaryOf);
  }

  /**
   * Features whose top examples contain `text` (case-insensitive for ASCII), best activation first;
   * one hit per feature, its highest-activating matching example.
   */
  search(text: string, opts: { limit?: number } = {}): SearchHit[] {
    const pattern = `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    const rows = this.db
      .prepare(
        `SELECT feature, MAX(act) AS act, prompt, pos, text FROM examples
         WHERE kind = 'top' AND text LIKE ? ESCAPE '\\' GROUP BY feature ORDER BY act DESC, feature ASC LIMIT ?`,
      )
      .all(pattern, opts.limit ?? -1) as SearchHit[];
    return rows;
  }
}

/**
 * A TinyStories-style corpus sampled from stories260K itself (no download), for training and
 * evaluating sparse autoencoders on that model. Seeded and deterministic: story i is sampled
 * with its own mulberry32 stream seeded from (seed, i), starting from BOS alone or from BOS + one
 * of a few story openings.
 *
 *   npx tsx scripts/generate-stories-corpus.ts [--model ../shared/models/stories260K.gguf]
 *       [--out datasets/stories] [--stories 600] [--max-tokens 128] [--seed 260]
 *       [--temperature 0.9] [--top-p 0.95] [--top-k 0] [--batch 32]
 *
 * Writes OUT/stories.jsonl, one {"text": s, "tokens": [BOS, ...]} per line (no EOS; `tokens` is
 * what the model's tokenizer gives for `text` — checked — unless the README lists an exception),
 * and OUT/README.md describing how it was made and the fixed train/eval split.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { progressBar } from '../src/cli/progress.js';
import { sampleGenerate } from '../src/generation/sampling.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { loadModel } from '../src/models/load.js';
import { STORIES_EVAL_FRACTION, storiesTrainCount } from '../datasets/stories.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: '../shared/models/stories260K.gguf' },
    out: { type: 'string', default: 'datasets/stories' },
    stories: { type: 'string', default: '600' },
    'max-tokens': { type: 'string', default: '128' },
    seed: { type: 'string', default: '260' },
    temperature: { type: 'string', default: '0.9' },
    'top-p': { type: 'string', default: '0.95' },
    'top-k': { type: 'string', default: '0' },
    batch: { type: 'string', default: '32' },
  },
});

const N = Number(values.stories);
const MAX_TOKENS = Number(values['max-tokens']);
const SEED = Number(values.seed);
const TEMPERATURE = Number(values.temperature);
const TOP_P = Number(values['top-p']);
const TOP_K = Number(values['top-k']);
const BATCH = Number(values.batch);
const EVAL_FRACTION = STORIES_EVAL_FRACTION;

/**
 * Story openings, cycled through in order; '' means BOS alone. About a third of the stories start
 * from BOS alone so the corpus keeps the model's own distribution of openings too.
 */
const OPENINGS = [
  '',
  'Once upon a time',
  'One day',
  '',
  'Lily',
  'Tom had a',
  '',
  'Once upon a time, there was a little',
  'There was a',
  '',
  'Sam and',
  'The sun was',
  '',
  'Mia wanted to',
  'In a small town',
  '',
  'Ben liked to',
  'Sara saw a',
];

const SENTENCE_END = /[.!?]["']?$/;

const t0 = Date.now();
const model = await loadModel(values.model!);
const tok = model.tokenizer;
if (!tok) throw new Error(`${values.model}: the model has no tokenizer`);
const bos = tok.bosTokenId;
const eos = tok.eosTokenId;
if (bos === null || eos === null) throw new Error(`${values.model}: tokenizer lacks BOS/EOS`);

const prompts = Array.from({ length: N }, (_, i) => {
  const opening = OPENINGS[i % OPENINGS.length];
  return opening === '' ? [bos] : tok.encode(opening);
});
for (const p of prompts) if (p[0] !== bos) throw new Error('tokenizer does not add BOS');

const bar = progressBar('sampling stories');
const seqs = sampleGenerate(model, prompts, {
  maxTokens: MAX_TOKENS,
  temperature: TEMPERATURE,
  topP: TOP_P,
  topK: TOP_K,
  seed: SEED,
  batchSize: BATCH,
  stopAtEos: true,
  // llama2.c models (stories260K) were trained on BOS-separated stories: a sampled BOS ends one.
  stopTokens: [bos],
  onProgress: (d, t) => bar.update(d, t),
});
bar.stop();
const genSeconds = (Date.now() - t0) / 1000;

let endedNaturally = 0;
let cutAtSentence = 0;
let cutMidSentence = 0;
const nonCanonical: number[] = [];
const lines: string[] = [];
const records: { text: string; tokens: number[] }[] = [];
seqs.forEach((seq, i) => {
  let tokens = seq;
  const last = tokens[tokens.length - 1];
  if (tokens.length > prompts[i].length && (last === eos || last === bos)) {
    endedNaturally++;
    tokens = tokens.slice(0, -1);
  } else {
    // Truncated by the length limit: end at the last complete sentence when that keeps most of it.
    let cut = -1;
    for (let k = tokens.length; k > prompts[i].length; k--) {
      if (SENTENCE_END.test(tok.decode(tokens.slice(0, k)))) {
        cut = k;
        break;
      }
    }
    if (cut >= tokens.length / 2) {
      tokens = tokens.slice(0, cut);
      cutAtSentence++;
    } else cutMidSentence++;
  }
  const text = tok.decode(tokens);
  const re = tok.encode(text);
  if (re.length !== tokens.length || re.some((t, k) => t !== tokens[k])) nonCanonical.push(i);
  records.push({ text, tokens });
  lines.push(JSON.stringify({ text, tokens }));
});

const outDir = values.out!;
fs.mkdirSync(outDir, { recursive: true });
const jsonl = lines.join('\n') + '\n';
writeFileAtomic(path.join(outDir, 'stories.jsonl'), jsonl);

const nTrain = storiesTrainCount(N);
const nEval = N - nTrain;
const count = (rs: typeof records) => rs.reduce((s, r) => s + r.tokens.length, 0);
const totalTokens = count(records);
const trainTokens = count(records.slice(0, nTrain));
const evalTokens = count(records.slice(nTrain));
const lengths = records.map((r) => r.tokens.length).sort((a, b) => a - b);
const unique = new Set(records.map((r) => r.text)).size;
const cmd =
  `npx tsx scripts/generate-stories-corpus.ts --model ${values.model} --out ${outDir} --stories ${N} ` +
  `--max-tokens ${MAX_TOKENS} --seed ${SEED} --temperature ${TEMPERATURE} --top-p ${TOP_P} --top-k ${TOP_K} ` +
  `--batch ${BATCH}`;

const readme = `# stories — a small corpus sampled from stories260K

\`stories.jsonl\` holds ${N} short stories sampled from \`stories260K.gguf\` (a 260K-parameter Llama
trained on TinyStories) by the model itself, so sparse autoencoders for that model can be trained
and evaluated without downloading anything. The texts are what a 260K-parameter model writes:
TinyStories-like vocabulary and sentence shapes, often incoherent. One JSON object per line:

    {"text": "<story>", "tokens": [1, ...]}

\`tokens\` starts with BOS (id ${bos}) and has no EOS. It is exactly what the model's tokenizer
returns for \`text\` (\`model.encode(text)\`)${nonCanonical.length === 0 ? ' — checked for every line' : `, checked for every line except ${nonCanonical.length} (0-based lines ${nonCanonical.join(', ')}), whose sampled tokens are a non-canonical segmentation of their text; their \`tokens\` are kept as sampled`}.

## Split (fixed)

- train: lines 0–${nTrain - 1} (${nTrain} stories, ${trainTokens} tokens)
- eval:  lines ${nTrain}–${N - 1} (the last ${nEval} stories, ${Math.round(EVAL_FRACTION * 100)}%; ${evalTokens} tokens)

\`readStoriesSplit()\` in \`datasets/stories.ts\` returns exactly this split.

## How it was made

    ${cmd}

- seed ${SEED}; story i uses its own mulberry32 stream seeded with \`deriveSeed(${SEED}, i)\`
  (\`src/generation/sampling.ts\`), so a story does not depend on the batch it was generated in
  (up to float rounding of batched matmuls on the wasm backend)
- sampling: temperature ${TEMPERATURE}, top-p ${TOP_P}, top-k ${TOP_K === 0 ? 'off' : TOP_K}; full forward per step, ${BATCH} stories per batch
- prompts cycle through ${OPENINGS.length} openings (story i uses opening i mod ${OPENINGS.length}; '' = BOS alone):
  ${OPENINGS.map((o) => JSON.stringify(o)).join(', ')}
- at most ${MAX_TOKENS} tokens per story including BOS; a story ends when the model samples EOS or
  BOS (stories260K, like llama2.c's TinyStories models, was trained on BOS-separated stories, so
  it starts a new story with BOS rather than emitting EOS); that token is dropped
- ended by themselves (EOS/BOS): ${endedNaturally}; hit the length limit and cut after their last complete
  sentence: ${cutAtSentence}; hit the limit and kept as they were (no sentence end in their second half): ${cutMidSentence}

## Counts

- stories: ${N} (${unique} distinct texts)
- tokens: ${totalTokens} in total (BOS included), ${(totalTokens / N).toFixed(1)} per story on average;
  length min ${lengths[0]}, median ${lengths[Math.floor(N / 2)]}, max ${lengths[N - 1]}
- file size: ${(Buffer.byteLength(jsonl) / 1024).toFixed(0)} KiB
- generation time: ${genSeconds.toFixed(0)} s (wasm backend; CPU shared with other jobs)

Activation caches for SAE training are made from this file by
\`scripts/cache-stories-activations.ts\` (written to \`sae-runs/\`, not committed).
`;
writeFileAtomic(path.join(outDir, 'README.md'), readme);
model.dispose();

console.log(
  JSON.stringify({
    stories: N,
    unique,
    tokens: totalTokens,
    train: { stories: nTrain, tokens: trainTokens },
    eval: { stories: nEval, tokens: evalTokens },
    endedNaturally,
    cutAtSentence,
    cutMidSentence,
    nonCanonical: nonCanonical.length,
    bytes: Buffer.byteLength(jsonl),
    seconds: Number(genSeconds.toFixed(1)),
  }),
);
console.log('sample:', records[1].text);

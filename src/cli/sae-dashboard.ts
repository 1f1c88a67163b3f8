/** `hooklens sae dashboard`: Neuronpedia-compatible JSON batches and a static HTML dashboard from a feature store. */
import { fail } from '../errors.js';
import { exportDashboard, parseFeatureSelection } from '../sae/dashboard.js';
import { FeatureStore } from '../sae/feature-store.js';
import { parseOptions, parsePositiveInt, printJson, requireString, type Command } from './args.js';

const CMD = 'sae dashboard';

export const saeDashboardCommand: Command = {
  name: 'dashboard',
  summary: 'export Neuronpedia feature JSON and a static HTML dashboard from a feature store',
  usage: `hooklens sae dashboard --db FILE.sqlite --out DIR [--features 0-99|all] [--batch-size 128]
                        [--model-id ID] [--sae-set NAME] [--title S] [--json]

  --db FILE         feature store written by \`hooklens sae features\`
  --out DIR         writes DIR/index.html (self-contained: inline CSS/JS, data embedded) and
                    DIR/features/batch-{n}.json (SAEDashboard / Neuronpedia batch format); built
                    beside DIR and swapped in whole. An existing DIR must be empty or an earlier
                    dashboard.
  --features SPEC   ids and ranges, e.g. 0-99,120 (default: all)
  --batch-size N    features per batch file (default 128)
  --model-id ID     Neuronpedia model id (default: the model file name)
  --sae-set NAME    Neuronpedia SAE set (default hooklens); source id is {layer}-{NAME}
  --json            print {"out","index","batches","features"}`,
  async run(argv) {
    const { values } = parseOptions(CMD, argv, {
      db: { type: 'string' },
      out: { type: 'string' },
      features: { type: 'string' },
      'batch-size': { type: 'string' },
      'model-id': { type: 'string' },
      'sae-set': { type: 'string' },
      title: { type: 'string' },
      json: { type: 'boolean' },
    });
    const db = requireString(CMD, values, 'db');
    const out = requireString(CMD, values, 'out');
    const batchSize = parsePositiveInt('--batch-size', values['batch-size'], 128);
    for (const k of ['model-id', 'sae-set'] as const) {
      const v = values[k];
      if (v !== undefined && !/^[A-Za-z0-9._-]+$/.test(v)) fail(`--${k}: '${v}' may hold only letters, digits, '.', '_' and '-'`);
    }
    const store = FeatureStore.open(db);
    try {
      const features = parseFeatureSelection(values.features ?? 'all', store.featureIds());
      const r = exportDashboard(store, out, {
        features,
        batchSize,
        modelId: values['model-id'],
        saeSet: values['sae-set'],
        title: values.title,
      });
      if (values.json) printJson({ out: r.dir, index: `${r.dir}/index.html`, batches: r.batches, features: r.features });
      else console.error(`wrote ${r.features} features in ${r.batches} batch files and ${r.dir}/index.html`);
    } finally {
      store.close();
    }
  },
};

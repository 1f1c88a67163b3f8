/**
 * `hooklens sae <subcommand>`: one module per subcommand. To add one, import its Command and
 * list it in SUBCOMMANDS.
 */
import { fail } from '../errors.js';
import type { Command } from './args.js';
import { saeDashboardCommand } from './sae-dashboard.js';
import { saeEvalCommand } from './sae-eval.js';
import { saeFeaturesCommand } from './sae-features.js';
import { saeTrainCommand } from './sae-train.js';

// In the order the usage lists them.
const SUBCOMMANDS: Command[] = [saeEvalCommand, saeTrainCommand, saeFeaturesCommand, saeDashboardCommand];

function usage(): string {
  const list = SUBCOMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`);
  return `hooklens sae <subcommand> [options]   sparse autoencoders (SAELens format)\n\n${list.join('\n')}\n\nhooklens sae <subcommand> --help shows one subcommand's options.`;
}

export const saeCommand: Command = {
  name: 'sae',
  summary: 'sparse autoencoders: train, eval, features, dashboard',
  handlesHelp: true,
  get usage() {
    return usage();
  },
  async run(argv) {
    const [name, ...rest] = argv;
    const names = SUBCOMMANDS.map((c) => c.name).join(', ');
    if (name === '--help' || name === '-h') {
      console.log(usage());
      return;
    }
    if (!name || name.startsWith('-')) fail(`missing subcommand (one of ${names})`);
    const sub = SUBCOMMANDS.find((c) => c.name === name);
    if (!sub) fail(`unknown subcommand '${name}' (one of ${names})`);
    if (rest.includes('--help') || rest.includes('-h')) {
      console.log(sub.usage);
      return;
    }
    await sub.run(rest);
  },
};

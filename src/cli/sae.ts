/**
 * `hooklens sae <subcommand>`: one module per subcommand. To add one, import its Command and
 * list it in SUBCOMMANDS (and drop its name from PLANNED).
 */
import { fail } from '../errors.js';
import type { Command } from './args.js';
import { saeDashboardCommand } from './sae-dashboard.js';
import { saeEvalCommand } from './sae-eval.js';
import { saeFeaturesCommand } from './sae-features.js';

const SUBCOMMANDS: Command[] = [saeEvalCommand, saeFeaturesCommand, saeDashboardCommand];
/** Subcommands announced in the design but not implemented yet. */
const PLANNED = ['train', 'features', 'dashboard'].filter((n) => !SUBCOMMANDS.some((c) => c.name === n));

function usage(): string {
  const list = SUBCOMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`);
  for (const n of PLANNED) list.push(`  ${n.padEnd(10)} (not available yet)`);
  const details = SUBCOMMANDS.map((c) => c.usage).join('\n\n');
  return `hooklens sae <subcommand> [options]   sparse autoencoders (SAELens format)\n\n${list.join('\n')}\n\n${details}`;
}

export const saeCommand: Command = {
  name: 'sae',
  summary: 'sparse autoencoders: eval (train, features, dashboard to come)',
  get usage() {
    return usage();
  },
  async run(argv) {
    const [name, ...rest] = argv;
    const names = [...SUBCOMMANDS.map((c) => c.name), ...PLANNED].join(', ');
    if (!name || name.startsWith('-')) fail(`sae: missing subcommand (one of ${names})`);
    const sub = SUBCOMMANDS.find((c) => c.name === name);
    if (!sub) {
      if (PLANNED.includes(name)) fail(`sae ${name}: not implemented yet`);
      fail(`sae: unknown subcommand '${name}' (subcommands: ${names})`);
    }
    await sub.run(rest);
  },
};

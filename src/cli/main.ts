/** `hooklens` entry point: dispatch to one module per subcommand; one-line errors, non-zero exit. */
import { HooklensError } from '../errors.js';
import type { Command } from './args.js';
import { cacheCommand } from './cache.js';
import { convertCommand } from './convert.js';
import { ioiDatasetCommand } from './ioi-dataset.js';
import { patchCommand } from './patch.js';
import { probeCommand } from './probe.js';
import { generateCommand } from './generate.js';
import { hooksCommand } from './hooks.js';
import { runCommand } from './run.js';
import { saeCommand } from './sae.js';
import { tokenizeCommand } from './tokenize.js';

const COMMANDS: Command[] = [runCommand, tokenizeCommand, generateCommand, cacheCommand, patchCommand, hooksCommand, convertCommand, ioiDatasetCommand, saeCommand, probeCommand];

function overview(): string {
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`);
  return `hooklens — mechanistic interpretability for transformers\n\nusage: hooklens <command> [options]   (hooklens <command> --help)\n\n${lines.join('\n')}`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(overview());
    return name ? 0 : 1;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    console.error(`hooklens: unknown command '${name}' (commands: ${COMMANDS.map((c) => c.name).join(', ')})`);
    return 2;
  }
  if (!cmd.handlesHelp && (rest.includes('--help') || rest.includes('-h'))) {
    console.log(cmd.usage);
    return 0;
  }
  if (cmd.handlesHelp && rest.length === 0) {
    console.log(cmd.usage);
    return 1;
  }
  try {
    await cmd.run(rest);
    return 0;
  } catch (e) {
    if (e instanceof HooklensError) {
      console.error(`hooklens ${name}: error: ${e.message}`);
    } else {
      const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
      console.error(`hooklens ${name}: internal error: ${msg}`);
      if (process.env.HOOKLENS_DEBUG && e instanceof Error) console.error(e.stack);
    }
    return 1;
  }
}

/**
 * The one system dependency of the test suite: a real Chromium for the dashboard browser check.
 * `npm test` runs this first (the `pretest` script): when Chromium is missing and this user may
 * install packages (root, or passwordless sudo), Debian's package is installed with apt-get;
 * otherwise it stops with one line saying what to do.
 *
 * Decisions are a pure function of injected probes, so every branch is testable without
 * touching the machine.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

/** Where Debian's `chromium` package puts the browser. */
export const DEBIAN_CHROMIUM = '/usr/bin/chromium';

/** The browser the tests launch: HOOKLENS_CHROMIUM if set, else Debian's. */
export function chromiumPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.HOOKLENS_CHROMIUM || DEBIAN_CHROMIUM;
}

export interface SetupProbes {
  env: NodeJS.ProcessEnv;
  /** An executable file exists at this path. */
  isExecutable(file: string): boolean;
  isRoot(): boolean;
  /** `sudo -n true` succeeds (sudo present and needs no password). */
  canSudo(): boolean;
  hasCommand(cmd: string): boolean;
  /** Run a command; quiet = capture output instead of showing it. Returns exit code and last stderr line. */
  run(argv: string[], quiet: boolean): { code: number; lastLine: string };
  /** Progress lines (stderr). */
  log(line: string): void;
  /** No TTY (CI): keep apt's output out of the log unless it fails. */
  quiet: boolean;
}

export type SetupResult = { ok: true; path: string; installed: boolean } | { ok: false; message: string };

const HOW_TO = 'install it with `sudo apt-get install chromium` or set HOOKLENS_CHROMIUM=/path/to/chromium';

export function ensureChromium(p: SetupProbes): SetupResult {
  const target = chromiumPath(p.env);
  if (p.isExecutable(target)) return { ok: true, path: target, installed: false };
  const why = `Chromium (needed by the dashboard browser test) not found at ${target}`;
  if (p.env.HOOKLENS_NO_INSTALL === '1') return { ok: false, message: `${why}; HOOKLENS_NO_INSTALL=1 forbids installing it: ${HOW_TO}` };
  if (!p.hasCommand('apt-get')) return { ok: false, message: `${why} and this machine has no apt-get to install Debian's package: ${HOW_TO}` };
  let prefix: string[];
  if (p.isRoot()) prefix = [];
  else if (p.hasCommand('sudo') && p.canSudo()) prefix = ['sudo', '-n'];
  else return { ok: false, message: `${why}, and installing it needs root (not root, no passwordless sudo): ${HOW_TO}` };

  p.log(`pretest: ${why}; installing Debian's chromium (${[...prefix, 'apt-get', 'install', 'chromium'].join(' ')})…`);
  const q = p.quiet ? ['-qq'] : [];
  const env = ['env', 'DEBIAN_FRONTEND=noninteractive'];
  for (const step of [[...prefix, ...env, 'apt-get', 'update', ...q], [...prefix, ...env, 'apt-get', 'install', '-y', ...q, 'chromium']]) {
    const r = p.run(step, p.quiet);
    if (r.code !== 0) {
      const detail = r.lastLine ? `: ${r.lastLine}` : '';
      return { ok: false, message: `${why}; \`${step.filter((s) => s !== '-qq').join(' ')}\` failed (exit ${r.code})${detail}; ${HOW_TO}` };
    }
  }
  if (!p.isExecutable(target)) {
    return { ok: false, message: `installed Debian's chromium but ${target} still does not exist (HOOKLENS_CHROMIUM points elsewhere?); ${HOW_TO}` };
  }
  p.log(`pretest: chromium installed at ${target}`);
  return { ok: true, path: target, installed: true };
}

/** The probes of this machine. */
export function systemProbes(): SetupProbes {
  const ok = (argv: string[]) => spawnSync(argv[0], argv.slice(1), { stdio: 'ignore' }).status === 0;
  return {
    env: process.env,
    isExecutable: (file) => {
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
      } catch {
        return false;
      }
    },
    isRoot: () => process.getuid?.() === 0,
    canSudo: () => ok(['sudo', '-n', 'true']),
    hasCommand: (cmd) => ok(['sh', '-c', `command -v ${cmd}`]),
    run: (argv, quiet) => {
      const r = spawnSync(argv[0], argv.slice(1), { stdio: quiet ? ['ignore', 'ignore', 'pipe'] : 'inherit', encoding: 'utf8' });
      const lines = (r.stderr ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
      return { code: r.status ?? 1, lastLine: lines.at(-1) ?? (r.error ? r.error.message : '') };
    },
    log: (line) => process.stderr.write(line + '\n'),
    quiet: !process.stderr.isTTY,
  };
}

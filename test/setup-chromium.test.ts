/**
 * `npm test`'s set-up path on a machine without Chromium: the pretest step installs Debian's
 * package when this user may, and otherwise stops with one line saying what to do.
 * The real `npm run pretest` runs with HOOKLENS_CHROMIUM pointing nowhere and a fake apt-get
 * (and sudo) first on PATH, so nothing is installed on the machine running the tests.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureChromium, type SetupProbes } from '../src/setup/chromium.js';

const ROOT = path.resolve(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooklens-setup-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A bin directory with fake apt-get and sudo that log their arguments; install creates $HOOKLENS_CHROMIUM. */
function fakeBin(dir: string, opts: { failInstall?: boolean } = {}): { bin: string; log: string } {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const log = path.join(dir, 'apt.log');
  fs.writeFileSync(
    path.join(bin, 'apt-get'),
    [
      '#!/bin/sh',
      `echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "${log}"`,
      'case "$*" in *install*)',
      opts.failInstall ? '  echo "E: Unable to locate package chromium" >&2; exit 100;;' : '  mkdir -p "$(dirname "$HOOKLENS_CHROMIUM")"; printf "#!/bin/sh\\n" > "$HOOKLENS_CHROMIUM"; chmod +x "$HOOKLENS_CHROMIUM";;',
      'esac',
      'exit 0',
    ].join('\n') + '\n',
    { mode: 0o755 },
  );
  // Non-root runs go through sudo -n: the fake one just runs the command.
  fs.writeFileSync(path.join(bin, 'sudo'), `#!/bin/sh\necho "sudo $*" >> "${log}"\n[ "$1" = "-n" ] && shift\nexec "$@"\n`, { mode: 0o755 });
  return { bin, log };
}

function npmPretest(env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn('npm', ['run', '--silent', 'pretest'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** stderr lines that are ours (npm may print config warnings of its own). */
const ourLines = (s: string) => s.split('\n').filter((l) => l.startsWith('pretest:'));

describe('npm test set-up: Chromium for the browser test', () => {
  it('npm run pretest installs Debian chromium through apt-get when it is missing', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'install');
    const { bin, log } = fakeBin(dir);
    const target = path.join(dir, 'nowhere', 'chromium');
    const r = await npmPretest({ ...process.env, PATH: `${bin}:${process.env.PATH}`, HOOKLENS_CHROMIUM: target, HOOKLENS_NO_INSTALL: '' });
    expect(r.code, r.stderr).toBe(0);
    const calls = fs.readFileSync(log, 'utf8').trim().split('\n').filter((l) => l.startsWith('apt-get'));
    // update, then a non-interactive install of the chromium package; quiet without a TTY.
    expect(calls).toEqual(['apt-get update -qq DEBIAN_FRONTEND=noninteractive', 'apt-get install -y -qq chromium DEBIAN_FRONTEND=noninteractive']);
    expect(fs.existsSync(target)).toBe(true);
    const lines = ourLines(r.stderr);
    expect(lines[0]).toContain(`not found at ${target}`);
    expect(lines.at(-1)).toBe(`pretest: chromium installed at ${target}`);
  });

  it('does nothing when Chromium is present', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'present');
    const { bin, log } = fakeBin(dir);
    const target = path.join(dir, 'chromium');
    fs.writeFileSync(target, '#!/bin/sh\n', { mode: 0o755 });
    const r = await npmPretest({ ...process.env, PATH: `${bin}:${process.env.PATH}`, HOOKLENS_CHROMIUM: target });
    expect(r.code, r.stderr).toBe(0);
    expect(ourLines(r.stderr)).toEqual([]);
    expect(fs.existsSync(log)).toBe(false);
  });

  it('HOOKLENS_NO_INSTALL=1: one line saying what to do, exit 1, nothing installed', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'noinstall');
    const { bin, log } = fakeBin(dir);
    const target = path.join(dir, 'nowhere', 'chromium');
    const r = await npmPretest({ ...process.env, PATH: `${bin}:${process.env.PATH}`, HOOKLENS_CHROMIUM: target, HOOKLENS_NO_INSTALL: '1' });
    expect(r.code).not.toBe(0);
    const lines = ourLines(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`not found at ${target}`);
    expect(lines[0]).toContain('sudo apt-get install chromium');
    expect(lines[0]).toContain('HOOKLENS_CHROMIUM');
    expect(fs.existsSync(log)).toBe(false);
    expect(fs.existsSync(target)).toBe(false);
  });

  it('a failing apt-get: one line with its reason, exit 1', { timeout: 120_000 }, async () => {
    const dir = path.join(tmp, 'fail');
    const { bin } = fakeBin(dir, { failInstall: true });
    const target = path.join(dir, 'nowhere', 'chromium');
    const r = await npmPretest({ ...process.env, PATH: `${bin}:${process.env.PATH}`, HOOKLENS_CHROMIUM: target, HOOKLENS_NO_INSTALL: '' });
    expect(r.code).not.toBe(0);
    const last = ourLines(r.stderr).at(-1)!;
    expect(last).toContain('apt-get install -y chromium');
    expect(last).toContain('exit 100');
    expect(last).toContain('Unable to locate package chromium');
  });
});

describe('ensureChromium decisions', () => {
  function probes(over: Partial<SetupProbes> & { files?: Set<string> } = {}): SetupProbes & { ran: string[][]; logged: string[] } {
    const files = over.files ?? new Set<string>();
    const ran: string[][] = [];
    const logged: string[] = [];
    return {
      env: { HOOKLENS_CHROMIUM: '/opt/none/chromium' },
      isExecutable: (f) => files.has(f),
      isRoot: () => false,
      canSudo: () => false,
      hasCommand: () => true,
      run: (argv) => {
        ran.push(argv);
        if (argv.includes('install')) files.add('/opt/none/chromium');
        return { code: 0, lastLine: '' };
      },
      log: (l) => logged.push(l),
      quiet: true,
      ...over,
      ran,
      logged,
    };
  }

  it('not root and no passwordless sudo: refuses with the command to run, runs nothing', () => {
    const p = probes();
    const r = ensureChromium(p);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toMatch(/needs root.*sudo apt-get install chromium/);
    expect(p.ran).toEqual([]);
  });

  it('not root with passwordless sudo: installs through sudo -n', () => {
    const p = probes({ canSudo: () => true });
    const r = ensureChromium(p);
    expect(r).toEqual({ ok: true, path: '/opt/none/chromium', installed: true });
    expect(p.ran.map((a) => a.slice(0, 2))).toEqual([['sudo', '-n'], ['sudo', '-n']]);
  });

  it('no apt-get (not Debian): refuses with the way out', () => {
    const p = probes({ isRoot: () => true, hasCommand: (c) => c !== 'apt-get' });
    const r = ensureChromium(p);
    expect(!r.ok && r.message).toMatch(/no apt-get/);
    expect(p.ran).toEqual([]);
  });

  it('installed package does not land where HOOKLENS_CHROMIUM points: says so', () => {
    const p = probes({ isRoot: () => true, run: () => ({ code: 0, lastLine: '' }) });
    const r = ensureChromium(p);
    expect(!r.ok && r.message).toMatch(/still does not exist/);
  });

  it('defaults to Debian\'s path when HOOKLENS_CHROMIUM is unset', () => {
    const p = probes({ env: {}, files: new Set(['/usr/bin/chromium']) });
    expect(ensureChromium(p)).toEqual({ ok: true, path: '/usr/bin/chromium', installed: false });
  });
});

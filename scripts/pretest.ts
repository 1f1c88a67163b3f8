/**
 * `npm test` runs this first (npm's pretest hook): it brings what the test suite needs on a fresh
 * machine — Debian's chromium for the dashboard browser test — or stops with one line saying why.
 */
import { ensureChromium, systemProbes } from '../src/setup/chromium.js';

const result = ensureChromium(systemProbes());
if (!result.ok) {
  process.stderr.write(`pretest: ${result.message}\n`);
  process.exit(1);
}

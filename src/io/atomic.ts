import fs from 'node:fs';
import path from 'node:path';

/** A sibling temp path for `target`; renamed over it only once writing succeeded. */
export function tempPathFor(target: string): string {
  const dir = path.dirname(path.resolve(target));
  return path.join(dir, `.${path.basename(target)}.${process.pid}.${Date.now()}.tmp`);
}

/** Write a whole file atomically: temp file in the same directory, then rename. */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  const tmp = tempPathFor(target);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

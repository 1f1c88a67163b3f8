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

/** Fill `target` through a temp file: `write(fd)` writes, then fsync + rename. On failure the temp is removed. */
export function writeThroughTemp(target: string, write: (fd: number) => void): void {
  const tmp = tempPathFor(target);
  const fd = fs.openSync(tmp, 'w');
  try {
    write(fd);
    commitTemp(fd, tmp, target);
  } catch (e) {
    discardTemp(fd, tmp);
    throw e;
  }
}

/** Async form of writeThroughTemp (e.g. streaming a download). */
export async function writeThroughTempAsync(target: string, write: (fd: number) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(target);
  const fd = fs.openSync(tmp, 'w');
  try {
    await write(fd);
    commitTemp(fd, tmp, target);
  } catch (e) {
    discardTemp(fd, tmp);
    throw e;
  }
}

function commitTemp(fd: number, tmp: string, target: string): void {
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, target);
}

function discardTemp(fd: number, tmp: string): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* already closed by commitTemp */
  }
  fs.rmSync(tmp, { force: true });
}

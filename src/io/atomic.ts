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

/**
 * Build a whole directory atomically: `fill(tmp)` writes into a sibling temp directory, which then
 * replaces `target` by rename (a non-empty directory cannot be renamed over, so an existing one is
 * moved aside first and restored if the swap fails). Files of the old directory for which
 * `carryOver(name)` holds are moved into the new one. On any failure the temp directory is removed
 * and `target` is as it was; the error is rethrown.
 */
export function writeDirAtomic(target: string, fill: (tmp: string) => void, carryOver: (name: string) => boolean = () => false): void {
  const abs = path.resolve(target);
  const parent = path.dirname(abs);
  const stamp = `${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2, 8)}`;
  const tmp = path.join(parent, `.${path.basename(abs)}.${stamp}.tmp`);
  const old = path.join(parent, `.${path.basename(abs)}.${stamp}.old`);
  try {
    fs.mkdirSync(tmp);
    fill(tmp);
    if (!fs.existsSync(abs)) {
      fs.renameSync(tmp, abs);
      return;
    }
    fs.renameSync(abs, old);
    try {
      fs.renameSync(tmp, abs);
    } catch (e) {
      fs.renameSync(old, abs);
      throw e;
    }
    for (const f of fs.readdirSync(old)) if (carryOver(f)) fs.renameSync(path.join(old, f), path.join(abs, f));
    fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

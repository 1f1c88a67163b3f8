/**
 * A user-facing error: the CLI prints `message` as one line and exits non-zero.
 * Messages name the offending thing (file, tensor, hook, shape) so the user can act on them.
 */
export class HooklensError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HooklensError';
  }
}

export function fail(message: string): never {
  throw new HooklensError(message);
}

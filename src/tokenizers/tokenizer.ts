/** The tokenizer interface the runtime and CLI use, whatever the checkpoint ships. */
export interface Tokenizer {
  /** Encode as the model's tokenizer does by default (BOS where it adds one) unless addSpecialTokens=false. */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
}

/** Text of the tokens after `prefix`, decoded in context so leading spaces come out right. */
export function decodeContinuation(tok: Tokenizer, prefix: number[], all: number[]): string {
  const full = tok.decode(all);
  const head = tok.decode(prefix);
  if (full.startsWith(head)) return full.slice(head.length);
  return tok.decode(all.slice(prefix.length));
}

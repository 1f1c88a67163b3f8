/**
 * A word-level tokenizer as a Hugging Face tokenizer.json that @huggingface/transformers loads:
 * WordPiece over a whole-word vocabulary (every word and punctuation mark one token), Whitespace
 * pre-tokenizer, BOS prepended by the post-processor. transformers.js has no WordLevel model, and
 * WordPiece with no "##" pieces behaves exactly like one.
 */
export const BOS = '<|endoftext|>';
export const UNK = '[UNK]';

export function wordTokenizerJson(words: readonly string[]): { tokenizerJson: object; tokenizerConfig: object; vocab: string[] } {
  const vocab = [BOS, UNK, ...[...new Set(words)].filter((w) => w !== BOS && w !== UNK)];
  const ids = Object.fromEntries(vocab.map((w, i) => [w, i]));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 0, content: BOS, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 1, content: UNK, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [BOS]: { id: BOS, ids: [0], tokens: [BOS] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: UNK, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: ids },
  };
  const tokenizerConfig = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: BOS,
    eos_token: BOS,
    unk_token: UNK,
    clean_up_tokenization_spaces: true,
    model_max_length: 1e30,
  };
  return { tokenizerJson, tokenizerConfig, vocab };
}

/** Split text into words the way the Whitespace pre-tokenizer does (\w+ | [^\w\s]+). */
export function words(text: string): string[] {
  return text.match(/\w+|[^\w\s]+/g) ?? [];
}

"""Text in, token ids out: read and split corpora, tokenizers, the on-disk token cache, BPTT batches."""

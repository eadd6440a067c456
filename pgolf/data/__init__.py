"""Data: challenge-format token shards, the SentencePiece tokenizer and byte accounting,
the embedded default corpus, the official FineWeb download and the training loader."""

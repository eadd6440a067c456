"""pgolf: train the best small GPT that fits in 16,000,000 bytes, compress it, measure it honestly.

Stages (each a subpackage and a CLI subcommand): ``data`` (shards, tokenizer, corpora),
``model`` (the seed GPT), ``train`` (Muon + AdamW trainer), ``quant`` (TurboQuant and
baselines, the artifact), ``eval`` (exact bits-per-byte, n-gram caches), ``pipeline``
(run/demo/report) and ``submit`` (challenge records folder). Run ``pgolf --help``.
"""

__version__ = "0.1.0"

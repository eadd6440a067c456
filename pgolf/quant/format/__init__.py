"""How an artifact's bytes are laid out: the sealed container (prelude, checksum, codec),
the header checked against its model, bit packing, the entropy and zstd codecs, and
:mod:`pgolf.quant.format.artifact`, which writes and reads whole artifacts. See docs/ARTIFACT.md."""

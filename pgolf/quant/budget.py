"""Code-bytes accounting for the 16,000,000-byte budget (artifact + counted code).

The challenge counts the bytes of the code needed to evaluate the artifact. pgolf counts
every source file a submission needs to load an artifact and score it: the package
skeleton and CLI entry points, config, errors, atomic file IO, the data readers
(shards, tokenizer byte tables), the whole model package, the quantization *decode*
path (codebooks, rotations, TurboQuant, row-int, bit packing, the artifact container,
bit allocation imported by the container) and the whole eval package. Training,
quantization CLI/QAT/budget code, pipeline, submit and tests are not counted. Sizes are
raw file bytes (uncompressed). Run ``python -m pgolf.quant.budget`` to list them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

#: Files (relative to the package root) or globs that evaluation needs.
COUNTED = (
    "__init__.py", "__main__.py", "cli.py", "config.py", "errors.py", "fileio.py",
    "data/__init__.py", "data/shards.py", "data/tokenizer.py",
    "model/*.py",
    "quant/__init__.py", "quant/codebook.py", "quant/rotation.py", "quant/turbo.py",
    "quant/rowint.py", "quant/packing.py", "quant/allocation.py", "quant/artifact.py",
    "quant/schemes.py", "quant/record.py", "quant/turbo_rd.py", "quant/gptq.py", "quant/lqer.py",
    "quant/entropy.py", "quant/groups.py",
    "eval/*.py",
)


def counted_code_files() -> list[Path]:
    """Existing source files counted against the budget, sorted, without duplicates."""
    files: set[Path] = set()
    for pattern in COUNTED:
        files.update(p for p in PACKAGE_ROOT.glob(pattern) if p.is_file())
    return sorted(files)


def code_bytes() -> int:
    """Total size in bytes of :func:`counted_code_files`."""
    return sum(p.stat().st_size for p in counted_code_files())


def main() -> None:
    for p in counted_code_files():
        print(f"{p.stat().st_size:>8,}  {p.relative_to(PACKAGE_ROOT.parent)}")
    print(f"{code_bytes():>8,}  total")


if __name__ == "__main__":
    main()

"""``pgolf eval --verify ARTIFACT``: score someone else's artifact with *your* evaluation settings.

An artifact embeds the whole run config, eval and ttt sections included, and a plain
``pgolf eval ARTIFACT`` starts from them (its n-gram mode, stride, orders, TTT). A
verification does not: every ``eval.*`` and ``ttt.*`` field starts at pgolf's default
(:class:`pgolf.config.EvalConfig`, :class:`pgolf.config.TTTConfig`), then your ``--set``
and flags (``--ngram``, ``--ttt``, ``--stride``, ``--max-tokens``, ...) apply; only the
model (and its training seq_len, the default window) comes from the artifact. The data is
yours (``--data DIR``, tokenizer ``--tokenizer`` or ``DIR/tokenizer.model``, checked by
:mod:`pgolf.data.fingerprint`); a run folder's config.json beside the artifact supplies neither
and is not read (a private copy of the artifact, checked against its sha256, is evaluated).
The header is validated before anything else (:mod:`pgolf.quant.format.artifact`: never
unpickled, every limit enforced), so a corrupt or hostile file is one line and exit 1.
Writes ``eval.json`` into ``--out`` (default ``runs/verify-<sha256[:12]>``; a non-empty
folder is refused without ``--force``), with ``verify`` recording the artifact's sha256
and size and the embedded eval/ttt settings that were ignored.

    result, written = verify("their.pgz", "data/fineweb10B_sp1024", ngram="causal", max_tokens=100_000)
    print(settings_line(result))
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from pgolf.errors import ArtifactError, PgolfError

#: ``--out`` without a value: ``runs/verify-<first 12 hex digits of the artifact's sha256>``.
DEFAULT_OUT = "runs/verify-{sha12}"


def default_sets() -> list[str]:
    """``--set`` strings putting every eval.* and ttt.* field at pgolf's default."""
    from pgolf.config import EvalConfig, TTTConfig

    sets = []
    for section, obj in (("eval", EvalConfig()), ("ttt", TTTConfig())):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
            sets.append(f"{section}.{f.name}={text}")
    return sets


def embedded_config(path: Path):
    """The RunConfig in the artifact's header (validated; the body is not decoded here)."""
    from pgolf.quant.format.artifact import read_header
    from pgolf.quant.format.header import header_config

    try:
        header, _ = read_header(path.read_bytes())
        return header_config(header)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None


def _inputs(artifact, data_dir, tokenizer) -> tuple[Path, Path, Path]:
    p = Path(artifact)
    if p.is_dir():
        raise PgolfError(f"{p}: --verify takes an artifact file (.pgz), not a run directory")
    if not p.is_file():
        raise PgolfError(f"{p}: artifact not found")
    if not data_dir:
        raise PgolfError("--verify needs --data DIR: your own validation shards (fineweb_val_*.bin)")
    data = Path(data_dir)
    if not data.is_dir():
        raise PgolfError(f"{data}: data directory not found")
    tok = Path(tokenizer) if tokenizer else data / "tokenizer.model"
    if not tok.is_file():
        raise PgolfError(f"{tok}: tokenizer not found; pass --tokenizer FILE")
    return p, data, tok


def verify(artifact, data_dir, *, tokenizer=None, out=None, force: bool = False, sets=None,
           allow_tokenizer_mismatch: bool = False, **options) -> tuple[dict, list]:
    """Evaluate ``artifact`` on ``data_dir`` with pgolf's eval/ttt defaults plus ``sets`` and
    ``options`` (those of :func:`pgolf.eval.harness.run_eval`); write OUT/eval.json.
    Returns (eval.json's dict, the paths written: none on ranks other than 0)."""
    import os
    import sys

    from pgolf.data.fingerprint import check_tokenizer
    from pgolf.eval import harness
    from pgolf.quant.binding import BindingError, add_fields, bind_file, digest
    from pgolf.runlock import LOCK_NAME, run_lock

    path, data, tok = _inputs(artifact, data_dir, tokenizer)
    embedded = embedded_config(path)
    note = check_tokenizer(data, tok, model_vocab=embedded.model.vocab_size, allow_mismatch=allow_tokenizer_mismatch)
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    binding = bind_file(path)
    folder = Path(out) if out else Path(DEFAULT_OUT.format(sha12=binding["artifact_sha256"][:12]))
    with run_lock(folder), tempfile.TemporaryDirectory(prefix="pgolf-verify-") as tmp:
        if not force and folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir()):
            raise PgolfError(f"{folder}: exists and is not empty; pass --force to overwrite it, or another --out")
        alone = Path(tmp) / path.name  # a private copy: nothing beside it (a run's config.json) is read
        shutil.copyfile(path, alone)
        if digest(alone)[0] != binding["artifact_sha256"]:
            raise BindingError(f"{path} changed while it was read; evaluate it again")
        written = []
        result = harness.run_eval(alone, folder / "eval.json", data_dir=data, tokenizer=tok,
                                  sets=default_sets() + list(sets or []),
                                  show=lambda res, paths: written.extend(paths), **options)
        if written:  # rank 0 wrote eval.json: bind it to the file it measured
            fields = {**binding, "source": str(path), "verify": {
                "artifact_sha256": binding["artifact_sha256"], "artifact_bytes": binding["artifact_bytes"],
                "settings": "pgolf defaults + the user's flags and --set",
                "ignored": {"eval": dataclasses.asdict(embedded.eval), "ttt": dataclasses.asdict(embedded.ttt)}}}
            add_fields(folder / "eval.json", fields)
            result.update(fields)
        return result, written


def settings_line(result: dict) -> str:
    """One line naming the settings a verification used (and that the artifact's were ignored)."""
    sliding = result["neural"].get("sliding")
    ng, tt = result.get("ngram") or {}, result.get("ttt") or {}
    ngram = ng.get("mode", "none") + (f" {ng['orders'][0]}-{ng['orders'][1]}" if ng.get("orders") else "")
    return (f"verify: {result['source']} (sha256 {result['verify']['artifact_sha256'][:16]}) with your settings: "
            f"seq_len {result['seq_len']}, stride {sliding['stride'] if sliding else 'none'}, n-gram {ngram}, "
            f"ttt {tt.get('mode', 'none')}, {result['tokens']:,} target tokens; the artifact's own eval/ttt "
            f"settings were ignored")

"""Results bound to what they measured: the artifact's sha256 and size, the model's fingerprint.

``pgolf quantize``/``pgolf run`` add ``artifact_sha256`` to ``quant.json``; ``pgolf eval``
(and ``pgolf run``'s eval stage) add ``artifact_sha256``, ``artifact_bytes`` (null when
``model.pt`` was evaluated) and ``model_fingerprint`` (sha256 of the model config, 16 hex
digits) to ``eval.json``. :func:`check_seed` is what ``pgolf report`` and ``pgolf submit``
run on each seed folder: when ``quant.json``, ``eval.json``, ``config.json`` and the
``artifact.pgz`` on disk disagree it raises :class:`BindingError`, one line saying what to
rerun. :func:`check_artifact_model` refuses an artifact whose model differs from the run's.
Hashing reads the file once (artifacts are at most 16 MB); nothing is unpickled.

    fields = bind_file("runs/x/artifact.pgz")       # {"artifact_sha256", "artifact_bytes", "model_fingerprint"}
    check_seed("runs/x")                            # BindingError or None
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json, read_json

ARTIFACT, QUANT_JSON, EVAL_JSON, CONFIG = "artifact.pgz", "quant.json", "eval.json", "config.json"


class BindingError(PgolfError):
    """A result file does not describe the artifact or model on disk."""


def digest(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def fingerprint(model: dict) -> str:
    """16 hex digits of the sha256 of a model config (a ``ModelConfig`` dict), normalized."""
    from pgolf.config import RunConfig

    norm = RunConfig.from_dict({"model": model}).to_dict()["model"]
    return hashlib.sha256(json.dumps(norm, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def run_model(run_dir: str | os.PathLike) -> dict | None:
    """The model section of ``RUN_DIR/config.json`` (None without one)."""
    from pgolf.config import RunConfig

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    d = read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise BindingError(f"{path}: not a pgolf run config")
    return RunConfig.from_dict({"model": d["model"]}).to_dict()["model"]


def artifact_model(path: str | os.PathLike) -> dict:
    """The model config embedded in an artifact's header (the header is validated, never unpickled)."""
    from pgolf.quant.format.artifact import read_header
    from pgolf.quant.format.header import header_config

    header, _ = read_header(Path(path).read_bytes())
    return header_config(header).to_dict()["model"]


def bind_file(path: str | os.PathLike, artifact: bool = True) -> dict:
    """The binding fields of an evaluated file: an artifact's sha256, size and model fingerprint
    (``artifact=False``: ``model.pt``, whose model is the run's ``config.json``)."""
    p = Path(path)
    if not artifact:
        model = run_model(p.parent)
        return {"artifact_sha256": None, "artifact_bytes": None,
                "model_fingerprint": fingerprint(model) if model is not None else None}
    sha, size = digest(p)
    return {"artifact_sha256": sha, "artifact_bytes": size, "model_fingerprint": fingerprint(artifact_model(p))}


def add_fields(json_path: str | os.PathLike, fields: dict) -> None:
    """Add ``fields`` to a JSON object file, atomically."""
    p = Path(json_path)
    obj = json.loads(p.read_text(encoding="utf-8"))
    obj.update(fields)
    atomic_write_json(p, obj)


def bind_quant(run_dir: str | os.PathLike) -> None:
    """Stamp ``quant.json`` with the sha256 of the ``artifact.pgz`` written beside it."""
    d = Path(run_dir)
    add_fields(d / QUANT_JSON, {"artifact_sha256": digest(d / ARTIFACT)[0]})


def _differences(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_artifact_model(artifact: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """BindingError when the artifact's model is not the run's (``pgolf eval RUN --artifact``)."""
    mine, theirs = run_model(run_dir), artifact_model(artifact)
    if mine is not None and fingerprint(mine) != fingerprint(theirs):
        raise BindingError(f"{artifact}: its model is not the one in {Path(run_dir) / CONFIG} "
                           f"({_differences(theirs, mine)}); re-quantize it: pgolf quantize {run_dir}")


def _load(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def check_seed(seed_dir: str | os.PathLike) -> None:
    """Refuse (BindingError, one line naming what to rerun) a seed folder whose quant.json,
    eval.json, config.json and artifact.pgz do not describe the same artifact and model."""
    d = Path(seed_dir)
    art, q, ev = d / ARTIFACT, _load(d / QUANT_JSON), _load(d / EVAL_JSON)
    model = run_model(d)
    if not art.is_file():
        _check_without_artifact(d, q, ev, model)
        return
    sha, size = digest(art)
    requant = f"rerun: pgolf quantize {d}, then pgolf eval {d} --artifact"
    if q is not None and (q.get("artifact_bytes") != size or q.get("artifact_sha256", sha) != sha):
        raise BindingError(f"{art} ({size:,} B) is not the artifact quant.json describes "
                           f"({q.get('artifact_bytes')} B); {requant}")
    if model is not None:
        try:
            theirs = artifact_model(art)
        except PgolfError as e:
            raise BindingError(f"{art}: unreadable ({e}); {requant}") from None
        if fingerprint(theirs) != fingerprint(model):
            raise BindingError(f"{art} holds another model than {d / CONFIG} ({_differences(theirs, model)}); {requant}")
    if ev is None:
        return
    reeval = f"rerun: pgolf eval {d} --artifact"
    if ev.get("artifact_sha256") is None:
        what = "model.pt" if "artifact_sha256" in ev else "an unrecorded file (eval.json predates artifact binding)"
        raise BindingError(f"{d / EVAL_JSON} measured {what}, not {art}; {reeval}")
    if ev["artifact_sha256"] != sha:
        raise BindingError(f"{d / EVAL_JSON} measured another artifact (sha256 {ev['artifact_sha256'][:12]}, "
                           f"{ev.get('artifact_bytes')} B) than {art} (sha256 {sha[:12]}, {size:,} B); {reeval}")


def _check_without_artifact(d: Path, q: dict | None, ev: dict | None, model: dict | None) -> None:
    """No artifact on disk: the two result files must still agree with each other and the run."""
    if ev is None:
        return
    if q is not None and ev.get("artifact_bytes") is not None and q.get("artifact_bytes") != ev["artifact_bytes"]:
        raise BindingError(f"{d / EVAL_JSON} measured a {ev['artifact_bytes']:,} B artifact, quant.json describes "
                           f"{q.get('artifact_bytes')} B (and {d / ARTIFACT} is gone); rerun: pgolf quantize {d}, "
                           f"then pgolf eval {d} --artifact")
    if model is not None and ev.get("model_fingerprint") not in (None, fingerprint(model)):
        raise BindingError(f"{d / EVAL_JSON} measured another model than {d / CONFIG}; "
                           f"rerun: pgolf eval {d} --artifact")

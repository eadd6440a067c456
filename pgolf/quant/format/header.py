"""Validate an artifact's JSON header against the model its own config describes.

Runs after the container has read the header and before the body is decompressed or any
tensor allocated. It rebuilds the run config (each section must be an object, every value
of its field's type and range as for ``--set``, no entry beyond the preset and the
sections: an artifact never names files to read), checks it
against the caller's model config if given, builds that model on the ``meta`` device (no
memory) and requires the tensor table to match it exactly: every name once, the model's
shape, the storage kind the allocation rules give that tensor, bits and codebook valid for
the kind (:mod:`pgolf.quant.schemes.kinds`), segments of exactly the size the kind needs, and all
segments (codebooks included) tiling the body in order with no gap or overlap. The total
decoded element count is the model's parameter count. Returns a :class:`Layout` that
:func:`pgolf.quant.format.artifact.decode` follows. Example::

    layout = check_header(header, expected_model=cfg.model)
    body = reader.read_body(layout.body_len)
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass

from pgolf.errors import ArtifactError, ConfigError
from pgolf.quant.calibrate.allocation import plan_tensor
from pgolf.quant.schemes.kinds import DTYPES, KINDS, KindContext, is_int

#: Most tensor-table entries (and so layers) a header may declare; the seed has ~150.
MAX_TENSORS = 4096
#: Most parameters a decoded model may have (float32: 1 GiB); the seed has 44.3M.
MAX_PARAMS = 1 << 28
_MAX_CODEBOOKS = 256


@dataclass
class Layout:
    """A validated header: config, entries with their model shapes and segment refs."""

    cfg: object
    entries: list  # (entry dict, shape tuple)
    ctx: KindContext
    body_len: int


def _obj(v, what: str) -> dict:
    if not isinstance(v, dict):
        raise ArtifactError(f"artifact {what} is not an object")
    return v


def _list(v, what: str, limit: int) -> list:
    if not isinstance(v, list) or len(v) > limit:
        raise ArtifactError(f"artifact {what} is not a list of at most {limit} items")
    return v


def header_config(header: dict, expected_model=None):
    """The RunConfig in ``header["config"]``, validated (and compared to ``expected_model``)."""
    from pgolf.config import SECTIONS, RunConfig, validate

    d = _obj(header.get("config"), "config")
    for s in SECTIONS:
        _obj(d.get(s, {}), f"config section {s!r}")
    extra = sorted(set(d) - {"preset", *SECTIONS})
    if extra:  # e.g. data_dir or tokenizer: those come from the user or the run folder
        raise ArtifactError(f"artifact config has an unknown entry {extra[0][:40]!r}")
    try:
        cfg = validate(RunConfig.from_dict(d))
    except ConfigError as e:  # types and ranges first, so the cross-field checks cannot crash
        raise ArtifactError(f"artifact config is invalid: {e}") from None
    check_model(cfg, expected_model)
    return cfg


def check_model(cfg, expected_model) -> None:
    """ArtifactError naming the differing fields if ``cfg.model`` != ``expected_model``."""
    if expected_model is None:
        return
    if hasattr(expected_model, "model"):  # a whole RunConfig
        expected_model = expected_model.model
    want = expected_model if isinstance(expected_model, dict) else dataclasses.asdict(expected_model)
    have = dataclasses.asdict(cfg.model)
    diff = [f"{k}={have.get(k)!r} (expected {want.get(k)!r})" for k in sorted(set(want) | set(have))
            if _norm(want.get(k)) != _norm(have.get(k))]
    if diff:
        raise ArtifactError("artifact is for a different model config: " + ", ".join(diff))


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def model_tensors(model_cfg, n_entries: int) -> dict[str, tuple]:
    """``{name: (shape, dtype, role)}`` of ``GPT(model_cfg)``, built on the meta device only."""
    import torch

    from pgolf.model.gpt import GPT

    if model_cfg.num_layers > n_entries:
        raise ArtifactError(f"artifact config declares {model_cfg.num_layers} layers but its tensor table "
                            f"has {n_entries} entries")
    try:
        with torch.device("meta"):
            model = GPT(model_cfg)
            roles = dict(model.param_roles())
            sd = model.state_dict()
    except Exception as e:  # any failure to build the declared model is the artifact's fault
        raise ArtifactError(f"artifact config describes no buildable model ({type(e).__name__})") from None
    return {k: (tuple(t.shape), t.dtype, roles.get(k)) for k, t in sd.items()}


def _segment(ref, what: str) -> tuple[int, int]:
    if not (isinstance(ref, list) and len(ref) == 2 and all(is_int(v) and v >= 0 for v in ref)):
        raise ArtifactError(f"{what}: segment {repr(ref)[:40]} is not [offset, length] of non-negative integers")
    return ref[0], ref[1]


def _codebooks(header: dict, spans: list) -> list[dict]:
    out = []
    for i, cb in enumerate(_list(header.get("codebooks", []), "codebook list", _MAX_CODEBOOKS)):
        cb = _obj(cb, f"codebook {i}")
        bits, d = cb.get("bits"), cb.get("d")
        if not (is_int(bits) and 1 <= bits <= 8 and is_int(d) and d >= 1):
            raise ArtifactError(f"codebook {i}: bits {repr(bits)[:20]} / d {repr(d)[:20]} invalid")
        off, n = _segment(cb.get("segment"), f"codebook {i}")
        if n != 4 << bits:
            raise ArtifactError(f"codebook {i}: {n} bytes, a {bits}-bit codebook has {4 << bits}")
        spans.append((off, n, f"codebook {i}"))
        out.append({"bits": bits, "d": d, "segment": (off, n)})
    return out


def _expected_kind(name: str, info: tuple, qcfg) -> str:
    """The storage kind the allocation rules give this model tensor (bits do not change it)."""
    shape, dtype, role = info
    any_bits = defaultdict(lambda: 8)  # the entry's own bits are checked by its kind
    return plan_tensor(name, role, shape, dtype.is_floating_point, qcfg, any_bits).kind


def _check_entry(e, model: dict, seen: dict, ctx: KindContext, spans: list) -> tuple:
    e = _obj(e, "tensor entry")
    name = e.get("name")
    if not isinstance(name, str) or name not in model:
        raise ArtifactError(f"tensor {str(name)[:60]!r} is not a parameter of the model the artifact describes")
    if name in seen:
        raise ArtifactError(f"tensor {name} appears twice in the tensor table")
    shape, dtype, _ = model[name]
    if e.get("kind") == "alias":
        target = e.get("alias_of")
        if not isinstance(target, str) or seen.get(target) != shape:
            raise ArtifactError(f"tensor {name}: alias of {str(target)[:60]!r}, not an earlier tensor of shape {list(shape)}")
        seen[name] = shape
        return e, shape
    if e.get("shape") != list(shape):
        raise ArtifactError(f"tensor {name}: shape {repr(e.get('shape'))[:60]} but the model has {list(shape)}")
    kind, want = e.get("kind"), _expected_kind(name, model[name], ctx.qcfg)
    if kind != want or kind not in KINDS:
        raise ArtifactError(f"tensor {name}: storage kind {str(kind)[:20]!r}, expected {want!r}")
    stored = DTYPES.get(e["dtype"]) if isinstance(e.get("dtype"), str) else None
    if stored is None or stored.is_floating_point != dtype.is_floating_point or (kind == "raw" and stored != dtype):
        raise ArtifactError(f"tensor {name}: dtype {str(e.get('dtype'))[:20]!r} does not fit the model's {dtype}")
    sizes = KINDS[kind].check(e, shape, ctx)
    segs = _obj(e.get("segments"), f"segment map of {name}")
    if set(segs) != set(sizes):
        raise ArtifactError(f"tensor {name}: segments {sorted(segs)[:8]}, kind {kind} needs {sorted(sizes)}")
    for key, n in sizes.items():
        off, length = _segment(segs[key], f"tensor {name} {key}")
        if length != n:
            raise ArtifactError(f"tensor {name}: segment {key} has {length} bytes, expected {n}")
        spans.append((off, length, f"tensor {name} {key}"))
    seen[name] = shape
    return e, shape


def _tile(spans: list) -> int:
    """Body length if the segments cover ``[0, end)`` in order, disjoint, with no gap."""
    pos = 0
    for off, n, what in sorted(spans):
        if off != pos:
            issue = "overlaps the previous segment" if off < pos else f"leaves a gap at byte {pos}"
            raise ArtifactError(f"{what} at offset {off} {issue}")
        pos += n
    return pos


def check_header(header: dict, expected_model=None) -> Layout:
    """Validate ``header`` completely (see the module docstring); allocates no tensor data."""
    cfg = header_config(header, expected_model)
    table = _list(header.get("tensors"), "tensor table", MAX_TENSORS)
    model = model_tensors(cfg.model, len(table))
    spans: list = []
    ctx = KindContext(cfg.quant, _codebooks(header, spans))
    seen: dict = {}
    entries = [_check_entry(e, model, seen, ctx, spans) for e in table]
    missing = sorted(set(model) - set(seen))
    if missing:
        raise ArtifactError(f"artifact lacks {len(missing)} model tensor(s), e.g. {missing[0]}")
    params = sum(math.prod(model[n][0]) for n in seen)
    if params != sum(math.prod(s) for s, _, _ in model.values()) or params > MAX_PARAMS:
        raise ArtifactError(f"artifact decodes {params:,} elements (model: {len(model)} tensors, limit {MAX_PARAMS:,})")
    return Layout(cfg, entries, ctx, _tile(spans))

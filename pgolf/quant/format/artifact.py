"""The quantized artifact: encode a state dict into it, decode it back without pickle.

The bytes live in a versioned, checksummed container (:mod:`pgolf.quant.format.container`; the
full layout is in docs/ARTIFACT.md). The JSON header holds the full RunConfig (model, quant, ...), the codebooks used and a
tensor table; each entry names its storage ``kind`` (turbo | turbo-prod | int | fp16 |
fp32 | raw | alias), bits, shape, dtype and ``[offset, length]`` of its segments in the
body. Small segments (norms, scales, codebooks, fp16/fp32 tensors) come first, then the
bit-packed indices (``ceil(n*b/8)`` bytes each). Rotations are regenerated from
``(quant.rotation, quant.rotation_seed, d)``; codebooks are stored (a few hundred bytes).
Decoding checks the whole header against the model its config describes
(:mod:`pgolf.quant.format.header`) before decompressing the body, then each storage kind
(:mod:`pgolf.quant.schemes.kinds`) decodes its tensors; every failure to read raises
:class:`ArtifactError` with one line. Example::

    data = encode(state_dict, cfg)                 # bytes
    write_artifact("runs/x/artifact.pgz", data)
    sd, cfg = load_artifact("runs/x/artifact.pgz", expected_model=cfg.model)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError, ConfigError, PgolfError
from pgolf.fileio import atomic_write_bytes
from pgolf.quant.format import packing
from pgolf.quant.schemes import rowint, turbo
from pgolf.quant.calibrate.allocation import TensorPlan, plan_state_dict
from pgolf.quant.format.container import open_stream, parse_header_json, seal
from pgolf.quant.format.header import check_header
from pgolf.quant.schemes.kinds import DTYPES, KINDS, codebook_levels, finite
from pgolf.quant.schemes.rotation import qjl_tensor, rotation_tensor

# ----------------------------------------------------------------------------- encode


@dataclass
class _Body:
    """Accumulates byte segments: small ones first, packed indices after."""

    small: list[bytes] = field(default_factory=list)
    packed: list[bytes] = field(default_factory=list)
    small_len: int = 0
    packed_len: int = 0

    def add(self, data: bytes, packed: bool = False) -> list:
        if packed:
            self.packed.append(data)
            self.packed_len += len(data)
            return ["p", self.packed_len - len(data), len(data)]
        self.small.append(data)
        self.small_len += len(data)
        return ["s", self.small_len - len(data), len(data)]

    def finish(self, entries: list[dict]) -> bytes:
        """Resolve ``["p"|"s", off, len]`` refs to absolute body offsets."""
        for e in entries:
            for key, ref in e.get("segments", {}).items():
                e["segments"][key] = [ref[1] + (self.small_len if ref[0] == "p" else 0), ref[2]]
        return b"".join(self.small) + b"".join(self.packed)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def _dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ConfigError(f"tensor dtype {name} cannot be stored in an artifact")
    return name


class _Encoder:
    """Quantizes tensors by plan into body segments and returns the reference decode."""

    def __init__(self, qcfg, body: _Body):
        self.q, self.body = qcfg, body
        self.codebooks: list[dict] = []
        self._cb_index: dict[tuple, int] = {}
        self._levels: list[torch.Tensor] = []

    def codebook(self, bits: int, d: int) -> tuple[int, torch.Tensor]:
        key = (bits, d, self.q.codebook)
        if key not in self._cb_index:
            raw = turbo.codebook_tensor(bits, d, self.q.codebook).numpy().astype("<f4").tobytes()
            seg = self.body.add(raw)
            self._cb_index[key] = len(self.codebooks)
            self._levels.append(torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy()))
            self.codebooks.append({"bits": bits, "d": d, "kind": self.q.codebook, "segment": seg})
        i = self._cb_index[key]
        return i, self._levels[i]

    def encode(self, plan: TensorPlan, t: torch.Tensor) -> tuple[dict, torch.Tensor]:
        entry = {"name": plan.name, "role": plan.role, "shape": list(plan.shape), "kind": plan.kind,
                 "bits": plan.bits, "dtype": _dtype_name(t), "segments": {}}
        segs = entry["segments"]
        if plan.kind == "raw":
            segs["data"] = self.body.add(_tensor_bytes(t))
            return entry, t.detach().cpu().clone()
        if plan.kind in ("fp16", "fp32"):
            stored = t.detach().cpu().to(torch.float16 if plan.kind == "fp16" else torch.float32)
            if not bool(torch.isfinite(stored).all()):
                raise ValueError(f"NaN or inf (or beyond the {plan.kind} range) in a tensor stored as {plan.kind}")
            segs["data"] = self.body.add(_tensor_bytes(stored))
            return entry, stored.to(t.dtype)
        w = t.detach().cpu().float().reshape(plan.rows)
        if plan.kind == "int":
            return entry, self._encode_int(plan, w, segs).reshape(plan.shape).to(t.dtype)
        return entry, self._encode_turbo(plan, w, entry).reshape(plan.shape).to(t.dtype)

    def _encode_int(self, plan: TensorPlan, w: torch.Tensor, segs: dict) -> torch.Tensor:
        q, scales = rowint.quantize_rows(w, plan.bits, self.q.int_clip)
        qmax = rowint.qmax_of(plan.bits)
        segs["scales"] = self.body.add(_tensor_bytes(scales))
        segs["codes"] = self.body.add(packing.pack_bits((q.numpy().astype(np.int16) + qmax).astype(np.uint8), plan.bits), True)
        return rowint.dequantize_rows(q, scales)

    def _encode_turbo(self, plan: TensorPlan, w: torch.Tensor, entry: dict) -> torch.Tensor:
        d = plan.rows[1]
        rot = rotation_tensor(self.q.rotation, self.q.rotation_seed, d)
        segs = entry["segments"]
        mse_bits = plan.bits - 1 if plan.kind == "turbo-prod" else plan.bits
        entry["codebook"], levels = self.codebook(mse_bits, d)
        if plan.kind == "turbo":
            norms, idx = turbo.quantize_mse(w, rot, levels)
        else:
            sketch = qjl_tensor(self.q.rotation_seed, d)
            norms, idx, signs, rnorms = turbo.quantize_prod(w, rot, levels, sketch)
            segs["rnorms"] = self.body.add(_tensor_bytes(rnorms))
            segs["signs"] = self.body.add(packing.pack_bits(signs.numpy().astype(np.uint8), 1), True)
        segs["norms"] = self.body.add(_tensor_bytes(norms))
        segs["idx"] = self.body.add(packing.pack_bits(idx.numpy().astype(np.uint8), mse_bits), True)
        if plan.kind == "turbo":
            return turbo.dequantize_mse(norms, idx, rot, levels)
        return turbo.dequantize_prod(norms, idx, signs, rnorms, rot, levels, sketch)


def _alias_map(state_dict) -> dict[str, str]:
    """Names whose tensor is the very same view as an earlier entry (tied weights)."""
    seen: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    for name, t in state_dict.items():
        key = (t.device.type, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in seen:
            alias[name] = seen[key]
        else:
            seen.setdefault(key, name)
    return alias


def model_roles(model_cfg) -> dict[str, str]:
    """``GPT(model_cfg).param_roles()``, building the model on the meta device when possible."""
    from pgolf.model.gpt import GPT

    try:
        with torch.device("meta"):
            return dict(GPT(model_cfg).param_roles())
    except (NotImplementedError, RuntimeError):  # an init op without a meta kernel
        return dict(GPT(model_cfg).param_roles())


def build_artifact(state_dict, cfg, roles=None, bits_overrides=None, progress=None,
                   calib=None, target_bytes=None, facts=None):
    """Quantize ``state_dict`` per ``cfg.quant``.

    Returns ``(artifact bytes, reference state_dict, rows)``: the reference is exactly
    what :func:`decode` will return; ``rows`` has one dict per stored tensor with name,
    role, kind, bits, numel, rel_mse and bytes (stored bytes before compression).
    Grouped schemes (``record``, ``turbo-rd``; :mod:`pgolf.quant.schemes.grouped`) also take the
    calibration Hessians ``calib``, turbo-rd's ``target_bytes``, and fill ``facts``.
    """
    from pgolf import features
    from pgolf.quant.calibrate.allocation import GROUPED_SCHEMES

    roles = model_roles(cfg.model) if roles is None else roles
    plans = plan_state_dict(state_dict, roles, cfg.quant, bits_overrides)
    alias = _alias_map(state_dict)
    if cfg.quant.scheme in GROUPED_SCHEMES:
        schemes = features.load("quant.scheme", cfg.quant.scheme)
        data, reference, rows, more = schemes.build_grouped(state_dict, cfg, plans, alias, calib, progress, target_bytes)
        if facts is not None:
            facts.update(more)
        return data, reference, rows
    body = _Body()
    enc = _Encoder(cfg.quant, body)
    entries, reference, rows = [], {}, []
    for plan in plans if progress is None else progress(plans):
        t = state_dict[plan.name]
        if plan.name in alias:
            entries.append({"name": plan.name, "kind": "alias", "alias_of": alias[plan.name]})
            reference[plan.name] = reference[alias[plan.name]]
            continue
        try:
            entry, w_hat = enc.encode(plan, t)
        except ValueError as e:  # NaN/inf weights, fp16-overflowing norms, bad bits
            raise PgolfError(f"cannot quantize tensor {plan.name}: {e}") from None
        entries.append(entry)
        reference[plan.name] = w_hat
        rows.append(_report_row(plan, t, w_hat, entry))
    blob = body.finish(entries)
    header = {"format": "pgolf-artifact", "config": cfg.to_dict(), "codebooks": enc.codebooks, "tensors": entries}
    for cb in enc.codebooks:
        cb["segment"] = [cb["segment"][1], cb["segment"][2]]
    return _assemble(header, blob, cfg.quant), reference, rows


def _report_row(plan: TensorPlan, t: torch.Tensor, w_hat: torch.Tensor, entry: dict) -> dict:
    w = t.detach().cpu().double()
    denom = float((w * w).sum()) if t.is_floating_point() else 0.0
    rel = float(((w - w_hat.double()) ** 2).sum()) / denom if denom > 0 else None
    nbytes = sum(ref[2] for ref in entry["segments"].values())
    return {"name": plan.name, "role": plan.role, "kind": plan.kind, "bits": plan.bits,
            "numel": plan.numel, "rel_mse": rel, "bytes": nbytes}


def _assemble(header: dict, body: bytes, qcfg) -> bytes:
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return seal(struct.pack("<I", len(hj)) + hj + body, qcfg.codec, qcfg.lzma_preset)


def encode(state_dict, cfg, roles=None, bits_overrides=None) -> bytes:
    """Artifact bytes for ``state_dict`` quantized per ``cfg.quant`` (roles from the model)."""
    return build_artifact(state_dict, cfg, roles, bits_overrides)[0]


# ----------------------------------------------------------------------------- decode


def _open(data: bytes, expected_model=None):
    """``(header, Layout, body)``: container checks, header validated against its model, then the body."""
    reader = open_stream(data)
    header = parse_header_json(reader.read_header())
    if isinstance(header, dict) and "groups" in header:  # record / turbo-rd
        from pgolf import features

        layout = features.load("quant.scheme", "record").check_grouped_header(header, expected_model)
    else:
        layout = check_header(header, expected_model)
    return header, layout, reader.read_body(layout.body_len)


def read_header(data: bytes) -> tuple[dict, bytes]:
    """Validate the container and the header against its model; return (header dict, body bytes)."""
    header, _, body = _open(data)
    return header, body


def decode(data: bytes, expected_model=None):
    """Parse and dequantize artifact bytes -> ``(state_dict, RunConfig)``; never unpickles.

    Everything in the header is checked (:func:`pgolf.quant.format.header.check_header`) before the
    body is decompressed; every failure is an :class:`ArtifactError` with one line.
    """
    header, layout, body = _open(data, expected_model)
    if "groups" in header:  # record / turbo-rd: segments in compressed groups (pgolf.quant.schemes.grouped)
        from pgolf import features

        return features.load("quant.scheme", "record").decode_tensors(header, body, layout.cfg.quant), layout.cfg
    ctx = layout.ctx
    for i, cb in enumerate(ctx.codebooks):
        off, n = cb["segment"]
        ctx.levels[i] = codebook_levels(cb, body[off : off + n], i)
    sd: dict[str, torch.Tensor] = {}
    for e, shape in layout.entries:
        if e["kind"] == "alias":
            sd[e["name"]] = sd[e["alias_of"]]
            continue
        segs = {k: body[off : off + n] for k, (off, n) in e["segments"].items()}
        try:
            sd[e["name"]] = finite(KINDS[e["kind"]].decode(e, shape, segs, ctx), "decoded values", e)
        except (ValueError, RuntimeError) as err:  # defence in depth: the header checks should catch it first
            raise ArtifactError(f"tensor {e['name']}: cannot decode ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:160]})") from None
    return sd, layout.cfg


def write_artifact(path, data: bytes) -> None:
    """Write artifact bytes atomically."""
    atomic_write_bytes(path, data)


def load_artifact(path, expected_model=None):
    """Read and :func:`decode` an artifact file; ArtifactError names the file on failure."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: artifact not found")
    try:
        return decode(p.read_bytes(), expected_model)
    except ArtifactError as e:
        raise ArtifactError(f"{p}: {e}") from None

"""The quantized artifact: a versioned, checksummed container parsed without pickle.

Layout (all integers little-endian)::

    prelude (34 bytes): magic b"PGOLFQ" | version u16 | codec u8 | 0 u8 |
                        stream_len u64 | raw_len u64 | stream_crc32 u32 | prelude_crc32 u32
    stream = codec(raw),  raw = header_len u32 | header JSON (utf-8) | body

The JSON header holds the full RunConfig (model, quant, ...), the codebooks used and a
tensor table; each entry names its storage ``kind`` (turbo | turbo-prod | int | fp16 |
fp32 | raw | alias), bits, shape, dtype and ``[offset, length]`` of its segments in the
body. Small segments (norms, scales, codebooks, fp16/fp32 tensors) come first, then the
bit-packed indices (``ceil(n*b/8)`` bytes each). Rotations are regenerated from
``(quant.rotation, quant.rotation_seed, d)``; codebooks are stored (a few hundred bytes).
Every failure to read raises :class:`ArtifactError` with one line. Example::

    data = encode(state_dict, cfg)                 # bytes
    write_artifact("runs/x/artifact.pgz", data)
    sd, cfg = load_artifact("runs/x/artifact.pgz", expected_model=cfg.model)
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError, ConfigError, PgolfError
from pgolf.fileio import atomic_write_bytes
from pgolf.quant import packing, rowint, turbo
from pgolf.quant.allocation import TensorPlan, plan_state_dict
from pgolf.quant.rotation import qjl_tensor, rotation_tensor

MAGIC = b"PGOLFQ"
VERSION = 1
_PRELUDE = struct.Struct("<6sHBBQQI")  # + u32 prelude crc
PRELUDE_SIZE = _PRELUDE.size + 4
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
           "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


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
    if name not in _DTYPES:
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
    Grouped schemes (``record``, ``turbo-rd``; :mod:`pgolf.quant.schemes`) also take the
    calibration Hessians ``calib``, turbo-rd's ``target_bytes``, and fill ``facts``.
    """
    from pgolf.quant import schemes

    roles = model_roles(cfg.model) if roles is None else roles
    plans = plan_state_dict(state_dict, roles, cfg.quant, bits_overrides)
    alias = _alias_map(state_dict)
    if cfg.quant.scheme in schemes.SCHEMES:
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
    raw = struct.pack("<I", len(hj)) + hj + body
    stream = packing.compress(raw, qcfg.codec, qcfg.lzma_preset)
    pre = _PRELUDE.pack(MAGIC, VERSION, packing.CODECS[qcfg.codec], 0, len(stream), len(raw), zlib.crc32(stream))
    return pre + struct.pack("<I", zlib.crc32(pre)) + stream


def encode(state_dict, cfg, roles=None, bits_overrides=None) -> bytes:
    """Artifact bytes for ``state_dict`` quantized per ``cfg.quant`` (roles from the model)."""
    return build_artifact(state_dict, cfg, roles, bits_overrides)[0]


# ----------------------------------------------------------------------------- decode


def read_header(data: bytes) -> tuple[dict, bytes]:
    """Validate prelude and checksums, decompress; return (header dict, body bytes)."""
    if len(data) < PRELUDE_SIZE:
        raise ArtifactError(f"truncated artifact: {len(data)} bytes is shorter than the {PRELUDE_SIZE}-byte prelude")
    if data[:6] != MAGIC:
        raise ArtifactError(f"not a pgolf artifact (bad magic {data[:6]!r})")
    magic, version, codec_id, _, stream_len, raw_len, stream_crc = _PRELUDE.unpack_from(data)
    (pre_crc,) = struct.unpack_from("<I", data, _PRELUDE.size)
    if zlib.crc32(data[: _PRELUDE.size]) != pre_crc:
        raise ArtifactError("corrupt artifact: prelude checksum mismatch")
    if version != VERSION:
        raise ArtifactError(f"unsupported artifact version {version} (this pgolf reads version {VERSION})")
    codec = {v: k for k, v in packing.CODECS.items()}.get(codec_id)
    if codec is None:
        raise ArtifactError(f"unknown codec id {codec_id} in artifact")
    stream = data[PRELUDE_SIZE:]
    if len(stream) != stream_len:
        kind = "truncated" if len(stream) < stream_len else "oversized"
        raise ArtifactError(f"{kind} artifact: payload has {len(stream)} bytes, prelude says {stream_len}")
    if zlib.crc32(stream) != stream_crc:
        raise ArtifactError("corrupt artifact: payload checksum mismatch")
    raw = packing.decompress(stream, codec, raw_len)
    (hlen,) = struct.unpack_from("<I", raw)
    try:
        header = json.loads(raw[4 : 4 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"artifact header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != "pgolf-artifact":
        raise ArtifactError("artifact header lacks format 'pgolf-artifact'")
    return header, raw[4 + hlen :]


def _segment(body: bytes, ref) -> bytes:
    off, n = int(ref[0]), int(ref[1])
    if off < 0 or n < 0 or off + n > len(body):
        raise ArtifactError(f"tensor segment [{off}, {off + n}) lies outside the {len(body)}-byte body")
    return body[off : off + n]


def _codebook_from_bytes(cb: dict, body: bytes) -> torch.Tensor:
    raw = _segment(body, cb["segment"])
    levels = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
    if levels.numel() != 1 << int(cb["bits"]):
        raise ArtifactError(f"codebook has {levels.numel()} levels, expected {1 << int(cb['bits'])}")
    return levels


def _array(raw: bytes, dtype: str, shape) -> torch.Tensor:
    tdt = _DTYPES.get(dtype)
    if tdt is None:
        raise ArtifactError(f"unknown dtype {dtype!r} in artifact")
    if tdt == torch.bfloat16:
        arr = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
    else:
        arr = torch.from_numpy(np.frombuffer(raw, dtype=torch.empty(0, dtype=tdt).numpy().dtype).copy())
    if arr.numel() != int(np.prod(shape)):
        raise ArtifactError(f"segment holds {arr.numel()} values, shape {list(shape)} needs {int(np.prod(shape))}")
    return arr.reshape([int(s) for s in shape])


def _decode_tensor(e: dict, body: bytes, header: dict, qcfg) -> torch.Tensor:
    kind, shape, segs = e["kind"], e["shape"], e["segments"]
    out_dtype = _DTYPES.get(e["dtype"])
    if out_dtype is None:
        raise ArtifactError(f"tensor {e['name']}: unknown dtype {e['dtype']!r}")
    if kind == "raw":
        return _array(_segment(body, segs["data"]), e["dtype"], shape)
    if kind in ("fp16", "fp32"):
        return _array(_segment(body, segs["data"]), "float16" if kind == "fp16" else "float32", shape).to(out_dtype)
    rows = int(shape[0])
    d = int(np.prod(shape)) // max(rows, 1)
    bits = int(e["bits"])
    if kind == "int":
        scales = _array(_segment(body, segs["scales"]), "float16", [rows])
        codes = packing.unpack_bits(_segment(body, segs["codes"]), rows * d, bits)
        q = torch.from_numpy(codes.astype(np.int16) - rowint.qmax_of(bits)).to(torch.int8).reshape(rows, d)
        return rowint.dequantize_rows(q, scales).reshape(shape).to(out_dtype)
    if kind not in ("turbo", "turbo-prod"):
        raise ArtifactError(f"tensor {e['name']}: unknown storage kind {kind!r}")
    rot = rotation_tensor(qcfg.rotation, qcfg.rotation_seed, d)
    levels = _codebook_from_bytes(header["codebooks"][int(e["codebook"])], body)
    mse_bits = bits - 1 if kind == "turbo-prod" else bits
    norms = _array(_segment(body, segs["norms"]), "float16", [rows])
    idx = torch.from_numpy(packing.unpack_bits(_segment(body, segs["idx"]), rows * d, mse_bits).astype(np.int64))
    idx = idx.reshape(rows, d)
    if kind == "turbo":
        w = turbo.dequantize_mse(norms, idx, rot, levels)
    else:
        signs = torch.from_numpy(packing.unpack_bits(_segment(body, segs["signs"]), rows * d, 1).astype(bool))
        rnorms = _array(_segment(body, segs["rnorms"]), "float16", [rows])
        sketch = qjl_tensor(qcfg.rotation_seed, d)
        w = turbo.dequantize_prod(norms, idx, signs.reshape(rows, d), rnorms, rot, levels, sketch)
    return w.reshape(shape).to(out_dtype)


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


def decode(data: bytes, expected_model=None):
    """Parse and dequantize artifact bytes -> ``(state_dict, RunConfig)``; never unpickles."""
    from pgolf.config import RunConfig

    header, body = read_header(data)
    try:
        cfg = RunConfig.from_dict(header["config"])
        check_model(cfg, expected_model)
        if "groups" in header:  # record / turbo-rd: segments in compressed groups
            from pgolf.quant.schemes import decode_tensors

            return decode_tensors(header, body, cfg.quant), cfg
        sd: dict[str, torch.Tensor] = {}
        for e in header["tensors"]:
            if e["kind"] == "alias":
                if e["alias_of"] not in sd:
                    raise ArtifactError(f"tensor {e['name']}: alias of unknown tensor {e['alias_of']!r}")
                sd[e["name"]] = sd[e["alias_of"]]
            else:
                sd[e["name"]] = _decode_tensor(e, body, header, cfg.quant)
    except ConfigError as e:
        raise ArtifactError(f"artifact config is invalid: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ArtifactError(f"artifact tensor table is malformed ({type(e).__name__}: {e})") from None
    return sd, cfg


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


def quantize_run(run_dir, scheme=None, bits_overrides=None, codec=None, budget=None, **kw) -> dict:
    """Quantize a run directory (see :func:`pgolf.quant.quantize.quantize_run`)."""
    from pgolf.quant.quantize import quantize_run as run

    return run(run_dir, scheme=scheme, bits_overrides=bits_overrides, codec=codec, budget=budget, **kw)

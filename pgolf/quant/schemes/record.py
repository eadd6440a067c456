"""The ``record`` scheme: the challenge record's quantizer (#1855), as the baseline to beat.

Matrices: GPTQ (full Hessian, :mod:`pgolf.quant.calibrate.gptq`) onto per-row symmetric
integers ``-qmax..qmax`` with an fp16 scale ``k * row_std / qmax``; ``k`` by role:
MLP 11.5, attention 13.0, other matrices 12.85, embeddings 14.0 (the record's int6 /
int7 clip widths), at every width (``--bits``). With ``quant.record_k_search`` and a
width other than the record's (6, embeddings 7), ``k`` is instead chosen per tensor from
``K_FACTORS * k_role`` by Hessian-weighted rounding error (this mostly buys clipping, not
bytes: the step it picks is close to int6's). LQER (:mod:`pgolf.quant.calibrate.lqer`)
adds a rank-``lqer_rank`` correction to the ``lqer_top_k`` tensors with the largest
Hessian-weighted error, packed as pgolf does or, with ``quant.lqer_packing=record``, as
the record does (the entry's ``lqer_packing`` says which). Storage: byte-aligned int8 codes grouped by role, rows sorted by
scale where that compresses smaller (permutation stored), each group brotli or LZMA
(:mod:`pgolf.quant.calibrate.groups`). Used through :mod:`pgolf.quant.schemes.grouped`::

    rec = encode_matrix(w, h, bits=6, k=11.5, qcfg=cfg.quant)   # codes, scales
    w_hat = dequantize(rec["codes"], rec["scales"])
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.quant.schemes.kinds import is_int
from pgolf.quant.calibrate.gptq import IntGrid, gptq, hessian_error
from pgolf.quant.calibrate.lqer import RECORD_GROUP_B, lqer_delta, lqer_factors, record_delta, record_factors

K_ROLE = {"mlp_up": 11.5, "mlp_down": 11.5, "attn": 13.0, "proj": 12.85, "embed": 14.0}
DEFAULT_BITS = {"embed": 7}  # every other matrix role: 6
K_FACTORS = (1.0, 0.8, 0.65, 0.5, 0.4, 0.32, 0.25, 0.2)
LQER_BITS_A, LQER_BITS_B, LQER_GROUP = 2, 4, 64


def qmax_of(bits: int) -> int:
    if not 2 <= int(bits) <= 8:
        raise ValueError(f"record: bits must be in 2..8, got {bits}")
    return (1 << (int(bits) - 1)) - 1


def row_scales(w: torch.Tensor, bits: int, k: float) -> torch.Tensor:
    """fp16 ``k * row_std / qmax`` (zero rows get 0)."""
    return (k * w.float().std(dim=1, correction=0) / qmax_of(bits)).to(torch.float16)


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return codes.float() * scales.float().unsqueeze(1)


def _rtn_error(w, h, bits, k) -> float:
    s = row_scales(w, bits, k)
    q = gptq(w, None, s, IntGrid(qmax_of(bits)))
    w_hat = dequantize(q, s)
    return hessian_error(w, w_hat, h) if h is not None else float(((w - w_hat) ** 2).sum())


def choose_k(w, h, role: str, bits: int, search: bool = False) -> float:
    """The record's ``k``; with ``search`` (and a width other than the record's) the best
    of ``K_FACTORS * k_role`` by Hessian-weighted rounding error."""
    k0 = K_ROLE[role]
    if not search or bits == DEFAULT_BITS.get(role, 6):
        return k0
    return min((k0 * f for f in K_FACTORS), key=lambda k: _rtn_error(w, h, bits, k))


def encode_matrix(w: torch.Tensor, h, bits: int, k: float, qcfg) -> dict:
    """GPTQ onto the record's grid: ``{"codes": int8 [rows, d], "scales": fp16 [rows], "k": k}``."""
    w = w.float()
    scales = row_scales(w, bits, k)
    codes = gptq(w, h, scales, IntGrid(qmax_of(bits)), qcfg.gptq_damp, qcfg.gptq_block, qcfg.gptq_act_order)
    return {"codes": codes.to(torch.int8), "scales": scales, "k": k}


def lqer_targets(errors: dict[str, float], top_k: int) -> list[str]:
    """Names of the ``top_k`` tensors with the largest error."""
    return sorted(errors, key=errors.get, reverse=True)[:top_k]


LQER_PACKINGS = ("pgolf", "record")


def apply_lqer(w: torch.Tensor, w_hat: torch.Tensor, rank: int, packing: str = "pgolf"):
    """``(factors, corrected w_hat)`` for the error ``w - w_hat`` (``packing``: :data:`LQER_PACKINGS`)."""
    if packing == "record":
        fac = record_factors(w.float() - w_hat, rank)
        return {**fac, "packing": "record"}, w_hat + record_delta(fac)
    fac = lqer_factors(w.float() - w_hat, rank, LQER_BITS_A, LQER_BITS_B, LQER_GROUP)
    return fac, w_hat + lqer_delta(fac, LQER_GROUP)


def lqer_segment_sizes(e: dict, rows: int, d: int) -> dict:
    """``{segment key: (bytes, bytes)}`` of the LQER factors of a header entry (either packing),
    for the header check; ArtifactError for a rank or packing the entry cannot have."""
    r = e.get("lqer_rank")
    if not (is_int(r) and 1 <= r <= min(rows, d)):
        raise ArtifactError(f"tensor {e['name']}: LQER rank {repr(r)[:20]} outside 1..{min(rows, d)}")
    packing = e.get("lqer_packing", "pgolf")
    if packing not in LQER_PACKINGS:
        raise ArtifactError(f"tensor {e['name']}: unknown LQER packing {str(packing)[:40]!r}")
    out = {}
    for part, n in (("a", r * rows), ("b", r * d)):
        if packing == "record":  # int8 codes; one fp16 scale for A, one per RECORD_GROUP_B for B
            scales = 1 if part == "a" else -(-n // RECORD_GROUP_B)
            out.update({f"lqer_{part}": (n, n), f"lqer_{part}_scale": (2 * scales,) * 2})
            continue
        groups = -(-n // LQER_GROUP)
        out.update({f"lqer_{part}": (n, n), f"lqer_{part}_lo": (2 * groups,) * 2, f"lqer_{part}_step": (2 * groups,) * 2})
    return out


def row_order(codes: np.ndarray, scales: np.ndarray) -> np.ndarray | None:
    """Rows sorted by scale when that makes the codes compress smaller (brotli q5 proxy)."""
    import brotli

    perm = np.argsort(scales.astype(np.float32), kind="stable")
    if (perm == np.arange(len(perm))).all():
        return None
    plain = len(brotli.compress(codes.tobytes(), quality=5))
    moved = len(brotli.compress(codes[perm].tobytes(), quality=5)) + 2 * len(perm)
    return perm.astype(np.uint16 if len(perm) < 65536 else np.uint32) if moved < plain else None


def write(entry: dict, rec: dict, fac, writer, role: str) -> None:
    """Segments of one record tensor into ``writer`` (codes by role group)."""
    codes = rec["codes"].numpy()
    scales = rec["scales"].numpy()
    perm = row_order(codes, scales)
    segs = entry["segments"]
    if perm is not None:
        segs["perm"] = writer.add("perm", perm.tobytes())
        entry["perm_dtype"] = perm.dtype.name
        codes, scales = codes[perm], scales[perm]
    segs["codes"] = writer.add(f"codes:{role}", codes.tobytes())
    segs["scales"] = writer.add("scales", scales.astype("<f2").tobytes())
    entry["k"] = rec["k"]
    if fac is not None:
        entry["lqer_rank"] = fac["rank"]
        if fac.get("packing") == "record":
            entry["lqer_packing"] = "record"
            for part in ("a", "b"):
                q, scale = fac[part]
                segs[f"lqer_{part}"] = writer.add("lqer", q.tobytes())
                segs[f"lqer_{part}_scale"] = writer.add("lqer", scale.astype("<f2").tobytes())
            return
        for part in ("a", "b"):
            q, lo, st = fac[part]
            segs[f"lqer_{part}"] = writer.add("lqer", q.tobytes())
            segs[f"lqer_{part}_lo"] = writer.add("lqer", lo.astype("<f2").tobytes())
            segs[f"lqer_{part}_step"] = writer.add("lqer", st.astype("<f2").tobytes())


def read(entry: dict, reader) -> torch.Tensor:
    """Decode one record tensor (float32 ``[rows, d]``) from its segments."""
    rows = int(entry["shape"][0])
    d = int(np.prod(entry["shape"])) // max(rows, 1)
    segs = entry["segments"]
    codes = np.frombuffer(reader.segment(segs["codes"]), dtype=np.int8)
    scales = np.frombuffer(reader.segment(segs["scales"]), dtype="<f2")
    if codes.size != rows * d or scales.size != rows:
        raise ArtifactError(f"tensor {entry['name']}: record segments do not match shape {entry['shape']}")
    _finite(scales, entry, "scales")
    if "perm" in segs:
        perm = np.frombuffer(reader.segment(segs["perm"]), dtype=np.dtype(entry["perm_dtype"]).newbyteorder("<"))
        if perm.size != rows or not np.array_equal(np.sort(perm), np.arange(rows)):
            raise ArtifactError(f"tensor {entry['name']}: row permutation is invalid")
        inv = np.empty(rows, dtype=np.int64)
        inv[perm] = np.arange(rows)
        codes, scales = codes.reshape(rows, d)[inv], scales[inv]
    w = dequantize(torch.from_numpy(codes.reshape(rows, d).astype(np.int8)), torch.from_numpy(scales.copy()))
    if "lqer_rank" in entry:
        packing = entry.get("lqer_packing", "pgolf")
        if packing not in LQER_PACKINGS:
            raise ArtifactError(f"tensor {entry['name']}: unknown LQER packing {str(packing)[:40]!r}")
        if packing == "record":
            w = w + record_delta(_record_factors(entry, reader, rows, d))
        else:
            w = w + lqer_delta(_factors(entry, reader, rows, d), LQER_GROUP)
    return w


def _finite(a: np.ndarray, entry: dict, what: str) -> None:
    if not np.isfinite(a).all():
        raise ArtifactError(f"tensor {entry['name']}: {what} hold NaN or inf")


def _factors(entry: dict, reader, rows: int, d: int) -> dict:
    r = int(entry["lqer_rank"])
    segs = entry["segments"]
    fac = {"rank": r, "rows": rows, "d": d}
    for part, n in (("a", r * rows), ("b", r * d)):
        q = np.frombuffer(reader.segment(segs[f"lqer_{part}"]), dtype=np.uint8)
        lo = np.frombuffer(reader.segment(segs[f"lqer_{part}_lo"]), dtype="<f2")
        st = np.frombuffer(reader.segment(segs[f"lqer_{part}_step"]), dtype="<f2")
        ng = -(-n // LQER_GROUP)
        if q.size != n or lo.size != ng or st.size != ng:
            raise ArtifactError(f"tensor {entry['name']}: LQER factor {part} has the wrong size")
        _finite(lo, entry, f"LQER factor {part} offsets")
        _finite(st, entry, f"LQER factor {part} steps")
        fac[part] = (q, lo, st)
    return fac


def _record_factors(entry: dict, reader, rows: int, d: int) -> dict:
    r = int(entry["lqer_rank"])
    segs = entry["segments"]
    fac = {"rank": r, "rows": rows, "d": d}
    for part, n, n_scales in (("a", r * rows, 1), ("b", r * d, -(-r * d // RECORD_GROUP_B))):
        q = np.frombuffer(reader.segment(segs[f"lqer_{part}"]), dtype=np.int8)
        scale = np.frombuffer(reader.segment(segs[f"lqer_{part}_scale"]), dtype="<f2")
        if q.size != n or scale.size != n_scales:
            raise ArtifactError(f"tensor {entry['name']}: LQER factor {part} has the wrong size")
        _finite(scale, entry, f"LQER factor {part} scales")
        fac[part] = (q, scale)
    return fac

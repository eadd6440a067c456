"""Grouped-storage schemes (``record``, ``turbo-rd``): whole-model encode and per-tensor decode.

These schemes see the whole model at once (Hessians, LQER's top-k choice, rate
allocation to a byte target) and store segments in compressed groups
(:mod:`pgolf.quant.calibrate.groups`) inside an uncompressed container (codec ``none``). Shared
small-tensor rule (pgolf's, ``quant.small_tensors=pgolf``): 2-D tensors below the
quantization threshold are int8 per row (``int8row``), control tensors and 1-D tensors
fp16, non-float tensors ``raw``; the record's (``quant.small_tensors=record``): every
small float tensor fp16 except the sparse attention gate (``*.attn.gate``), int8 per row. :data:`SCHEMES` maps a name to its matrix encoder; :func:`decode_tensors`
decodes a header that has a ``groups`` table; :func:`prepare` collects the calibration
Hessians (and turbo-rd's byte target) when a run directory is quantized. Loaded through
:mod:`pgolf.features` only when ``quant.scheme`` is ``record`` or ``turbo-rd``, by
:mod:`pgolf.quant.format.artifact` and :mod:`pgolf.quant.quantize`::

    calib, target = prepare(run_dir, cfg, sd, code_bytes)
    data, reference, rows, facts = build_grouped(sd, cfg, plans, alias, calib, target_bytes=target)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError, ConfigError, PgolfError
from pgolf.fileio import read_json
from pgolf.quant.schemes.kinds import DTYPES, array, is_int
from pgolf.quant.schemes import record, rowint, turbo_rd
from pgolf.quant.calibrate.groups import GroupReader, GroupWriter
from pgolf.quant.calibrate.gptq import hessian_error
from pgolf.quant.calibrate.allocation import GROUPED_SCHEMES
from pgolf.quant.calibrate.hessian import calibrate

SCHEMES = GROUPED_SCHEMES
RAW_GROUPS = ("ec",)  # already entropy coded: stored as is
TARGET_TOLERANCE = 0.005  # turbo-rd lands in [(1 - tol) * target, target]


def grid_fake_quant(p, plan, qcfg):
    """The QAT fake-quant module of a record/turbo-rd tensor (pgolf.quant.schemes.qat_grids)."""
    from pgolf.quant.schemes.qat_grids import grid_fake_quant as make

    return make(p, plan, qcfg)


# ----------------------------------------------------------------- calibration


def prepare(run_dir, cfg, sd, code: int, data=None, batches=None, target_bytes=None, log=print):
    """``(calibration, target_bytes)`` for quantizing a run directory with a grouped scheme
    (:func:`pgolf.quant.quantize.quantize_run`): the GPTQ Hessians, and turbo-rd's byte
    target, by default ``quant.target_bytes`` or the budget minus the ``code`` bytes."""
    calib = run_calibration(run_dir, cfg, sd, data, batches, log)
    if cfg.quant.scheme == "turbo-rd" and target_bytes is None:
        target_bytes = cfg.quant.target_bytes or cfg.quant.budget_bytes - code
    return calib, target_bytes


def run_calibration(run_dir, cfg, sd, data=None, batches=None, log=print):
    """Hessians for the grouped schemes, or None with ``batches == 0`` (round to nearest)."""
    n = cfg.quant.calib_batches if batches is None else int(batches)
    if n < 0:
        raise ConfigError(f"--calib-batches must be >= 0, got {n}")
    if n == 0:
        return None
    data = data or read_json(Path(run_dir) / "config.json").get("data_dir")
    if not data or not Path(data).is_dir():
        raise PgolfError(f"calibration needs the training shards: {data or 'no data_dir in config.json'} "
                         "not found (pass --data DIR, or --calib-batches 0 to round to nearest)")
    key = _calibration_key(cfg, sd, data, n)
    calib = _LAST_CALIBRATION.get(key)
    if calib is not None:
        if log:
            log(f"calibration: reused ({n} train batches of the same weights and data, {calib.seconds:.1f} s "
                "when collected)")
        return calib
    calib = calibrate(cfg, sd, data, n)
    _LAST_CALIBRATION.clear()
    _LAST_CALIBRATION[key] = calib
    if log:
        log(f"calibration: {n} train batches, {calib.tokens:,} tokens, {calib.seconds:.1f} s "
            "(training data: the challenge counts this time in the training budget; reported as "
            "calibration_s, not deducted here)")
    return calib


#: The last calibration of this process, by :func:`_calibration_key`: quantizing the same
#: weights again (``pgolf frontier`` tries several schemes and bit settings) reuses it.
_LAST_CALIBRATION: dict = {}


def _calibration_key(cfg, sd, data, n: int) -> str:
    """A digest of everything a calibration depends on: the weights' bytes, the model config,
    the batch shape, the rotation (sensitivity probe), the data folder and the batch count."""
    import hashlib
    import json

    h = hashlib.sha256()
    q = cfg.quant
    h.update(json.dumps([cfg.to_dict()["model"], cfg.train.seq_len, cfg.train.batch_tokens, q.rotation,
                         q.rotation_seed, str(Path(data).resolve()), n], sort_keys=True).encode())
    for name in sorted(sd):
        t = sd[name].detach().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------- small tensors


SMALL_RULES = ("pgolf", "record")


def _small_kind(plan, rule: str = "pgolf") -> str:
    if plan.kind == "raw":
        return "raw"
    if rule == "record":
        return "int8row" if plan.name.endswith(".attn.gate") and len(plan.shape) == 2 else "fp16"
    if plan.kind == "fp16" and len(plan.shape) == 2:
        return "int8row"
    return "fp16"


def _write_small(entry: dict, kind: str, t: torch.Tensor, writer) -> torch.Tensor:
    from pgolf.quant.format.artifact import _tensor_bytes

    segs = entry["segments"]
    if kind == "raw":
        segs["data"] = writer.add("raw", _tensor_bytes(t))
        return t.detach().cpu().clone()
    if kind == "fp16":
        stored = t.detach().cpu().to(torch.float16)
        segs["data"] = writer.add("small", _tensor_bytes(stored))
        return stored.to(t.dtype)
    q, scales = rowint.quantize_rows(t.detach().cpu().float(), 8)
    segs["scales"] = writer.add("small", _tensor_bytes(scales))
    segs["codes"] = writer.add("small", q.numpy().tobytes())
    return rowint.dequantize_rows(q, scales).to(t.dtype)


def _read_small(e: dict, reader) -> torch.Tensor:
    kind, shape, segs = e["kind"], e["shape"], e["segments"]
    if kind == "raw":
        return finite(array(reader.segment(segs["data"]), DTYPES[e["dtype"]], shape), e["name"], "stored values")
    if kind == "fp16":
        return finite(array(reader.segment(segs["data"]), torch.float16, shape), e["name"], "stored values")
    rows = int(shape[0])
    scales = finite(array(reader.segment(segs["scales"]), torch.float16, [rows]), e["name"], "scales")
    q = array(reader.segment(segs["codes"]), torch.int8, [rows, math.prod(shape) // max(rows, 1)])
    return rowint.dequantize_rows(q, scales)


# ----------------------------------------------------------------- encode


def _entry(plan, t, kind: str) -> dict:
    from pgolf.quant.format.artifact import _dtype_name

    return {"name": plan.name, "role": plan.role, "shape": list(plan.shape), "kind": kind,
            "bits": plan.bits, "dtype": _dtype_name(t), "segments": {}}


def build_grouped(state_dict, cfg, plans, alias, calib, progress=None, target_bytes=None):
    """``(artifact bytes, reference state_dict, report rows, facts)`` for a grouped scheme."""
    from pgolf.config import RunConfig

    cfg = RunConfig.from_dict(cfg.to_dict())
    cfg.quant.codec = "none"  # groups are compressed one by one
    mats = [p for p in plans if p.kind in SCHEMES and p.name not in alias]
    if cfg.quant.scheme == "record":
        return _build_record(state_dict, cfg, plans, alias, mats, calib, progress)
    if target_bytes is None:
        raise PgolfError("turbo-rd needs a byte target")
    return _build_turbo_rd(state_dict, cfg, plans, alias, mats, calib, progress, int(target_bytes))


def _finish(state_dict, cfg, plans, alias, write_matrix, facts):
    """Write every tensor (matrices through ``write_matrix``) and assemble the container."""
    from pgolf.quant.format.artifact import _assemble, _report_row

    writer = GroupWriter()
    entries, reference, rows = [], {}, []
    for plan in plans:
        t = state_dict[plan.name]
        if plan.name in alias:
            entries.append({"name": plan.name, "kind": "alias", "alias_of": alias[plan.name]})
            reference[plan.name] = reference[alias[plan.name]]
            continue
        if plan.kind in SCHEMES:
            entry = _entry(plan, t, plan.kind)
            w_hat = write_matrix(plan, entry, writer).reshape(plan.shape).to(t.dtype)
        else:
            entry = _entry(plan, t, _small_kind(plan, cfg.quant.small_tensors))
            w_hat = _write_small(entry, entry["kind"], t, writer)
        entries.append(entry)
        reference[plan.name] = w_hat
        row = _report_row(plan, t, w_hat, entry)
        row["kind"] = entry["kind"]
        if entry["kind"] == "turbo-rd":
            row["bits"] = None  # its rate is the coded size, not a width
        row["calib"] = facts.get(plan.name)
        rows.append(row)
    table, blob = writer.finish(RAW_GROUPS)
    header = {"format": "pgolf-artifact", "config": cfg.to_dict(), "codebooks": [], "tensors": entries,
              "groups": table}
    return _assemble(header, blob, cfg.quant), reference, rows


def _calib_fact(calib, name: str) -> dict:
    h = calib.hessians.get(name) if calib is not None else None
    fact = {"hessian": "none" if h is None else f"{calib.tokens} tokens"}
    if calib is not None and name in calib.sensitivity:
        fact["sensitivity"] = calib.sensitivity[name]
    return fact


def _build_record(state_dict, cfg, plans, alias, mats, calib, progress):
    q = cfg.quant
    encoded, errors, facts = {}, {}, {}
    for plan in mats if progress is None else progress(mats):
        w = state_dict[plan.name].detach().cpu().float().reshape(plan.rows)
        h = calib.hessians.get(plan.name) if calib is not None else None
        k = record.choose_k(w, h, plan.role, plan.bits, q.record_k_search)
        rec = record.encode_matrix(w, h, plan.bits, k, q)
        w_hat = record.dequantize(rec["codes"], rec["scales"])
        encoded[plan.name] = (rec, w_hat)
        errors[plan.name] = hessian_error(w, w_hat, h) if h is not None else float(((w - w_hat) ** 2).sum())
        facts[plan.name] = {**_calib_fact(calib, plan.name), "k": k, "error": errors[plan.name]}
    lqer = {}
    for name in record.lqer_targets(errors, q.lqer_top_k) if q.lqer_rank > 0 else []:
        plan = next(p for p in mats if p.name == name)
        w = state_dict[name].detach().cpu().float().reshape(plan.rows)
        fac, fixed = record.apply_lqer(w, encoded[name][1], q.lqer_rank, q.lqer_packing)
        lqer[name] = (fac, fixed)
        facts[name]["lqer_rank"] = fac["rank"]

    def write_matrix(plan, entry, writer):
        rec, w_hat = encoded[plan.name]
        fac, fixed = lqer.get(plan.name, (None, w_hat))
        record.write(entry, rec, fac, writer, plan.role)
        return fixed

    data, reference, rows = _finish(state_dict, cfg, plans, alias, write_matrix, facts)
    return data, reference, rows, {"lqer": sorted(lqer)}


def _build_turbo_rd(state_dict, cfg, plans, alias, mats, calib, progress, target: int):
    from pgolf.quant.calibrate import rdalloc

    q = cfg.quant
    prepared, facts = {}, {}
    for plan in mats if progress is None else progress(mats):
        w = state_dict[plan.name].detach().cpu().float().reshape(plan.rows)
        h = calib.hessians.get(plan.name) if calib is not None else None
        sens = calib.sensitivity.get(plan.name) if calib is not None else None
        prepared[plan.name] = turbo_rd.prepare(w, h, q, sens)
        facts[plan.name] = _calib_fact(calib, plan.name)
    small = [p for p in plans if p.kind not in SCHEMES and p.name not in alias]
    fixed = len(_finish(state_dict, cfg, small, {}, None, facts)[0])
    coded = sum(p.numel for p in prepared.values() if p.weight > 0)
    c = rdalloc.fit_scale(prepared, 8.0 * max(target - fixed, 0) * (1 - TARGET_TOLERANCE / 2))
    tried = []
    for _ in range(q.rd_max_iters):
        data, reference, rows = _encode_turbo_rd(state_dict, cfg, plans, alias, prepared, c, facts)
        tried.append((c, len(data)))
        if (1 - TARGET_TOLERANCE) * target <= len(data) <= target:
            break
        if len(data) <= target and rdalloc.finest(prepared, c):
            print(f"turbo-rd: {len(data):,} B at the finest grid ({rdalloc.MAX_BITS:g} bits per coordinate at most) "
                f"is below the target {target:,} B; more bytes would not help")
            break
        c = _next_scale(tried, target, coded)
    else:
        under = [t for t in tried if t[1] <= target]
        if not under:
            raise PgolfError(f"turbo-rd: cannot reach {target:,} bytes (smallest try {min(b for _, b in tried):,} B)")
        c = max(under, key=lambda t: t[1])[0]
        data, reference, rows = _encode_turbo_rd(state_dict, cfg, plans, alias, prepared, c, facts)
    return data, reference, rows, {"target_bytes": target, "rd_scale": c, "rd_tries": [b for _, b in tried],
                                   "rd_finest_grid": rdalloc.finest(prepared, c)}


def _next_scale(tried, target: int, coded: int) -> float:
    """Secant step on ``(log c, bytes)`` once two tries exist, else the high-rate Newton step."""
    from pgolf.quant.calibrate import rdalloc

    goal = target * (1 - TARGET_TOLERANCE / 2)
    if len(tried) < 2 or tried[-1][1] == tried[-2][1]:
        return rdalloc.newton_scale(tried[-1][0], tried[-1][1], goal, coded)
    (c0, b0), (c1, b1) = tried[-2], tried[-1]
    slope = (b1 - b0) / (np.log(c1) - np.log(c0))
    if slope >= 0:
        return rdalloc.newton_scale(c1, b1, goal, coded)
    return float(c1 * np.exp((goal - b1) / slope))


def _encode_turbo_rd(state_dict, cfg, plans, alias, prepared, c, facts):
    from pgolf.quant.calibrate import rdalloc

    steps = {n: float(np.float32(s)) for n, s in rdalloc.steps_for(prepared, c).items()}

    def write_matrix(plan, entry, writer):
        p = prepared[plan.name]
        codes = turbo_rd.encode(p, steps[plan.name], cfg.quant)
        turbo_rd.write(entry, p.norms, codes, steps[plan.name], writer)
        facts[plan.name]["step"] = steps[plan.name]
        return turbo_rd.dequantize(p.norms, codes, steps[plan.name], turbo_rd.rotation_of(cfg.quant, plan.rows[1]))

    return _finish(state_dict, cfg, plans, alias, write_matrix, facts)


# ----------------------------------------------------------------- decode


def decode_tensors(header: dict, body: bytes, qcfg) -> dict[str, torch.Tensor]:
    """Decode every tensor of a grouped-scheme header (``groups`` table present)."""
    reader = GroupReader(header["groups"], body)
    sd: dict[str, torch.Tensor] = {}
    for e in header["tensors"]:
        kind = e["kind"]
        if kind == "alias":
            if e["alias_of"] not in sd:
                raise ArtifactError(f"tensor {e['name']}: alias of unknown tensor {e['alias_of']!r}")
            sd[e["name"]] = sd[e["alias_of"]]
            continue
        out_dtype = DTYPES[e["dtype"]]
        try:
            if kind == "record":
                w = record.read(e, reader)
            elif kind == "turbo-rd":
                w = turbo_rd.read(e, reader, qcfg)
            else:
                w = _read_small(e, reader)
            sd[e["name"]] = finite(w.reshape([int(s) for s in e["shape"]]).to(out_dtype), e["name"], "decoded values")
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # sizes that do not fit the shape
            raise ArtifactError(f"tensor {e['name']}: cannot decode ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:160]})") from None
    return sd


def finite(t: torch.Tensor, name: str, what: str) -> torch.Tensor:
    """``t``, or ArtifactError naming the tensor if ``t`` holds NaN or inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ArtifactError(f"tensor {name}: {what} hold NaN or inf")
    return t


# ----------------------------------------------------------------- header check

_SMALL_KINDS = ("raw", "fp16", "int8row")
_MAX_GROUPS = 64
_PERM_DTYPES = {"uint16": 2, "uint32": 4}


def _ref(ref, groups: dict, what: str) -> tuple[str, int, int]:
    if not (isinstance(ref, list) and len(ref) == 3 and isinstance(ref[0], str) and ref[0] in groups
            and all(is_int(v) and v >= 0 for v in ref[1:])):
        raise ArtifactError(f"{what}: segment {repr(ref)[:60]} is not [group, offset, length] in a known group")
    return ref[0], ref[1], ref[2]


def segment_sizes(e: dict, shape: tuple, dtype) -> dict[str, tuple[int, int]]:
    """``{segment key: (fewest, most) bytes}`` an entry of its kind needs for ``shape``
    (exact, except turbo-rd's range-coded codes: at most their header, count table and 2 bytes
    a code). Raises ArtifactError for header fields the sizes depend on (perm dtype, LQER rank, step)."""
    rows = int(shape[0]) if shape else 1
    n = math.prod(shape)
    d = n // max(rows, 1)
    kind = e["kind"]
    if kind == "raw":
        return {"data": (n * torch.empty(0, dtype=DTYPES[e["dtype"]]).element_size(),) * 2}
    if kind == "fp16":
        return {"data": (2 * n, 2 * n)}
    if kind == "int8row":
        return {"scales": (2 * rows, 2 * rows), "codes": (n, n)}
    if kind == "turbo-rd":
        step = e.get("step")
        if not (isinstance(step, (int, float)) and not isinstance(step, bool) and 0 < step <= 1e30):
            raise ArtifactError(f"tensor {e['name']}: turbo-rd step {repr(step)[:20]} is outside (0, 1e30]")
        from pgolf.quant.format import entropy

        return {"norms": (2 * rows, 2 * rows), "idx": (16, 16 + 4 * entropy.MAX_SYMBOLS + 2 * n + 64)}
    sizes = {"codes": (n, n), "scales": (2 * rows, 2 * rows)}
    if "perm_dtype" in e:
        if e["perm_dtype"] not in _PERM_DTYPES:
            raise ArtifactError(f"tensor {e['name']}: row permutation dtype {str(e['perm_dtype'])[:20]!r} "
                                f"is not one of {sorted(_PERM_DTYPES)}")
        sizes["perm"] = (rows * _PERM_DTYPES[e["perm_dtype"]],) * 2
    if "lqer_rank" in e:
        sizes.update(record.lqer_segment_sizes(e, rows, d))
    return sizes


def _check_groups(header: dict) -> tuple[dict, int]:
    """``({group name: declared raw bytes}, body length)``; ArtifactError on a malformed table."""
    from pgolf.quant.calibrate.groups import GROUP_CODECS
    from pgolf.quant.format.header import _list, _obj

    groups, body_len = {}, 0
    for g in _list(header.get("groups"), "group table", _MAX_GROUPS):
        g = _obj(g, "group")
        name, codec = g.get("name"), g.get("codec")
        if not (isinstance(name, str) and isinstance(codec, str) and codec in GROUP_CODECS
                and is_int(g.get("len")) and is_int(g.get("raw_len")) and g["len"] >= 0 and g["raw_len"] >= 0):
            raise ArtifactError(f"group {repr(g)[:80]} is malformed")
        if name in groups:
            raise ArtifactError(f"group {name[:40]!r} appears twice in the group table")
        groups[name] = g["raw_len"]
        body_len += g["len"]
    return groups, body_len


def _tile_groups(groups: dict, spans: list) -> None:
    """Every group's segments cover exactly ``[0, raw_len)``, in order, disjoint: so no group
    may declare (and decompress to) more bytes than its tensors need."""
    pos = dict.fromkeys(groups, 0)
    for group, off, n, what in sorted(spans):
        if off != pos[group]:
            issue = "overlaps the previous segment" if off < pos[group] else f"leaves a gap at byte {pos[group]}"
            raise ArtifactError(f"{what} at offset {off} of group {group[:40]!r} {issue}")
        pos[group] += n
    for group, raw_len in groups.items():
        if pos[group] != raw_len:
            raise ArtifactError(f"group {group[:40]!r} declares {raw_len:,} decompressed bytes but its "
                                f"segments cover {pos[group]:,}")


def check_grouped_header(header: dict, expected_model=None):
    """Validate a grouped-scheme header against its model before the body is read: config,
    group table, every model tensor once with its shape, a kind the scheme can store it as,
    every segment of the size its kind needs, and the segments tiling each group's declared
    size exactly (the declared sizes bound decompression). Returns a header ``Layout``."""
    from pgolf.quant.format.header import MAX_TENSORS, Layout, _list, _obj, header_config, model_tensors

    cfg = header_config(header, expected_model)
    if cfg.quant.scheme not in SCHEMES:
        raise ArtifactError(f"artifact with a group table has scheme {cfg.quant.scheme!r}")
    groups, body_len = _check_groups(header)
    table = _list(header.get("tensors"), "tensor table", MAX_TENSORS)
    model = model_tensors(cfg.model, len(table))
    seen: dict = {}
    spans: list = []
    for e in table:
        _check_grouped_entry(_obj(e, "tensor entry"), model, seen, groups, cfg.quant.scheme, spans)
    if set(seen) != set(model):
        raise ArtifactError(f"artifact lacks {len(set(model) - set(seen))} model tensor(s)")
    _tile_groups(groups, spans)
    return Layout(cfg, [], None, body_len)


def _check_grouped_entry(e: dict, model: dict, seen: dict, groups: dict, scheme: str, spans: list) -> None:
    from pgolf.quant.format.header import _obj

    name = e.get("name")
    if not isinstance(name, str) or name not in model or name in seen:
        raise ArtifactError(f"tensor {str(name)[:60]!r} is not a (new) parameter of the artifact's model")
    shape, dtype, _ = model[name]
    if e.get("kind") == "alias":
        target = e.get("alias_of")
        if not isinstance(target, str) or seen.get(target) != shape:
            raise ArtifactError(f"tensor {name}: alias of an unknown tensor or of another shape")
        seen[name] = shape
        return
    kind, stored = e.get("kind"), e.get("dtype")
    if (e.get("shape") != list(shape) or not isinstance(kind, str) or kind not in (scheme,) + _SMALL_KINDS
            or not isinstance(stored, str) or stored not in DTYPES
            or DTYPES[stored].is_floating_point != dtype.is_floating_point or (kind == "raw" and DTYPES[stored] != dtype)):
        raise ArtifactError(f"tensor {name}: shape, kind or dtype does not fit the model")
    segs = _obj(e.get("segments"), f"segment map of {name}")
    sizes = segment_sizes(e, shape, dtype)
    if set(segs) != set(sizes):
        raise ArtifactError(f"tensor {name}: segments {sorted(segs)[:8]}, kind {kind} needs {sorted(sizes)}")
    for key, ref in segs.items():
        group, off, n = _ref(ref, groups, f"tensor {name} {key}")
        lo, hi = sizes[key]
        if not lo <= n <= hi:
            raise ArtifactError(f"tensor {name}: segment {key} has {n:,} bytes, expected "
                                f"{lo:,}" + (f"..{hi:,}" if hi != lo else ""))
        spans.append((group, off, n, f"tensor {name} {key}"))
    seen[name] = shape

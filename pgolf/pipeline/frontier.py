"""``pgolf frontier``: model size against bits at a fixed byte and time budget, resumable.

For each model size (a list of config overrides, ``--size model_dim=256,num_layers=6``)
one model is trained under the same preset, data, wall-clock cap and seed; for each
scheme that model is quantized to the model-byte budget and the decoded artifact is
evaluated. ``turbo-rd`` fills the budget through its byte target; ``record`` and ``intN``
take the largest bit setting that fits (record: matrices b, embeddings b + 1, b = 8 … 2;
intN: every role at b = N … 2), else the cell says "does not fit". The training,
quantization and evaluation are pgolf's own (:func:`pgolf.train.trainer.train` through
the pipeline's stage table, :func:`pgolf.quant.quantize.quantize_run`,
:func:`pgolf.eval.harness.run_eval`); the float model is evaluated with the same settings
so that pre- and post-quantization numbers compare.

Layout of ``OUT``: ``frontier_config.json`` (the settings every cell shares: a rerun with
other settings is refused), ``<size>/train/`` (a run directory), ``<size>/size.json``
(written once the size is trained and its float model evaluated), ``<size>/<scheme>/``
(``artifact.pgz``, ``quant.json``, ``eval.json`` and, written last, ``cell.json``), and
the table (:mod:`pgolf.pipeline.frontier_table`): ``frontier.md``, ``frontier.json``,
``frontier.png``. A cell or size counts as finished only once its marker file exists
(every file is written atomically), so a killed run redoes exactly the unfinished work;
an unfinished training with a checkpoint is resumed. Under ``torchrun`` every rank trains
and evaluates; rank 0 quantizes and writes. Used by :mod:`pgolf.pipeline.frontier_commands`::

    spec = FrontierSpec(preset="tiny", sizes=[parse_size("model_dim=128,num_layers=2")], ...)
    rows = run_frontier(spec, "runs/frontier", run_code_bytes)
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgolf.errors import BudgetError, ConfigError, PgolfError
from pgolf.fileio import atomic_write_json

SCHEMES = ("record", "turbo-rd", "int6", "int8")
QAT_MODES = ("off", "preset", "turbo-rd", "record", "int6", "int8")
TOTAL_BUDGET = 16_000_000  # the default of quant.budget_bytes
CONFIG, SIZE_JSON, CELL_JSON, TRAIN_DIR = "frontier_config.json", "size.json", "cell.json", "train"
NO_FIT = "does not fit"


def log(msg: str, env=None) -> None:
    """One ``[pgolf frontier]`` progress line (rank 0 only)."""
    if env is None or env.is_main:
        print(f"[pgolf frontier] {msg}", flush=True)


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Size:
    """One model size: its ``--set`` overrides and the folder name made from them."""

    sets: tuple[str, ...]

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "", "_".join(s.replace("=", "-").replace(",", ".") for s in self.sets))


def parse_size(text: str) -> Size:
    """``"model_dim=256,num_layers=6"`` -> Size; a part without ``=`` continues the previous
    value (``value_embed_layers=4,5``). ConfigError when the text does not start KEY=VALUE."""
    items: list[str] = []
    for part in (t.strip() for t in text.split(",")):
        if "=" in part:
            items.append(part)
        elif part and items:
            items[-1] += "," + part
        elif part:
            items = []
            break
    if not items or any(not t.split("=", 1)[0].strip() for t in items):
        raise ConfigError(f"--size {text!r}: expected KEY=VALUE[,KEY=VALUE...], e.g. model_dim=256,num_layers=6")
    return Size(tuple(items))


def parse_schemes(text: str) -> list[str]:
    """``"record,turbo-rd"`` -> list; ConfigError naming an unknown or repeated scheme."""
    schemes = [s.strip() for s in text.split(",") if s.strip()]
    for s in schemes:
        if s not in SCHEMES:
            raise ConfigError(f"--schemes: unknown scheme {s!r}; choose from {', '.join(SCHEMES)}")
    if not schemes or len(set(schemes)) != len(schemes):
        raise ConfigError(f"--schemes {text!r}: give each scheme once, e.g. record,turbo-rd")
    return schemes


@dataclass
class FrontierSpec:
    """Everything a frontier shares across its cells, plus its sizes and schemes."""

    preset: str
    sizes: list[Size]
    schemes: list[str]
    data_dir: str
    tokenizer: str
    wallclock: float | None = None  # None: the preset's cap
    model_bytes: int | None = None  # None: TOTAL_BUDGET - the cell's counted code bytes
    seed: int | None = None
    qat: str = "off"
    sets: list[str] = field(default_factory=list)
    stride: int | None = None  # None: the config's eval.stride
    ngram: str = "none"
    ttt: str = "none"
    eval_tokens: int = 0  # 0: the whole validation split
    calib_batches: int | None = None  # None: the config's quant.calib_batches

    def shared(self) -> dict[str, Any]:
        """The settings stamped in frontier_config.json (sizes and schemes may grow)."""
        d = asdict(self)
        d.pop("sizes"), d.pop("schemes")
        d["data_dir"], d["tokenizer"] = str(Path(self.data_dir).resolve()), str(Path(self.tokenizer).resolve())
        return json.loads(json.dumps(d))


def size_config(spec: FrontierSpec, size: Size):
    """The RunConfig one size trains with; ConfigError naming the bad ``--size``/``--set``."""
    from pgolf.presets import resolve_config

    extra = []
    if spec.wallclock is not None:
        extra.append(f"train.max_wallclock_seconds={spec.wallclock}")
    if spec.seed is not None:
        extra.append(f"train.seed={spec.seed}")
    if spec.qat == "off":
        extra.append("train.qat=false")
    elif spec.qat != "preset":
        extra += ["train.qat=true", f"quant.scheme={spec.qat}"]
    try:
        return resolve_config(spec.preset, sets=list(spec.sets) + extra + list(size.sets))
    except ConfigError as e:
        raise ConfigError(f"--size {','.join(size.sets)}: {e}") from None


def param_count(cfg) -> int:
    """Parameters of ``cfg.model``, built on the meta device (no memory, no work)."""
    import torch

    from pgolf.model.gpt import GPT, count_params

    with torch.device("meta"):
        return int(count_params(GPT(cfg.model)))


def check_spec(spec: FrontierSpec) -> list[tuple[Size, Any, int]]:
    """Validate everything before anything runs; ``(size, config, params)`` smallest first."""
    if spec.qat not in QAT_MODES:
        raise ConfigError(f"--qat {spec.qat!r}: choose from {', '.join(QAT_MODES)}")
    if spec.model_bytes is not None and spec.model_bytes <= 0:
        raise ConfigError(f"--model-bytes must be a positive byte count, got {spec.model_bytes}")
    if spec.wallclock is not None and not spec.wallclock > 0:  # NaN too
        raise ConfigError(f"--wallclock must be > 0 seconds, got {spec.wallclock}")
    for flag, value in (("--stride", spec.stride), ("--eval-tokens", spec.eval_tokens),
                        ("--calib-batches", spec.calib_batches)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    if not spec.sizes:
        raise ConfigError("give at least one --size KEY=VALUE[,KEY=VALUE...]")
    if len({s.name for s in spec.sizes}) != len(spec.sizes):
        raise ConfigError("each --size must differ from the others")
    sized = [(s, c, param_count(c)) for s in spec.sizes for c in [size_config(spec, s)]]
    return sorted(sized, key=lambda t: t[2])


def check_same_settings(out: Path, spec: FrontierSpec, write: bool = True) -> None:
    """Refuse a folder made with other settings; else stamp ``OUT/frontier_config.json``
    (``write``: on rank 0; every rank checks, so all of them stop alike)."""
    path, want = out / CONFIG, spec.shared()
    if path.is_file():
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise PgolfError(f"{path}: not valid JSON; remove it or use another --out") from None
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
            k = diff[0]
            raise ConfigError(f"{out}: this frontier was made with {k}={have.get(k)!r}, not {want.get(k)!r}; "
                              "use another --out (finished cells are kept only for the same settings)")
    elif write:
        atomic_write_json(path, want)


# ------------------------------------------------------------------ markers


def read_marker(path: Path) -> dict | None:
    """A marker file's dict, or None when missing or unreadable (then the work is redone)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _score(ev: dict) -> dict:
    """The headline of an eval.json: its legal ``score``, else the sliding/standard number."""
    if isinstance(ev.get("score"), dict):
        return {k: ev["score"].get(k) for k in ("method", "val_loss", "val_bpb")}
    neural = ev["neural"]
    method = "sliding" if neural.get("sliding") else "standard"
    return {"method": method, **{k: neural[method][k] for k in ("val_loss", "val_bpb")}}


# ------------------------------------------------------------------ one size


def _agree(flag: bool, env) -> bool:
    if not env.distributed:
        return flag
    from pgolf.train.distributed import any_rank

    return any_rank(flag, env)


def _eval(spec: FrontierSpec, source: Path, out: Path, device: str) -> dict:
    import sys

    from pgolf.eval.harness import run_eval

    return run_eval(source, out, data_dir=spec.data_dir, tokenizer=spec.tokenizer, stride=spec.stride,
                    ngram=spec.ngram, ttt=spec.ttt, max_tokens=spec.eval_tokens, device=device,
                    progress=sys.stderr.isatty())


def train_size(spec: FrontierSpec, cfg, size: Size, size_dir: Path, params: int, env):
    """Train one size (resuming an unfinished run) and evaluate its float model; returns
    ``(size.json dict, env)``. Skipped when ``size.json`` says it is done."""
    from pgolf.pipeline import stages
    from pgolf.pipeline.run import clear_outputs, train_done

    marker, run_dir = size_dir / SIZE_JSON, size_dir / TRAIN_DIR
    done = read_marker(marker)
    if not _agree(done is None or not train_done(run_dir), env):
        log(f"{size_dir.name}: trained ({done['steps']} steps), skipped", env)
        return done, env
    resume = (run_dir / "checkpoint.pt").is_file() and not train_done(run_dir)
    if not resume and not train_done(run_dir) and env.is_main and run_dir.exists():
        clear_outputs(run_dir)  # killed before its first checkpoint: start that size again
    stages.barrier(env)
    if not train_done(run_dir):
        log(f"{size_dir.name}: train {params:,} params ({'resuming' if resume else 'from scratch'}) -> {run_dir}",
            env)
        stages.STAGE_FUNCS["train"](cfg, spec.data_dir, spec.tokenizer, run_dir, resume)
        env = stages.dist_env(cfg)
    stages.barrier(env)
    log(f"{size_dir.name}: evaluate the float model", env)
    ev = _eval(spec, run_dir, size_dir / "float_eval.json", cfg.train.device)
    env = stages.dist_env(cfg)
    summary = json.loads((run_dir / "train_summary.json").read_text(encoding="utf-8"))
    done = {"size": list(size.sets), "params": params, "steps": summary.get("steps"),
            "train_time_s": summary.get("train_time_s"), "pre_quant": _score(ev)}
    if env.is_main:
        atomic_write_json(marker, done)
    stages.barrier(env)
    return done, env


# ------------------------------------------------------------------ one cell


def ladder(scheme: str) -> list[dict[str, int]]:
    """The bit settings tried for ``record``/``intN``, largest first (turbo-rd: none)."""
    from pgolf.quant.calibrate.allocation import QUANT_ROLES

    if scheme == "record":
        return [{r: min(b + 1, 8) if r == "embed" else b for r in QUANT_ROLES} for b in range(8, 1, -1)]
    if scheme.startswith("int"):
        return [{r: b for r in QUANT_ROLES} for b in range(int(scheme[3:]), 1, -1)]
    return []


def setting_label(scheme: str, bits: dict[str, int] | None, target: int | None) -> str:
    if scheme == "turbo-rd":
        return f"target {target:,} B"
    if scheme == "record":
        return f"int{bits['attn']} (embed int{bits['embed']})"
    return f"int{bits['attn']}"


class Sizer:
    """Artifact bytes of one trained model at a bit setting, without writing anything
    (:func:`pgolf.quant.format.artifact.build_artifact` on the Hessians that quantize_run then
    reuses: :func:`pgolf.quant.schemes.grouped.run_calibration` keeps the last calibration)."""

    def __init__(self, run_dir: Path, spec: FrontierSpec):
        from pgolf.quant.quantize import load_run

        self.run_dir, self.spec = run_dir, spec
        self.cfg, self.sd = load_run(run_dir)
        self._calib, self._have_calib = None, False

    def calib(self):
        if not self._have_calib:
            from pgolf.quant.schemes.grouped import run_calibration

            self._calib = run_calibration(self.run_dir, self.cfg, self.sd, self.spec.data_dir,
                                          self.spec.calib_batches, log=lambda m: log(m))
            self._have_calib = True
        return self._calib

    def bytes_at(self, scheme: str, bits: dict[str, int]) -> int:
        """Bytes of the artifact that quantize_run writes at ``bits`` (the same bytes)."""
        from pgolf.quant.format.artifact import build_artifact, model_roles
        from pgolf.quant.quantize import apply_options

        cfg = apply_options(self.cfg, scheme=scheme)
        calib = self.calib() if scheme == "record" else None
        blob, _, _ = build_artifact(self.sd, cfg, model_roles(cfg.model), bits, calib=calib)
        return len(blob)


def model_budget(spec: FrontierSpec, sizer: Sizer, code: int) -> int:
    """A cell's model-byte budget: ``--model-bytes``, else the run's total budget
    (``quant.budget_bytes``, 16,000,000) minus ``code``, the code bytes counted for the cell's scheme."""
    if spec.model_bytes is not None:
        return spec.model_bytes
    budget = sizer.cfg.quant.budget_bytes - code
    if budget <= 0:
        raise BudgetError(f"the counted code ({code:,} B) leaves no model bytes under {sizer.cfg.quant.budget_bytes:,}")
    return budget


def pick_bits(sizer: Sizer, scheme: str, budget: int, name: str) -> tuple[dict | None, list[int]]:
    """The largest bit setting whose artifact fits ``budget`` and the bytes of each try."""
    tried = []
    for bits in ladder(scheme):
        n = sizer.bytes_at(scheme, bits)
        tried.append(n)
        fits = n <= budget
        log(f"{name}: {setting_label(scheme, bits, None)} -> {n:,} B ({'fits' if fits else 'over'} {budget:,} B)")
        if fits:
            return bits, tried
    return None, tried


def quantize_cell(spec: FrontierSpec, sizer: Sizer, scheme: str, cell: Path, name: str, count_code) -> dict:
    """Quantize into ``cell`` (rank 0): the cell.json fields so far (``status`` ok or NO_FIT);
    ``count_code(run_dir, scheme=)`` counts the code bytes (see :func:`run_frontier`)."""
    from pgolf.quant.quantize import quantize_run

    code = count_code(sizer.run_dir, scheme=scheme)
    budget = model_budget(spec, sizer, code)
    base = {"scheme": scheme, "model_bytes_budget": budget}
    bits, tried, target = None, [], budget if scheme == "turbo-rd" else None
    if scheme != "turbo-rd":
        bits, tried = pick_bits(sizer, scheme, budget, name)
        if bits is None:
            return {**base, "status": NO_FIT, "setting": None, "tried_bytes": tried}
    label = setting_label(scheme, bits, target)
    try:  # the budget is checked here against the model bytes alone
        q = quantize_run(sizer.run_dir, scheme=scheme, bits_overrides=bits, allow_over_budget=True,
                         target_bytes=target, out=cell, data=spec.data_dir, calib_batches=spec.calib_batches,
                         log=lambda m: log(f"{name}: {m}"), code_bytes=code)
    except PgolfError as e:
        if scheme != "turbo-rd" or "cannot reach" not in str(e):
            raise
        return {**base, "status": NO_FIT, "setting": label, "reason": str(e)}
    base["code_bytes"] = q["code_bytes"]
    if q["artifact_bytes"] > budget:  # the sizing above is exact, so only turbo-rd can land here
        shutil.rmtree(cell, ignore_errors=True)
        return {**base, "status": NO_FIT, "setting": label, "tried_bytes": [q["artifact_bytes"]]}
    return {**base, "status": "ok", "setting": label, "bits": bits, "artifact_bytes": q["artifact_bytes"],
            "bits_per_param": q["bits_per_param"], "calibration_s": q.get("calibration_s"),
            "tried_bytes": tried or q.get("rd_tries")}


def _bind(cell: Path) -> None:
    """The cell's quant.json and eval.json name the artifact they describe (as pgolf quantize/eval do)."""
    from pgolf.quant.binding import add_fields, bind_file, bind_quant

    bind_quant(cell)
    add_fields(cell / "eval.json", bind_file(cell / "artifact.pgz"))


def run_cell(spec: FrontierSpec, cfg, size_dir: Path, scheme: str, sizer_box: list, env,
             count_code) -> tuple[dict, Any]:
    """One (size, scheme) cell, skipped when its cell.json exists; returns ``(cell, env)``."""
    from pgolf.pipeline import stages

    cell, name = size_dir / scheme, f"{size_dir.name}/{scheme}"
    done = read_marker(cell / CELL_JSON)
    if not _agree(done is None, env):
        log(f"{name}: done ({done['status']}), skipped", env)
        return done, env
    result = None
    if env.is_main:
        shutil.rmtree(cell, ignore_errors=True)  # leftovers of a killed attempt
        if not sizer_box:
            sizer_box.append(Sizer(size_dir / TRAIN_DIR, spec))
        log(f"{name}: quantize", env)
        result = quantize_cell(spec, sizer_box[0], scheme, cell, name, count_code)
    stages.barrier(env)
    fits = _agree(bool(result and result["status"] == "ok"), env)
    if fits:
        log(f"{name}: evaluate the decoded artifact", env)
        ev = _eval(spec, cell / "artifact.pgz", cell / "eval.json", cfg.train.device)
        env = stages.dist_env(cfg)
        if env.is_main:
            result["post_quant"] = _score(ev)
            _bind(cell)
    if env.is_main:
        cell.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cell / CELL_JSON, result)
        shown = f"post-quant {result['post_quant']['val_bpb']:.4f} bpb" if fits else NO_FIT
        log(f"{name}: {shown}", env)
    stages.barrier(env)
    return read_marker(cell / CELL_JSON), env


# ------------------------------------------------------------------ the frontier


def run_frontier(spec: FrontierSpec, out, count_code) -> list[dict]:
    """Every unfinished size and cell, smallest size first, then the table; returns its rows.
    ``count_code(run_dir, scheme=)`` counts a cell's code bytes (the CLI passes
    :func:`pgolf.submit.budget.run_code_bytes`).

    BudgetError (one line) when no scheme fits the smallest size: larger ones cannot.
    One frontier per ``out`` folder (:func:`pgolf.runlock.run_lock`, held by rank 0)."""
    from pgolf.runlock import run_lock

    out = Path(out)
    sized = check_spec(spec)
    with run_lock(out):
        return _run_sizes(spec, out, sized, count_code)


def _run_sizes(spec: FrontierSpec, out: Path, sized, count_code) -> list[dict]:
    from pgolf.pipeline import stages
    from pgolf.pipeline.frontier_table import make_row

    env = stages.dist_env(sized[0][1])
    check_same_settings(out, spec, write=env.is_main)
    stages.barrier(env)
    rows = []
    for i, (size, cfg, params) in enumerate(sized):
        log(f"size {i + 1}/{len(sized)}: {size.name} ({params:,} params)", env)
        size_dir = out / size.name
        info, env = train_size(spec, copy.deepcopy(cfg), size, size_dir, params, env)
        sizer_box: list = []
        cells = []
        for scheme in spec.schemes:
            cell, env = run_cell(spec, cfg, size_dir, scheme, sizer_box, env, count_code)
            cells.append(cell)
        rows += [make_row(size.name, info, c) for c in cells]
        if i == 0 and all(c["status"] == NO_FIT for c in cells):
            _write(rows, spec, out, env)
            stages.teardown(env)
            smallest = min((b for c in cells for b in c.get("tried_bytes") or []), default=None)
            raise BudgetError(f"model budget {cells[0]['model_bytes_budget']:,} B is below the smallest artifact of "
                              f"the smallest size {size.name}" + (f" ({smallest:,} B)" if smallest else "")
                              + ": nothing fits; raise --model-bytes or add a smaller --size")
    _write(rows, spec, out, env)
    stages.teardown(env)
    return rows


def _write(rows, spec, out: Path, env) -> None:
    from pgolf.pipeline.frontier_table import write_table

    if env.is_main:
        paths = write_table(rows, spec.shared() | {"schemes": spec.schemes}, out)
        log("table: " + ", ".join(str(p) for p in paths), env)

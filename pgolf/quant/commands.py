"""``pgolf quantize``: compress a trained run into a byte-budgeted artifact, or inspect one.

    pgolf quantize RUN_DIR [--scheme record|turbo-rd|turbo|turbo-prod|int6|int8] [--bits role=b ...]
                           [--target-bytes N] [--out DIR] [--data DIR] [--calib-batches N]
                           [--codec lzma|zstd|none] [--budget N] [--allow-over-budget]
    pgolf quantize --inspect ARTIFACT [--json]    # decode fully, print the header summary

Schemes: ``record`` is the challenge record's quantizer (GPTQ int6, int7 embeddings,
LQER, per-group brotli/LZMA); ``turbo-rd`` is rotated-basis GPTQ on a uniform grid with
range-coded indices and per-tensor steps fitted to ``--target-bytes`` (default: budget
minus code bytes); both collect GPTQ Hessians on ``--calib-batches`` (16) training
batches first (time reported as ``calibration_s``). ``--out DIR`` writes there and
leaves the run's own artifact alone.

Writes ``RUN_DIR/artifact.pgz`` and ``RUN_DIR/quant.json`` (per-tensor role, bits,
numel, relative MSE ||w - w_hat||^2/||w||^2 and stored bytes; artifact, code and total
bytes; bits per parameter). Roles for ``--bits``: embed, attn, mlp_up, mlp_down, proj.
If artifact + counted code bytes exceed the budget (default 16,000,000), nothing is
written and the command exits 1, unless ``--allow-over-budget``. ``--inspect`` reads an
artifact exactly as evaluation does (checksums, version, full dequantization) and exits
1 with one line if it is corrupt, truncated or of another version.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgolf.errors import ConfigError, PgolfError
from pgolf.quant.calibrate.allocation import QUANT_ROLES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a trained run (TurboQuant / int6 / int8) into a checked artifact",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run directory with config.json and model.pt")
    p.add_argument("--scheme", choices=("record", "turbo-rd", "turbo", "turbo-prod", "int6", "int8"),
                   help="quantization scheme (default: the run config's quant.scheme); turbo-prod is an "
                        "inner-product estimator, worse than turbo for weights")
    p.add_argument("--bits", action="append", default=[], metavar="ROLE=B",
                   help="bits for a role (embed, attn, mlp_up, mlp_down, proj), e.g. --bits mlp_up=3 (repeatable)")
    p.add_argument("--codec", choices=("lzma", "zstd", "none"), help="compression codec (default: quant.codec, lzma)")
    p.add_argument("--budget", type=int, metavar="N", help="byte budget for artifact + code (default: 16,000,000)")
    p.add_argument("--target-bytes", type=int, metavar="N",
                   help="turbo-rd: artifact bytes to fill, within 0.5%% below (default: budget - code bytes)")
    p.add_argument("--out", metavar="DIR", help="write artifact.pgz and quant.json into DIR (default: RUN_DIR)")
    p.add_argument("--data", metavar="DIR", help="record/turbo-rd: training shards for calibration (default: the run's)")
    p.add_argument("--calib-batches", type=int, metavar="N",
                   help="record/turbo-rd: training batches for the GPTQ Hessians (default 16; 0 = round to nearest)")
    p.add_argument("--allow-over-budget", action="store_true", help="write the artifact even if over the budget")
    p.add_argument("--inspect", metavar="ARTIFACT", help="decode ARTIFACT and print its header summary")
    p.add_argument("--json", action="store_true", help="with --inspect: print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.inspect:
        return _inspect(args.inspect, args.json)
    if not args.run_dir:
        raise PgolfError("quantize needs RUN_DIR (or --inspect ARTIFACT)")
    from pgolf.quant.quantize import quantize_run
    from pgolf.runlock import run_lock
    from pgolf.submit.budget import run_code_bytes

    bits = parse_bits_overrides(args.bits)
    with run_lock(args.out or args.run_dir):
        _check_weights(args.run_dir)
        code = run_code_bytes(args.run_dir, scheme=args.scheme, codec=args.codec, budget=args.budget)
        summary = quantize_run(
            args.run_dir, scheme=args.scheme, bits_overrides=bits,
            codec=args.codec, budget=args.budget, allow_over_budget=args.allow_over_budget,
            target_bytes=args.target_bytes, out=args.out, data=args.data, calib_batches=args.calib_batches,
            code_bytes=code,
        )
        from pgolf.quant.binding import bind_quant

        bind_quant(args.out or args.run_dir)  # quant.json names the artifact's sha256 (report/submit check it)
    return 0 if summary["within_budget"] or args.allow_over_budget else 1


def _check_weights(run_dir) -> None:
    """The run's config.json must describe its model.pt (cross-field checks, then the same
    names and shapes): the artifact embeds that config, and eval would refuse it later."""
    from pgolf.config import validate
    from pgolf.model.state_check import check_state
    from pgolf.quant.quantize import load_run

    cfg, sd = load_run(run_dir)
    check_state(validate(cfg).model, sd, Path(run_dir) / "model.pt")


def parse_bits_overrides(items: list[str] | None) -> dict[str, int]:
    """Parse ``--bits``: ``["mlp_up=3", "embed=5"]`` into ``{"mlp_up": 3, "embed": 5}``."""
    out: dict[str, int] = {}
    for item in items or []:
        role, sep, value = item.partition("=")
        role = role.strip()
        if not sep or role not in QUANT_ROLES:
            raise ConfigError(f"--bits expects role=b with role one of {', '.join(QUANT_ROLES)}; got {item!r}")
        try:
            out[role] = int(value)
        except ValueError:
            raise ConfigError(f"--bits {item!r}: bits must be an integer") from None
        if not 1 <= out[role] <= 8:
            raise ConfigError(f"--bits {item!r}: bits must be in 1..8")
    return out


def inspect_summary(path) -> dict:
    """Decode ``path`` completely and summarize its header."""
    from pathlib import Path

    from pgolf.quant.format.artifact import load_artifact, read_header

    sd, cfg = load_artifact(path)  # raises ArtifactError (one line) if missing or corrupt
    data = Path(path).read_bytes()
    header, _ = read_header(data)
    kinds: dict[str, int] = {}
    for e in header["tensors"]:
        key = f"{e['kind']}-{e['bits']}bit" if e["kind"] in ("turbo", "turbo-prod", "int", "record") else e["kind"]
        kinds[key] = kinds.get(key, 0) + 1
    m = cfg.model
    return {
        "artifact": str(path), "bytes": len(data), "scheme": cfg.quant.scheme, "codec": cfg.quant.codec,
        "rotation": f"{cfg.quant.rotation} seed {cfg.quant.rotation_seed}", "codebook": cfg.quant.codebook,
        "model": f"{m.num_layers}L/{m.model_dim}d/{m.num_heads}h/{m.num_kv_heads}kv vocab {m.vocab_size}",
        "tensors": len(sd), "params": int(sum(t.numel() for n, t in sd.items())), "storage": kinds,
    }


def _inspect(path, as_json: bool) -> int:
    s = inspect_summary(path)
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    for k, v in s.items():
        if k == "storage":
            v = ", ".join(f"{n}: {c}" for n, c in sorted(v.items()))
        print(f"{k:>9}: {v:,}" if isinstance(v, int) else f"{k:>9}: {v}")
    return 0


"""Every ``pgolf ...`` command in the README's ```bash blocks, run as written (issue #22).

The fast guard parses the README and fails on a command that is neither run nor listed in
:data:`EXCLUDED` (with its reason), on a placeholder the test cannot fill, and on a stale
:data:`EXCLUDED` entry. The run test executes the runnable commands in README order in a
scratch folder, through ``pgolf.cli.main``: the text of each command is unchanged; only
the placeholders (``DATA_DIR``, ``FILE`` ...) are filled and optional ``[...]`` groups
dropped. The training runs stay tiny through the challenge's own environment variables
(``ITERATIONS``, ``MODEL_DIM`` ...), which every pgolf command reads, so no flag is added.
The run test is marked ``slow`` (about 85 s on 2 cores).
Run: ``python -m pytest -q -m slow tests/test_readme_commands.py``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: Commands the test does not run, each with the reason (keys are the README's text).
EXCLUDED = {
    "pgolf data fineweb --out data/fineweb10B_sp1024 --train-shards 1":
        "downloads from the Hugging Face Hub (offline here; tests/test_fineweb.py serves it locally)",
    "pgolf data fineweb --out data/fineweb10B_sp1024 --train-shards 80":
        "downloads 80 shards from the Hugging Face Hub",
    "torchrun --nproc_per_node=8 -m pgolf train --preset seed --data DATA_DIR --out runs/seed":
        "8 processes and the 44M-parameter seed (tests/test_torchrun_tiny.py runs 2 processes)",
    "torchrun --nproc_per_node=8 -m pgolf eval runs/seed": "needs the seed run (8xH100)",
    "torchrun --nproc_per_node=8 -m pgolf eval runs/seed --ttt lora": "needs the seed run (8xH100)",
    "pgolf eval runs/seed --ttt phased --set ttt.chunk_tokens=48": "needs the seed run (8xH100)",
    "pgolf report runs/seed": "needs the seed run (8xH100)",
    "pgolf submit runs/seed --out records/track_10min_16mb/2026-11-28_MyEntry "
    "--name \"TurboQuant + causal n-gram\" --author \"Your Name\" --github-id you [--blurb \"...\"]":
        "needs the seed run (8xH100); tests/test_submit.py submits a tiny run",
    "pgolf submit runs/seed --out records/track_10min_16mb/seed_repro "
    "--name \"seed reproduction\" --author \"Your Name\" --github-id you":
        "needs the seed run (8xH100)",
    "torchrun --standalone --nproc_per_node=8 -m pgolf run --preset seed "
    "--data data/fineweb10B_sp1024 --out runs/seed --seeds 1337,42,2024":
        "three seed runs on 8xH100",
    "pgolf frontier --preset tiny --data DIR --tokenizer FILE --out runs/frontier "
    "--size model_dim=128,num_layers=4 --size model_dim=256,num_layers=6,value_embed_layers=4,5 "
    "--wallclock 600 --model-bytes 1000000 --schemes record,turbo-rd [--seed 1337] [--qat off]":
        "trains each size for --wallclock 600 s (its --dry-run form below is run)",
    "taskset -c 1 pgolf frontier --preset tiny --data ../shared/data/fineweb_sp1024 "
    "--tokenizer ../shared/data/tokenizers/fineweb_1024_bpe.model --out runs/frontier_cpu "
    "--size model_dim=96,num_layers=4 --size model_dim=144,num_layers=5,value_embed_layers=3,4 "
    "--size model_dim=192,num_layers=6,value_embed_layers=4,5 "
    "--size model_dim=256,num_layers=6,value_embed_layers=4,5 "
    "--wallclock 600 --set train.iterations=100000 --set threads=1 "
    "--model-bytes 1000000 --schemes record,turbo-rd":
        "the 40-minute CPU benchmark whose table the README quotes",
    "torchrun --standalone --nproc_per_node=8 -m pgolf frontier --preset seed "
    "--data data/fineweb10B_sp1024 --out runs/frontier_16mb --wallclock 600 --schemes record,turbo-rd "
    "--size num_layers=9,value_embed_layers=7,8 --size num_layers=11,value_embed_layers=9,10 "
    "--size num_layers=13 --size model_dim=640,num_heads=10,num_kv_heads=5,num_layers=13 "
    "--size model_dim=704,num_heads=11,num_kv_heads=11,num_layers=13":
        "five seed-size models on 8xH100",
}

#: What the README's placeholders stand for in the scratch folder.
PLACEHOLDERS = {
    "DATA_DIR": "data/default",
    "DIR": "data/default",
    "FILE": "data/default/tokenizer.model",
    "RUN_DIR": "runs/tiny",
}

#: The challenge's environment variables that keep every training run tiny and short.
TINY_ENV = {
    "ITERATIONS": "3", "MAX_WALLCLOCK_SECONDS": "60", "WARMUP_STEPS": "0", "WARMDOWN_ITERS": "1",
    "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "ROPE_DIMS": "8", "VE_LAYERS": "1", "XSA_LAST_N": "1",
    "TRAIN_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "2048", "VAL_LOSS_EVERY": "0",
}

_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _logical_lines(block: str) -> list[str]:
    """The block's lines with backslash continuations joined and comments removed."""
    out, cur = [], ""
    for raw in block.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            cur += line[:-1].strip() + " "
            continue
        cur = _uncomment(cur + line.strip())
        if cur:
            out.append(cur)
        cur = ""
    return out


def _uncomment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` after whitespace, outside quotes)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def readme_commands(text: str | None = None) -> list[str]:
    """Every pgolf command line in the README's ```bash blocks, in order, as written."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [line for b in blocks for line in _logical_lines(b) if _is_pgolf(line)]


def _is_pgolf(line: str) -> bool:
    words = line.split()
    return "pgolf" in words[:6] and words[0] in ("pgolf", "torchrun", "taskset")


def _expand(line: str, previous: dict[str, list[str]]) -> list[str]:
    """argv for ``pgolf.cli.main``: optional groups dropped, ``...`` = the previous command."""
    words = shlex.split(re.sub(r"\s*\[[^\[\]]*\]", "", line))
    args = words[1:]
    if args[1:2] == ["..."]:
        args = previous[args[0]] + args[2:]
    previous[args[0]] = args
    return [PLACEHOLDERS.get(w, w) for w in args]


def unknown_placeholders(line: str) -> list[str]:
    words = shlex.split(re.sub(r"\s*\[[^\[\]]*\]", "", line))
    return [w for w in words if _PLACEHOLDER.match(w) and w not in PLACEHOLDERS]


def runnable(commands: list[str]) -> list[str]:
    return [c for c in commands if c not in EXCLUDED]


def test_every_readme_command_is_run_or_excluded_with_a_reason():
    commands = readme_commands()
    assert len(commands) >= 30
    stale = [k for k in EXCLUDED if k not in commands]
    assert not stale, f"EXCLUDED names commands the README no longer has: {stale}"
    for c in runnable(commands):
        assert c.startswith("pgolf "), f"not runnable in process, and not excluded: {c}"
        assert not unknown_placeholders(c), f"{c}: placeholder {unknown_placeholders(c)} has no value"


def test_the_guard_fails_on_an_unknown_command_and_placeholder():
    text = "```bash\npgolf train --data SOMEWHERE   # note\ntorchrun -m pgolf eval runs/x\n```\n"
    commands = readme_commands(text)
    assert commands == ["pgolf train --data SOMEWHERE", "torchrun -m pgolf eval runs/x"]
    assert unknown_placeholders(commands[0]) == ["SOMEWHERE"]
    assert not runnable(commands)[1].startswith("pgolf ")
    assert _expand("pgolf frontier ... --dry-run", {"frontier": ["frontier", "--x"]}) == ["frontier", "--x", "--dry-run"]


def _fixtures(root: Path) -> None:
    """The example inputs the README names literally: docs.jsonl, notes/, data/other."""
    lines = [json.dumps({"text": f"Document {i}: the river {i % 7} runs past mill number {i} at dawn. " * 6})
             for i in range(160)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    notes = root / "notes"
    notes.mkdir()
    for i in range(20):
        (notes / f"note{i}.txt").write_text(f"Note {i}. The baker counts {i * 3} loaves before the market opens.\n" * 5)


def _run(argv: list[str]) -> int:
    from pgolf.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return rc or 0


#: What the commands above leave in the scratch folder (each checked after the run).
PRODUCTS = ("runs/demo/report.md", "data/default/build.json", "data/mine/build.json", "runs/tiny/model.pt",
            "runs/tiny/artifact.pgz", "runs/tiny/rec/artifact.pgz", "runs/tiny/rd/artifact.pgz",
            "runs/tiny/eval.json", "runs/verify-tiny/eval.json", "nll.npy", "runs/tiny/seed_2/eval.json")


@pytest.mark.slow  # about 85 s on 2 cores: the default suite's 5-minute budget (-m slow runs it)
def test_readme_commands_run_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("zstandard")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PGOLF_FAULT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in TINY_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    _fixtures(tmp_path)
    previous: dict[str, list[str]] = {}
    for line in readme_commands():
        argv = _expand(line[line.index("pgolf "):], previous)
        if line in EXCLUDED:
            continue
        rc = _run(argv)
        out = capsys.readouterr()
        assert rc == 0, f"{line}\n -> exit {rc}\n{out.out[-1500:]}\n{out.err[-1500:]}"
        if argv[:3] == ["data", "build", "--default"]:
            (tmp_path / "data" / "other").symlink_to(tmp_path / "data" / "default")
    missing = [p for p in PRODUCTS if not (tmp_path / p).is_file()]
    assert not missing, f"the README's commands exited 0 but did not write {missing}"

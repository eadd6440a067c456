"""The train stage's log files: ``train.log`` (text) and ``metrics.jsonl`` (one JSON a line).

Only rank 0 writes. ``train.log`` opens with a header carrying everything needed to
reproduce the run from the log alone: Python/torch/numpy versions, the git commit of
the package (with a ``-dirty`` mark), the hardware, the parameter count and the full
config. Lines are also echoed to stdout (through tqdm's writer when a bar is shown).

    log = RunLog(run_dir, enabled=env.is_main)
    log.header(cfg, n_params, env)
    log.line("step 10 ...");  log.metrics({"step": 10, "train_loss": 4.1})
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def git_commit() -> str:
    """``<sha>[-dirty]`` of the repository whose top level holds the package (a source checkout),
    or "unknown" (an installed package, or a train_gpt.py unpacked inside some other repository)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        lines = head.stdout.splitlines()
        if head.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return lines[1] + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device) -> str:
    """One line describing CPU cores and the accelerator in use."""
    import torch

    cpu = f"{platform.machine()} {platform.processor() or ''}".strip()
    parts = [f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"]
    if getattr(device, "type", "cpu") == "cuda":
        parts.append(f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}")
    return "; ".join(parts)


class RunLog:
    """Appends to RUN_DIR/train.log and RUN_DIR/metrics.jsonl (rank 0 only)."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, echo: bool = True):
        self.dir = Path(run_dir)
        self.enabled, self.echo = enabled, echo
        self.bar = None  # a tqdm bar; lines go through its writer when set
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"[{stamp}] {text}\n")
        if self.echo:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, flush=True)

    def metrics(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def header(self, cfg, n_params: int, env, extra: dict | None = None) -> None:
        import numpy
        import torch

        self.line(f"pgolf train: preset {cfg.preset}")
        self.line(f"versions: python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}")
        self.line(f"git commit: {git_commit()}")
        self.line(f"hardware: {hardware(env.device)}; world size {env.world} ({env.backend or 'single process'})")
        self.line(f"parameters: {n_params:,}")
        for k, v in (extra or {}).items():
            self.line(f"{k}: {v}")
        self.line("config: " + json.dumps(cfg.to_dict(), sort_keys=True))

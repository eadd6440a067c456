"""TensorBoard event logs beside metrics.jsonl: the scalars a run already logs, as events.

Each metrics record (one line of ``RUN/metrics.jsonl``, written by the trainer every
``log_every`` steps) becomes one scalar per numeric field (``train_loss``, ``lr_scale``,
``tokens_per_s``, ``ms_per_step``, ``elapsed_s``, ``val_loss``/``val_bpb``, ``mfu``) at
its ``step``. The events go to ``RUN/tb/`` (a run of several seeds: each
``seed_<s>/tb/``). :class:`MetricsFollower` is what ``pgolf train --tensorboard`` and
``pgolf run --tensorboard`` use: a thread in the command's process that mirrors the lines
as training appends them and, at the end, the last ones. The trainer itself knows nothing
of TensorBoard, so neither does a generated train_gpt.py. :func:`write_events` converts a
finished run after the fact. It needs the optional ``tensorboard`` package
(``pip install -e ".[tb]"``); :func:`require` says so in one line. Run::

    python -m pgolf.train.tensorboard runs/tiny        # -> runs/tiny/tb/, then: tensorboard --logdir runs
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

from pgolf.errors import PgolfError

METRICS = "metrics.jsonl"
EVENTS_DIR = "tb"
#: Seconds between two looks at metrics.jsonl while training.
POLL_S = 1.0


def require() -> None:
    """PgolfError (one line) unless TensorBoard's writer can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise PgolfError(f"--tensorboard needs the tensorboard package ({e}); "
                         'install it with: pip install tensorboard  (or pip install -e ".[tb]")') from None


def scalars(record: dict) -> dict[str, float]:
    """The numeric fields of one metrics record, ``step`` aside."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class _Mirror:
    """Mirrors one metrics.jsonl into the ``tb/`` folder beside it, complete lines only."""

    def __init__(self, metrics: Path):
        from torch.utils.tensorboard import SummaryWriter

        events = metrics.parent / EVENTS_DIR
        shutil.rmtree(events, ignore_errors=True)  # rebuilt from the whole file: a resumed run has no duplicates
        self.metrics, self.offset = metrics, 0
        self.writer = SummaryWriter(log_dir=str(events))

    def poll(self) -> int:
        """Write the complete lines appended since the last poll; returns how many."""
        with open(self.metrics, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        n = 0
        for raw in data.split(b"\n")[:-1]:  # the last piece is "" or a line still being written
            self.offset += len(raw) + 1
            try:
                rec = json.loads(raw)
            except ValueError:
                continue  # not a metrics record: nothing to plot
            if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                for tag, value in scalars(rec).items():
                    self.writer.add_scalar(tag, value, rec["step"])
                n += 1
        self.writer.flush()
        return n

    def close(self) -> None:
        self.writer.close()


class MetricsFollower:
    """While the ``with`` block runs, mirror every ``metrics.jsonl`` under ``root`` into
    TensorBoard events (checked every :data:`POLL_S` seconds, and once more at the end)."""

    def __init__(self, root: str | Path, poll_s: float = POLL_S):
        require()
        self.root, self.poll_s = Path(root), poll_s
        self.mirrors: dict[Path, _Mirror] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgolf-tensorboard", daemon=True)

    def poll(self) -> int:
        for m in sorted(self.root.glob(f"**/{METRICS}")):
            if m not in self.mirrors:
                self.mirrors[m] = _Mirror(m)
        return sum(mirror.poll() for mirror in self.mirrors.values())

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def __enter__(self) -> MetricsFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        for mirror in self.mirrors.values():
            mirror.close()


def follow(root: str | Path, wanted: bool):
    """A :class:`MetricsFollower` of ``root`` when ``wanted`` and this is rank 0 (``RANK``),
    else a context that does nothing."""
    import contextlib
    import os

    if not wanted or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return MetricsFollower(root)


def write_events(run_dir: str | Path) -> int:
    """Convert every metrics.jsonl under ``run_dir`` to events now; returns the records written."""
    run_dir = Path(run_dir)
    if not any(run_dir.glob(f"**/{METRICS}")):
        raise PgolfError(f"{run_dir}: no {METRICS} here (not a run folder, or nothing logged yet)")
    follower = MetricsFollower(run_dir)
    n = follower.poll()
    for mirror in follower.mirrors.values():
        mirror.close()
    return n


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m pgolf.train.tensorboard RUN_DIR", file=sys.stderr)
        return 2
    try:
        n = write_events(args[0])
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return 1
    print(f"{n} metrics records -> TensorBoard events under {args[0]} (tensorboard --logdir {args[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

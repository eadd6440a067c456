"""Progress reporting for long data jobs: a tqdm bar on a terminal, log lines otherwise.

``progress(total, desc, unit)`` returns an object with ``update(n)`` and ``close()`` (also a
context manager). On a terminal it is a tqdm bar on stderr; when stderr is not a
terminal (CI, logs, pipes) it prints one line every ``every_s`` seconds and a final
line, so logs stay short. ``enabled=False`` silences it (used by tests and library calls).

    with progress(total=n_docs, desc="encode", unit="doc") as bar:
        for doc in docs:
            ...
            bar.update(1)
"""

from __future__ import annotations

import sys
import time


class _LogProgress:
    """Periodic one-line progress messages on stderr."""

    def __init__(self, total: int | None, desc: str, unit: str, every_s: float) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        of = f"/{self.total:,}" if self.total is not None else ""
        print(f"{self.desc}: {self.n:,}{of} {self.unit} ({now - self.start:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._print(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True, every_s: float = 10.0):
    """A progress reporter suited to where stderr goes (see the module docstring)."""
    if not enabled:
        return _NoProgress()
    if sys.stderr.isatty():
        from tqdm import tqdm

        scale = unit == "B"
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000, leave=False)
    return _LogProgress(total, desc, unit, every_s)

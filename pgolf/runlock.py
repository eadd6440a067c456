"""One writer per run folder: an advisory lock file ``RUN_DIR/.pgolf.lock``.

Every command that writes into a run folder (``train``, ``train --resume``, ``quantize``,
``eval`` writing ``eval.json``, ``run``, ``demo``, ``submit`` and ``frontier`` into their
out folders) holds :func:`run_lock` while it works. The lock is ``fcntl.flock`` on the
file (the kernel drops it when the holder dies, also on SIGKILL); the file says who holds
it (pid, command, start time). A second writer gets one line naming the holder
(:class:`LockedError`, exit 1). A file left by a dead holder is taken over with one
stderr line. Under torchrun only rank 0 takes it. The lock file is removed on release,
also when the command raises; a folder that the lock itself created and that stayed
empty is removed too.

    with run_lock("runs/tiny", "pgolf train"):
        ...
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from pgolf.errors import PgolfError

LOCK_NAME = ".pgolf.lock"


class LockedError(PgolfError):
    """Another live process holds the run folder."""


def command_line() -> str:
    """This process's command as a user typed it (``pgolf train --out runs/x``)."""
    args = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("pgolf", "__main__.py")) else None
    return "pgolf " + " ".join(args) if args is not None else " ".join(sys.argv) or "python"


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(info: dict) -> str:
    return f"pid {info.get('pid', '?')} ({info.get('command', 'unknown command')}, since {info.get('since', '?')})"


def _acquire(path: Path, command: str) -> int:
    """Open and flock ``path`` (retrying when a releasing holder unlinked it meanwhile); the fd."""
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            info = _holder(path)
            raise LockedError(f"{path.parent}: in use by {describe(info)}; wait for it to finish or stop it "
                              f"(one writer per run folder)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file we locked was unlinked by its releasing holder: lock the new one
    raise LockedError(f"{path}: could not take the lock (it keeps changing)")


@contextlib.contextmanager
def run_lock(folder, command: str | None = None) -> Iterator[Path | None]:
    """Hold the run folder ``folder`` for this process (see the module docstring)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd = _acquire(path, command or command_line())
    except BaseException:
        if created:
            _remove_empty(folder)
        raise
    old = _holder(path)
    if old and old.get("pid") != os.getpid():
        state = "no longer running" if not _alive(old.get("pid")) else "no longer holding it"
        print(f"pgolf: taking over the stale lock of {folder} from {describe(old)}: {state}", file=sys.stderr)
    info = {"pid": os.getpid(), "command": command or command_line(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
        if created:
            _remove_empty(folder)


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty

"""Fuzz the artifact loader with hostile artifacts for as long as asked.

Runs the generator of :mod:`pgolf.audit.fuzz` (the same one the default test suite runs
for 500 cases): seeded bit flips, truncations, resealed payloads with valid checksums,
hostile header values and targeted header edits, poisoned segments and decompression
bombs, each decoded in a forked child under a 1 GiB address-space limit and a 5 s alarm.
Prints the cases run, the failures (anything but a one-line ``ArtifactError``, a crash,
the memory limit or the alarm), the outcome counts per operation and the largest child
RSS. Exits 1 if any case failed. Linux/macOS. Run::

    python benchmarks/fuzz_artifact.py --seconds 600 --seed 1
    python benchmarks/fuzz_artifact.py --cases 3000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="run for this long (default 60)")
    p.add_argument("--cases", type=int, default=0, help="stop after this many cases instead (0: use --seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    a = p.parse_args(argv)

    from pgolf.audit.fuzz import run_fuzz

    s = run_fuzz(a.seed, cases=a.cases or None, seconds=None if a.cases else a.seconds,
                 log=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(s, indent=2))
        return 1 if s["failures"] else 0
    print(f"# artifact fuzz, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{s['cases']} cases in {s['seconds']} s (seed {s['seed']}): {len(s['failures'])} failures; "
          f"largest child RSS {s['max_rss_mib']} MiB (limit {s['limit_mib']} MiB address space)")
    print(f"{'operation':<26}{'rejected':>10}{'accepted':>10}{'FAILED':>8}")
    for op, counts in sorted(s["by_op"].items()):
        print(f"{op:<26}{counts.get('rejected', 0):>10}{counts.get('accepted', 0):>10}{counts.get('FAILED', 0):>8}")
    for f in s["failures"][:100]:
        print(f"FAILED case {f['case']} ({f['op']}): {f['outcome']}")
    return 1 if s["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

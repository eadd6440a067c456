"""Hostile-artifact fuzzer: mutate valid artifacts as an attacker would and decode each one.

Builds a few valid artifacts of a tiny model (every storage scheme and codec), then
generates seeded cases: bit flips, truncations and appended bytes; payloads resealed with
valid checksums after raw edits; header edits (hostile values anywhere in the JSON, huge
rotation dimensions, shared segments, bad bits, deep nesting, 4,300-digit integers,
NaN/Infinity, config sections that are not objects); poisoned segments (NaN/inf norms and
codebooks, unsorted codebooks); decompression bombs (LZMA and zstd with a small declared
length). With ``--scheme`` it fuzzes one scheme's artifact (``all``: each of
:data:`SCHEMES`, record and turbo-rd included) and then runs every case of the systematic
classes of :mod:`pgolf.audit.fuzz_classes` (bombs, non-finite values, config fields, path-like
strings). Each case is decoded in a forked child under an address-space limit
(``RLIMIT_AS``, 1 GiB) and an alarm (5 s); a case fails if the child raises anything but
:class:`ArtifactError`, runs out of memory or time, or dies, if an accepted artifact has
NaN/inf weights or a config outside the documented caps
(:func:`pgolf.audit.fuzz_classes.config_problem`), or if a bomb is accepted or inflates the
child by more than :data:`BOMB_SLACK_KIB` before it is rejected. It needs only
``pgolf.quant.format.artifact.build_artifact``/``decode`` and writes the container bytes itself, so
it runs against older pgolf versions too. Linux/macOS (fork). Run::

    python -m pgolf.audit.fuzz --cases 500 --seed 0      # or: --seconds 600
    python -m pgolf.audit.fuzz --scheme all              # every scheme: random + systematic cases
    python -m pgolf.audit.fuzz --decode a.pgz b.pgz      # outcome and peak RSS of given files
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time

from pgolf.audit.surgery import (  # noqa: F401  (the cases and the tests use them as fuzz.X)
    _PRELUDE, _PRE, _CODEC_NONE, _CODEC_LZMA, _CODEC_ZSTD, SCHEMES, BOMB_BYTES, compress, decompress, seal,
    reseal, unseal, split_raw, join_raw, with_header, dumps_with, tiny_config, base_artifact, base_artifacts,
    _has_zstd, bomb,
)

LIMIT_BYTES = 1 << 30
TIMEOUT_S = 5
#: A bomb case fails if its child's peak RSS exceeds the valid artifacts' by more (KiB).
BOMB_SLACK_KIB = 64 << 10
_HOSTILE = ["0", "-1", "-9223372036854775808", "18446744073709551616", "1" + "0" * 4300, "1e308", "-0.0",
            "NaN", "Infinity", "-Infinity", "true", "null", '""', '"x"', "[]", "{}", "[16384]", "[1, 65536]",
            "[" * 100000 + "]" * 100000, "[-5, 3]", "2.5", "65536", "16384"]


def _append_segment(body: bytes, data: bytes) -> tuple[bytes, list]:
    return body + data, [len(body), len(data)]


# ------------------------------------------------------------------------------ mutators


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(node, path, value):
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


class Mutator:
    """Seeded case generator over a list of valid artifacts (and optional bomb payloads)."""

    def __init__(self, bases: list[bytes], seed: int, bombs: list[bytes] = ()):
        self.bases, self.bombs, self.rng = bases, list(bombs), random.Random(seed)
        self._grouped: dict[int, list] = {}
        self.ops = [self.flip, self.truncate, self.raw_edit, self.header_value, self.header_value,
                    self.header_targeted, self.header_targeted, self.poison, self.codec_games]

    def case(self) -> tuple[str, bytes]:
        while True:
            op = self.rng.choice(self.ops)
            try:
                return op(self.rng.choice(self.bases))
            except (IndexError, KeyError, TypeError, ValueError):  # a mutation that does not fit this header
                continue

    def flip(self, data):
        b = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
        return "flip", bytes(b)

    def truncate(self, data):
        r = self.rng
        if r.random() < 0.7:
            return "truncate", data[: r.randrange(len(data))]
        return "append", data + bytes(r.randrange(256) for _ in range(r.randint(1, 64)))

    def raw_edit(self, data):
        r = self.rng
        codec, raw = unseal(data)
        b = bytearray(raw)
        how = r.choice(["flip", "cut", "insert", "hlen"])
        if how == "flip":
            for _ in range(r.randint(1, 16)):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        elif how == "cut":
            b = b[: r.randrange(len(b))]
        elif how == "insert":
            i = r.randrange(len(b))
            b[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 32)))
        else:
            b[:4] = struct.pack("<I", r.choice([0, 1, len(b), 2**32 - 1, r.randrange(2**32)]))
        stream = compress(bytes(b), codec)
        raw_len = len(b) if r.random() < 0.8 else r.choice([0, len(b) + 1, 2**40, r.randrange(2**63)])
        return "raw-" + how, seal(stream, codec, raw_len)

    def header_value(self, data):
        """Replace a random node of the header JSON by a hostile value (raw JSON text)."""
        r = self.rng

        def edit(header, body):
            path = r.choice(list(_paths(header))[1:])
            _set(header, path, "\x00HOSTILE")
            return dumps_with(header, {"\x00HOSTILE": r.choice(_HOSTILE)}), body

        return "header-value", with_header(data, edit)

    def header_targeted(self, data, how: str | None = None):
        r = self.rng
        how = how or r.choice(["big-d", "shared-segment", "many-d", "bits", "codebook-bits", "kind", "drop", "duplicate",
                        "section", "layers", "dims", "negative-shape", "alias"])

        def edit(header, body):
            ts = header["tensors"]
            quant = [t for t in ts if t.get("kind") in ("turbo", "turbo-prod", "int")]
            t = r.choice(quant or ts)
            if how == "big-d":
                t["shape"] = [1, r.choice([4097, 16384, 65536])]
            elif how == "shared-segment":  # 200 entries decoding one large zero segment each
                body, norms = _append_segment(body, bytes(2 << 15))
                body, idx = _append_segment(body, bytes(1 << 23))  # 2**15 rows x 1024 at 2 bits
                big = {"kind": "turbo", "bits": 2, "shape": [1 << 15, 1024], "dtype": "float32",
                       "segments": {"norms": norms, "idx": idx}, "role": "attn"}
                body, cb = _append_segment(body, struct.pack("<4f", -0.05, -0.01, 0.01, 0.05))
                header["codebooks"].append({"bits": 2, "d": 1024, "kind": "beta", "segment": cb})
                big["codebook"] = len(header["codebooks"]) - 1
                ts.extend(dict(big, name=f"big{i}") for i in range(200))
            elif how == "many-d":  # 40 small entries, each with its own rotation dimension
                for i in range(40):
                    d = 960 + 2 * i
                    body, cb = _append_segment(body, struct.pack("<4f", -1.5, -0.5, 0.5, 1.5))
                    header["codebooks"].append({"bits": 2, "d": d, "kind": "beta", "segment": cb})
                    body, norms = _append_segment(body, bytes(2))
                    body, idx = _append_segment(body, bytes((2 * d + 7) // 8))
                    ts.append({"name": f"d{d}", "kind": "turbo", "bits": 2, "shape": [1, d], "dtype": "float32",
                               "role": "attn", "codebook": len(header["codebooks"]) - 1,
                               "segments": {"norms": norms, "idx": idx}})
            elif how == "bits":
                t["bits"] = r.choice([0, 9, 16, 64, -1, 2**31])
            elif how == "codebook-bits" and header.get("codebooks"):
                r.choice(header["codebooks"])["bits"] = r.choice([1, 2, 3, 4, 9])
            elif how == "kind":
                t["kind"] = r.choice(["turbo", "turbo-prod", "int", "fp16", "fp32", "raw", "alias", "nope"])
            elif how == "drop":
                ts.remove(t)
            elif how == "duplicate":
                ts.append(dict(t))
            elif how == "section":
                header["config"][r.choice(["model", "quant", "train", "eval"])] = r.choice([[], 3, "x", None])
            elif how == "layers":
                header["config"]["model"]["num_layers"] = r.choice([0, 10**6, 4096])
            elif how == "dims":
                header["config"]["model"][r.choice(["model_dim", "num_heads", "vocab_size"])] = r.choice([0, -8, 2**40])
            elif how == "negative-shape":
                t["shape"] = [-t["shape"][0]] + t["shape"][1:]
            elif how == "alias":
                first = ts[0]["name"]
                t.clear()
                t.update(name=first, kind="alias", alias_of=r.choice([first, "nope", 3]))
            return dumps_with(header, {}), body

        return "header-" + how, with_header(data, edit)

    def poison(self, data):
        """Write NaN/inf into a norms/scales/codebook/data segment, or reverse a codebook."""
        r = self.rng
        codec, raw = unseal(data)
        header, body = split_raw(raw)
        if "groups" in header:  # segments inside compressed groups: the systematic class's cases
            from pgolf.audit.fuzz_classes import nonfinite_cases

            if id(data) not in self._grouped:
                self._grouped[id(data)] = list(nonfinite_cases(data))
            return r.choice(self._grouped[id(data)])
        refs = [(k, s) for e in header["tensors"] for k, s in e.get("segments", {}).items()
                if k in ("norms", "rnorms", "scales", "data")]
        refs += [("codebook", cb["segment"]) for cb in header.get("codebooks", [])]
        key, (off, n) = r.choice(refs)
        b = bytearray(body)
        if key == "codebook" and r.random() < 0.5:
            levels = struct.unpack(f"<{n // 4}f", bytes(b[off : off + n]))
            b[off : off + n] = struct.pack(f"<{n // 4}f", *reversed(levels))
            how = "unsorted-codebook"
        else:
            bad = r.choice([b"\x00\x7e", b"\x00\x7c", b"\x00\xfc"])  # fp16 NaN, +inf, -inf
            if key in ("codebook", "data") and n % 4 == 0 and r.random() < 0.5:
                bad = r.choice([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f"])  # fp32 NaN, inf
            pos = off + r.randrange(max(n // len(bad), 1)) * len(bad)
            b[pos : pos + len(bad)] = bad
            how = "nonfinite-" + key
        hlen = struct.unpack_from("<I", raw)[0]
        return how, reseal(raw[: 4 + hlen] + bytes(b), codec)

    def codec_games(self, data):
        r = self.rng
        codec, raw = unseal(data)
        how = r.choice(["bomb", "swap", "version", "codec-id"])
        if how == "bomb" and self.bombs:
            return "bomb", r.choice(self.bombs)
        if how == "swap":
            other = r.choice([c for c in (_CODEC_NONE, _CODEC_LZMA, _CODEC_ZSTD) if c != codec])
            return "codec-swap", seal(data[_PRE:], other, len(raw))
        if how == "version":
            return "version", seal(data[_PRE:], codec, len(raw), version=r.choice([0, 2, 65535]))
        return "codec-id", seal(data[_PRE:], r.choice([3, 7, 255]), len(raw))


# ------------------------------------------------------------------------------ harness


def decode_case(data: bytes, detail: bool = False) -> str:
    """Decode ``data`` here: "accepted", "rejected" (ArtifactError; with ``detail``,
    "rejected: <its message>") or what went wrong ("Type: message", or accepted with
    non-finite weights or an unacceptable config)."""
    import warnings

    from pgolf.errors import ArtifactError
    from pgolf.quant.format.artifact import decode
    from pgolf.audit.fuzz_classes import config_problem

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an overflow in a cast is a finding too
            sd, cfg = decode(data)
        if any(t.is_floating_point() and not bool(t.isfinite().all()) for t in sd.values()):
            return "accepted with NaN/inf weights"
        problem = config_problem(cfg)
        return f"accepted with config {problem}" if problem else "accepted"
    except ArtifactError as e:
        if "\n" in str(e):
            return "ArtifactError with several lines"
        return f"rejected: {e}" if detail else "rejected"
    except BaseException as e:  # noqa: B902  (the point: anything else is a finding)
        return f"{type(e).__name__}: {str(e)[:200]}"


def run_isolated(data: bytes, limit_bytes: int = LIMIT_BYTES, timeout_s: int = TIMEOUT_S,
                 detail: bool = False) -> tuple[str, int]:
    """:func:`decode_case` in a forked child under ``RLIMIT_AS`` and an alarm; (outcome, max RSS KiB)."""
    import resource

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
            import signal

            signal.alarm(timeout_s)  # default action: the child dies, the parent sees SIGALRM
            outcome = decode_case(data, detail)
            os.write(wfd, outcome.encode("utf-8", "replace")[:400])
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    _, status, usage = os.wait4(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        import signal

        sig = os.WTERMSIG(status)
        text = f"timeout after {timeout_s} s" if sig == signal.SIGALRM else f"killed by signal {sig}"
    return text or "no outcome", usage.ru_maxrss


def run_fuzz(seed: int = 0, cases: int | None = 500, seconds: float | None = None, bombs: bool = True,
             limit_bytes: int = LIMIT_BYTES, timeout_s: int = TIMEOUT_S, log=None, scheme: str | None = None,
             classes=()) -> dict:
    """Run the seeded cases, then every case of the systematic ``classes``
    (:data:`pgolf.audit.fuzz_classes.CLASSES`); a summary with counts per operation, the
    slowest case and every failure. ``scheme``: fuzz that scheme's artifact only (default:
    turbo, turbo-prod, int6 and int8)."""
    import torch

    from pgolf.audit.fuzz_classes import CLASSES

    torch.set_num_threads(1)  # fork-safe: no OpenMP pool in the parent
    bases = [base_artifact(scheme)] if scheme else base_artifacts()
    bomb_list = []
    if bombs and cases != 0:
        lzma_base = next((b for b in bases if unseal(b)[0] == _CODEC_LZMA), bases[0])
        zstd_base = next((b for b in bases if unseal(b)[0] == _CODEC_ZSTD), None)
        bomb_list = [bomb(lzma_base, _CODEC_LZMA)] + ([bomb(zstd_base or bases[0], _CODEC_ZSTD)] if _has_zstd() else [])
    mut = Mutator(bases, seed, bomb_list)
    t0, n, outcomes, failures, max_rss, slowest = time.time(), 0, {}, [], 0, (0.0, "")

    def record(name: str, data: bytes, cls: str = "random") -> None:
        nonlocal n, max_rss, slowest
        t = time.time()
        outcome, rss = run_isolated(data, limit_bytes, timeout_s)
        slowest = max(slowest, (time.time() - t, name))
        max_rss = max(max_rss, rss)
        if cls == "bombs" and outcome == "accepted":  # inflating past what the tensors need is an attack
            outcome = "bomb accepted"
        elif cls == "bombs" and rss - valid_rss > BOMB_SLACK_KIB:  # rejected, but only after inflating
            outcome = f"bomb rejected after {(rss - valid_rss) >> 10} MiB more than the valid artifact"
        key = outcome if outcome in ("accepted", "rejected") else "FAILED"
        outcomes.setdefault(name, {}).setdefault(key, 0)
        outcomes[name][key] += 1
        if key == "FAILED":
            failures.append({"case": n, "class": cls, "op": name, "outcome": outcome})
        n += 1
        if log and n % 100 == 0:
            log(f"fuzz{' ' + scheme if scheme else ''}: {n} cases, {len(failures)} failures, {time.time() - t0:.0f} s")

    valid_rss = max(run_isolated(b, limit_bytes, timeout_s)[1] for b in bases)
    while (cases is None or n < cases) and (seconds is None or time.time() - t0 < seconds):
        record(*mut.case())
    by_class = {"random": n}
    for cls in classes:
        before = n
        for base in bases:
            for name, data in CLASSES[cls](base):
                record(name, data, cls)
        by_class[cls] = n - before
    return {"seed": seed, "scheme": scheme, "cases": n, "by_class": by_class, "seconds": round(time.time() - t0, 2),
            "failures": failures, "max_rss_mib": round(max_rss / 1024, 1), "limit_mib": limit_bytes >> 20,
            "slowest_case": {"op": slowest[1], "seconds": round(slowest[0], 2)}, "by_op": outcomes}


def decode_files_isolated(paths: list[str], detail: bool = False) -> list[tuple[str, int]]:
    """:func:`run_isolated` for each file, from a fresh interpreter (so the caller never forks);
    ``detail``: a rejection carries the loader's message."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pgolf.audit.fuzz", *(["--detail"] if detail else []), "--decode", *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"fuzz --decode failed: {proc.stderr[-2000:]}")
    return [tuple(r) for r in json.loads(proc.stdout)]


def print_summary(s: dict) -> None:
    """The summary of one :func:`run_fuzz` as text: counts, peak RSS, slowest case, failures."""
    where = f"scheme {s['scheme']}: " if s["scheme"] else ""
    failed = {}
    for f in s["failures"]:
        failed[f.get("class", "random")] = failed.get(f.get("class", "random"), 0) + 1
    counts = ", ".join(f"{k} {v}" + (f" ({failed[k]} failed)" if k in failed else "") for k, v in s["by_class"].items())
    print(f"{where}{s['cases']} cases ({counts}) in {s['seconds']} s (seed {s['seed']}): {len(s['failures'])} "
          f"failures; max child RSS {s['max_rss_mib']} MiB under a {s['limit_mib']} MiB address-space limit; "
          f"slowest case {s['slowest_case']['seconds']} s ({s['slowest_case']['op']})", flush=True)
    for f in s["failures"][:50]:
        print(f"  case {f['case']} {f['op']}: {f['outcome']}")


def main(argv=None) -> int:
    from pgolf.audit.fuzz_classes import CLASSES

    p = argparse.ArgumentParser(prog="python -m pgolf.audit.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=500, help="number of random cases (0: none, or until --seconds)")
    p.add_argument("--seconds", type=float, help="stop the random cases after this many seconds")
    p.add_argument("--no-bombs", action="store_true", help="skip the random decompression-bomb cases (faster start)")
    p.add_argument("--scheme", choices=[*SCHEMES, "all"],
                   help="fuzz this scheme's artifact (all: each in turn), random cases then every systematic class")
    p.add_argument("--classes", default=",".join(CLASSES),
                   help=f"systematic classes with --scheme (comma-separated; default: {','.join(CLASSES)}; 'none')")
    p.add_argument("--json", action="store_true", help="print the summary (a list with --scheme all) as JSON")
    p.add_argument("--decode", nargs="+", metavar="FILE",
                   help="instead: decode each FILE isolated, print [[outcome, max RSS KiB], ...] as JSON")
    p.add_argument("--detail", action="store_true", help="with --decode: a rejection carries the loader's message")
    a = p.parse_args(argv)
    if a.decode:
        import torch

        from pgolf.quant.format import artifact  # noqa: F401  (imported once, before the forks)

        torch.set_num_threads(1)
        print(json.dumps([run_isolated(open(f, "rb").read(), detail=a.detail) for f in a.decode]))
        return 0
    classes = [c for c in a.classes.split(",") if c and c != "none"] if a.scheme else []
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        p.error(f"unknown class {unknown[0]!r}; choose from {', '.join(CLASSES)}")
    schemes = list(SCHEMES) if a.scheme == "all" else [a.scheme]
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    runs = []
    for scheme in schemes:
        s = run_fuzz(a.seed, None if a.seconds and not a.cases else a.cases, a.seconds, not a.no_bombs, log=log,
                     scheme=scheme, classes=classes)
        runs.append(s)
        if not a.json:
            print_summary(s)
    if a.json:
        print(json.dumps(runs if a.scheme == "all" else runs[0]))
    return 1 if any(s["failures"] for s in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

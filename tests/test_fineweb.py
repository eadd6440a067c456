"""`pgolf data fineweb` end to end against a local stand-in for the Hugging Face Hub.

A ``http.server`` on 127.0.0.1 serves the challenge's layout under
``/datasets/<repo>/resolve/<revision>/<path>`` with the headers huggingface_hub reads
(X-Repo-Commit, ETag, Content-Length) and HTTP Range support. One test cuts a shard
download short and takes the server down, then checks that the rerun resumes from the
cut (a Range request) and ends with byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data.fineweb import plan_files
from pgolf.data.shards import HEADER_BYTES, MAGIC
from pgolf.errors import PgolfError

REPO = "someone/parameter-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = "datasets"
DS = f"{ROOT}/datasets/fineweb10B_sp1024"


def _shard(n: int, seed: int) -> bytes:
    header = np.zeros(256, dtype="<i4")
    header[:3] = MAGIC, 1, n
    tokens = np.random.default_rng(seed).integers(0, 1024, n).astype("<u2")
    tokens[0] = 1
    return header.tobytes() + tokens.tobytes()


def _files() -> dict[str, bytes]:
    manifest = {
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                      "stats": {"files_val": 1, "files_train": 3}}],
        "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                        "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}],
    }
    return {
        f"{ROOT}/manifest.json": json.dumps(manifest).encode(),
        f"{ROOT}/tokenizers/fineweb_1024_bpe.model": b"model-bytes " * 100,
        f"{ROOT}/tokenizers/fineweb_1024_bpe.vocab": b"<pad>\t0\n<s>\t0\n",
        f"{DS}/fineweb_val_000000.bin": _shard(150_000, 0),
        f"{DS}/fineweb_train_000000.bin": _shard(40_000, 1),
        f"{DS}/fineweb_train_000001.bin": _shard(30_000, 2),
        f"{DS}/fineweb_train_000002.bin": _shard(20_000, 3),
    }


def _etag(path: str, data: bytes) -> str:
    if path.endswith((".bin", ".model")):  # LFS files: sha256 of the content
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id


class Hub:
    """State of the fake Hub: files, a request log and failure switches."""

    def __init__(self) -> None:
        self.files = _files()
        self.requests: list[tuple[str, str, str | None]] = []
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before cutting the first GET
        self.down = False  # every GET answers 503
        self.corrupt: set[str] = set()  # paths served with one byte flipped


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        hub: Hub = self.server.hub
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        hub.requests.append((self.command, url_path, self.headers.get("Range")))
        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", url_path)
        if not m or m[1] != REPO or m[2] not in ("main", COMMIT) or m[3] not in hub.files:
            return self._status(404, {"X-Error-Code": "EntryNotFound"})
        path, data = m[3], hub.files[m[3]]
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_etag(path, data)}"', "Accept-Ranges": "bytes"}
        if head:
            return self._status(200, {**headers, "Content-Length": str(len(data))})
        if hub.down:
            return self._status(503, {})
        if path in hub.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = 0
        if rng := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
            start = int(rng[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send_response(206 if start else 200)
        for k, v in {**headers, "Content-Length": str(len(data) - start)}.items():
            self.send_header(k, v)
        self.end_headers()
        if path in hub.drop_after:
            cut = hub.drop_after.pop(path)
            hub.down = True  # before the client can notice the cut
            self.wfile.write(data[start:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def _status(self, code: int, headers: dict) -> None:
        self.send_response(code)
        for k, v in {"Content-Length": "0", **headers}.items():
            self.send_header(k, v)
        self.end_headers()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.hub = Hub()
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server.hub
    server.shutdown()
    server.server_close()


def _fineweb(out: Path, *extra: str) -> int:
    return main(["data", "fineweb", "--out", str(out), "--repo-id", REPO, "--quiet", *extra])


def _local_name(remote: str) -> str:
    name = remote.rsplit("/", 1)[1]
    return {"fineweb_1024_bpe.model": "tokenizer.model", "fineweb_1024_bpe.vocab": "tokenizer.vocab"}.get(name, name)


def test_interrupted_download_resumes_on_rerun(tmp_path, hub, capsys):
    out = tmp_path / "fw"
    val = f"{DS}/fineweb_val_000000.bin"
    cut = 123_457
    hub.drop_after[val] = cut
    assert _fineweb(out, "--train-shards", "2", "--retries", "0") == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "rerun to resume" in err and "Traceback" not in err
    assert not (out / "fineweb_val_000000.bin").exists()
    parts = list(out.glob(".fineweb_val_000000.bin.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == cut

    hub.down = False
    hub.requests.clear()
    assert _fineweb(out, "--train-shards", "2") == 0
    gets = [(p, r) for m, p, r in hub.requests if m == "GET"]
    assert [r for p, r in gets if p.endswith(val)] == [f"bytes={cut}-"]  # resumed from the cut
    assert all(f"/resolve/{COMMIT}/" in p for p, _ in gets if "train" in p)  # later files pinned to the commit
    assert not any("manifest" in p or "tokenizers" in p for p, _ in gets)  # finished files were skipped
    expected = [f"{ROOT}/manifest.json", f"{ROOT}/tokenizers/fineweb_1024_bpe.model", f"{ROOT}/tokenizers/fineweb_1024_bpe.vocab",
                val, f"{DS}/fineweb_train_000000.bin", f"{DS}/fineweb_train_000001.bin"]
    for remote in expected:
        assert (out / _local_name(remote)).read_bytes() == hub.files[remote], remote
    assert sorted(p.name for p in out.iterdir()) == sorted(_local_name(r) for r in expected)  # no .part left
    assert main(["data", "check", str(out), "--vocab-size", "1024"]) == 0

    hub.requests.clear()
    assert _fineweb(out, "--train-shards", "2") == 0
    assert hub.requests == []  # everything present and valid: no network at all


def test_in_run_retry_resumes_after_a_cut(tmp_path, hub, monkeypatch):
    monkeypatch.setattr("pgolf.data.fineweb.time.sleep", lambda s: setattr(hub, "down", False))
    train = f"{DS}/fineweb_train_000000.bin"
    hub.drop_after[train] = 5_001
    assert _fineweb(tmp_path / "fw", "--train-shards", "1", "--retries", "2") == 0
    assert ("GET", f"/datasets/{REPO}/resolve/{COMMIT}/{train}", "bytes=5001-") in hub.requests
    assert (tmp_path / "fw" / "fineweb_train_000000.bin").read_bytes() == hub.files[train]


def test_checksum_mismatch_is_rejected(tmp_path, hub, capsys):
    hub.corrupt.add(f"{DS}/fineweb_val_000000.bin")
    assert _fineweb(tmp_path / "fw", "--train-shards", "0") == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "fw").glob("*fineweb_val*"))


def test_bad_requests_fail_with_one_line(tmp_path, hub, capsys):
    assert _fineweb(tmp_path / "a", "--train-shards", "4") == 1
    assert "has 3 training shards" in capsys.readouterr().err
    assert main(["data", "fineweb", "--out", str(tmp_path / "b"), "--repo-id", "nobody/missing", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot get file metadata" in err and len(err.strip().splitlines()) == 1
    assert "gave up" not in err  # a 404 is not retried
    assert _fineweb(tmp_path / "c", "--variant", "byte260") == 1
    assert "expected spN" in capsys.readouterr().err


def test_plan_uses_manifest_counts_and_official_layout():
    manifest = json.loads(_files()[f"{ROOT}/manifest.json"])
    files = plan_files(manifest, "sp1024", 2, "datasets")
    assert [(f.remote, f.local) for f in files] == [
        ("datasets/tokenizers/fineweb_1024_bpe.model", "tokenizer.model"),
        ("datasets/tokenizers/fineweb_1024_bpe.vocab", "tokenizer.vocab"),
        ("datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin", "fineweb_val_000000.bin"),
        ("datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin", "fineweb_train_000000.bin"),
        ("datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin", "fineweb_train_000001.bin"),
    ]
    with pytest.raises(PgolfError, match="no dataset fineweb10B_sp4096"):
        plan_files(manifest, "sp4096", 1, "datasets")
    assert len(_files()[f"{DS}/fineweb_val_000000.bin"]) == HEADER_BYTES + 2 * 150_000


def test_caseops_variant_brings_validation_byte_files(tmp_path, hub, capsys):
    from pgolf.data.fineweb import CASEOPS_VARIANT, variant_repo

    assert variant_repo("sp8192") == "kevclark/parameter-golf"
    assert variant_repo("sp8192-caseops") == "romeerp/parameter-golf-caseops-v1"
    assert variant_repo("sp1024") == "willdepueoai/parameter-golf"
    ds = f"{ROOT}/datasets/fineweb10B_{CASEOPS_VARIANT}"
    manifest = json.loads(hub.files[f"{ROOT}/manifest.json"])
    manifest["datasets"].append({"name": f"fineweb10B_{CASEOPS_VARIANT}", "tokenizer_name": "sp_bpe_1024",
                                 "stats": {"files_val": 1, "files_train": 1}})
    counts = np.random.default_rng(5).integers(0, 4, 1000).astype("<u2")
    header = np.zeros(256, dtype="<i4")
    header[:3] = MAGIC, 1, 1000
    hub.files.update({f"{ROOT}/manifest.json": json.dumps(manifest).encode(),
                      f"{ds}/fineweb_val_000000.bin": _shard(1000, 7), f"{ds}/fineweb_train_000000.bin": _shard(500, 8),
                      f"{ds}/fineweb_val_bytes_000000.bin": header.tobytes() + counts.tobytes()})
    out = tmp_path / "co"
    assert _fineweb(out, "--variant", "sp8192-caseops", "--train-shards", "1") == 0
    assert (out / "fineweb_val_bytes_000000.bin").read_bytes() == hub.files[f"{ds}/fineweb_val_bytes_000000.bin"]
    from pgolf.data.stats import dataset_stats

    stats = dataset_stats(out)  # the stand-in tokenizer is not a real model: bytes come from the byte file
    assert stats["splits"]["val"]["bytes"] == int(counts[1:].sum()) and stats["splits"]["val"]["files"] == 1

"""Download the parameter-golf challenge's cached FineWeb shards and tokenizer from the Hub.

Facts from the challenge's own downloader (openai/parameter-golf
``data/cached_challenge_fineweb.py``): dataset repository ``willdepueoai/parameter-golf``
(``repo_type="dataset"``), export rooted at ``datasets/`` inside it, with
``datasets/manifest.json``; shards at ``datasets/datasets/fineweb10B_<variant>/
fineweb_{val,train}_NNNNNN.bin`` (numbered from 000000, 100M tokens each); the
manifest's ``datasets[name].stats`` gives ``files_val`` / ``files_train`` and its
``tokenizers`` entry the ``model_path`` / ``vocab_path`` (e.g.
``tokenizers/fineweb_1024_bpe.model``). Validation is always downloaded in full. The
SP8192 variants live in other repositories with the same layout (:data:`VARIANT_REPOS`);
CaseOps data (``--variant sp8192-caseops``) also brings the validation split's per-token
byte files ``fineweb_val_bytes_NNNNNN.bin`` (:mod:`pgolf.data.sidecar`).

Locally everything lands flat in the output folder: ``manifest.json``,
``fineweb_val_*.bin``, the first N ``fineweb_train_*.bin`` and ``tokenizer.model``
(+ ``tokenizer.vocab``). huggingface_hub resolves the URLs and file metadata (size,
ETag, commit; ``HF_ENDPOINT``/``--endpoint`` honoured, all files pinned to the commit
of the manifest); the bytes are streamed into ``.NAME.<etag>.part`` files with HTTP
Range requests, so an interrupted download continues where it stopped, in this run
(``retries``) or the next. (huggingface_hub ≥ 1.0 deletes partial files when
``hf_hub_download`` fails, which would restart 200 MB shards from zero.) Finished files
are checked against their size and ETag (sha256 for LFS files, git blob sha1 otherwise)
and shards against the shard format, then renamed into place. Files already present
and valid are skipped without touching the network.

    pgolf data fineweb --out data/fineweb10B_sp1024 --train-shards 2
"""

from __future__ import annotations

import hashlib
import json
import shutil
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.data.sidecar import sidecar_name
from pgolf.errors import PgolfError

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
CASEOPS_VARIANT = "sp8192_lossless_caps_caseops_v1_reserved"
#: Where each variant lives (FACTS.md): SP8192 in Kevin Clark's export, the CaseOps SP8192
#: data (with per-token byte files for validation) in romeerp's; others in the official repo.
VARIANT_REPOS = {"sp8192": "kevclark/parameter-golf", CASEOPS_VARIANT: "romeerp/parameter-golf-caseops-v1"}
VARIANT_ALIASES = {"sp8192-caseops": CASEOPS_VARIANT}
DEFAULT_REMOTE_ROOT = "datasets"
DEFAULT_VARIANT = "sp1024"
MANIFEST = "manifest.json"
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its path in the repository and its local name."""

    remote: str
    local: str


@dataclass
class DownloadResult:
    out_dir: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> str:
        return (f"{self.out_dir}: downloaded {len(self.downloaded)} files ({self.bytes:,} bytes), "
                f"{len(self.skipped)} already present")


def canonical_variant(variant: str) -> str:
    """The manifest's variant name (``sp8192-caseops`` → ``sp8192_lossless_caps_caseops_v1_reserved``)."""
    return VARIANT_ALIASES.get(variant, variant)


def variant_repo(variant: str) -> str:
    """The dataset repository that holds a variant."""
    return VARIANT_REPOS.get(canonical_variant(variant), DEFAULT_REPO_ID)


def dataset_dir_name(variant: str) -> str:
    """``sp1024`` → ``fineweb10B_sp1024`` (SentencePiece variants only, e.g. spN or spN_suffix)."""
    variant = canonical_variant(variant)
    if not re.fullmatch(r"sp\d+(_[a-z0-9_]+)?", variant):
        raise PgolfError(f"--variant {variant}: expected spN (a SentencePiece variant such as sp1024, sp8192, "
                         "sp8192-caseops)")
    return f"fineweb10B_{variant}"


def plan_files(manifest: dict, variant: str, train_shards: int, remote_root: str) -> list[RemoteFile]:
    """The files to fetch for a variant, from the challenge's manifest.json."""
    name = dataset_dir_name(variant)
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == name), None)
    if entry is None:
        raise PgolfError(f"{MANIFEST}: no dataset {name} (variant {variant})")
    stats = entry.get("stats") or {}
    try:
        n_val, n_train = int(stats["files_val"]), int(stats["files_train"])
    except (KeyError, TypeError, ValueError):
        raise PgolfError(f"{MANIFEST}: dataset {name} lacks stats.files_val / stats.files_train") from None
    # validation byte files: listed by the manifest, else one per val shard for CaseOps data
    n_bytes = int(stats.get("files_val_bytes", n_val if "caseops" in name else 0))
    if not 0 <= train_shards <= n_train:
        raise PgolfError(f"--train-shards {train_shards}: {name} has {n_train} training shards")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), None)
    if tok is None or not tok.get("model_path"):
        raise PgolfError(f"{MANIFEST}: no tokenizer model for {name} (tokenizer_name {entry.get('tokenizer_name')!r})")
    root = f"{remote_root.strip('/')}/" if remote_root.strip("/") else ""
    prefix = f"{root}datasets/{name}"
    files = [RemoteFile(f"{root}{tok['model_path']}", "tokenizer.model")]
    if tok.get("vocab_path"):
        files.append(RemoteFile(f"{root}{tok['vocab_path']}", "tokenizer.vocab"))
    files += [RemoteFile(f"{prefix}/fineweb_val_{i:06d}.bin", f"fineweb_val_{i:06d}.bin") for i in range(n_val)]
    files += [RemoteFile(f"{prefix}/{sidecar_name('val', i)}", sidecar_name("val", i)) for i in range(n_bytes)]
    files += [RemoteFile(f"{prefix}/fineweb_train_{i:06d}.bin", f"fineweb_train_{i:06d}.bin") for i in range(train_shards)]
    return files


def is_complete(path: Path) -> bool:
    """True if a local file is present and well-formed (shards: header and size)."""
    from pgolf.data.shards import shard_num_tokens
    from pgolf.errors import ShardError

    if not path.is_file():
        return False
    if path.suffix == ".bin":
        try:
            shard_num_tokens(path)
        except ShardError:
            return False
        return True
    if path.name == MANIFEST:
        try:
            return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
        except (OSError, ValueError):
            return False
    return path.stat().st_size > 0


class Fetcher:
    """Resumable downloads of one repository revision through its Hub endpoint."""

    def __init__(self, repo_id: str, revision: str, endpoint: str | None, retries: int, show_progress: bool) -> None:
        self.repo_id, self.revision, self.retries, self.show = repo_id, revision, retries, show_progress
        self.pinned = False
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")

    def metadata(self, remote: str):
        """(size, etag, commit, url to GET) of a remote file, via huggingface_hub."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(self.repo_id, remote, repo_type="dataset", revision=self.revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, timeout=TIMEOUT_S)
        except Exception as e:  # the Hub client raises many types (HTTP, network, offline mode)
            status = getattr(getattr(e, "response", None), "status_code", None)
            error = PgolfError if status is not None and 400 <= status < 500 and status not in (408, 429) else _NetworkError
            raise error(f"{url}: cannot get file metadata ({_one_line(e)})") from None
        if meta.size is None or not meta.etag:
            raise PgolfError(f"{url}: the server sent no file size or ETag")
        return meta.size, meta.etag, meta.commit_hash, meta.location or url

    def fetch(self, remote: str, dest: Path) -> int:
        """Download ``remote`` to ``dest`` (resuming a partial file); returns bytes transferred."""
        attempt, moved = 0, 0
        while True:
            try:
                return moved + self._attempt(remote, dest)
            except _NetworkError as e:
                moved += e.moved
                attempt += 1
                if attempt > self.retries:
                    hint = "rerun to resume" if moved else "nothing was fetched: the network or the Hub is unreachable"
                    raise PgolfError(f"{e} (gave up after {attempt} tries; {hint})") from None
                time.sleep(min(2.0**attempt, 30.0))

    def _attempt(self, remote: str, dest: Path) -> int:
        size, etag, commit, url = self.metadata(remote)
        if commit and not self.pinned:  # fetch every file from the same commit
            self.revision, self.pinned = commit, True
        part = dest.parent / f".{dest.name}.{re.sub(r'[^0-9A-Za-z]', '', etag)[:16]}.part"
        have = part.stat().st_size if part.is_file() else 0
        if have > size:
            part.unlink()
            have = 0
        moved = 0
        if have < size or not part.is_file():
            moved = self._stream(url, part, have, size, dest.name)
        _verify(part, size, etag, remote)
        os.replace(part, dest)
        return moved

    def _stream(self, url: str, part: Path, have: int, size: int, name: str) -> int:
        import http.client
        import urllib.error
        import urllib.request

        from pgolf.data.progress import progress

        headers = {"User-Agent": "pgolf", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        moved = 0
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
                if have and resp.status != 206:  # the server ignored the Range: start over
                    have = 0
                with open(part, "r+b" if have else "wb") as f, progress(size, name, "B", self.show) as bar:
                    f.seek(have)
                    f.truncate()
                    bar.update(have)
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                        moved += len(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as e:
            if e.code in (408, 429) or e.code >= 500:
                raise _NetworkError(f"{url}: HTTP {e.code}", moved) from None
            raise PgolfError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # refused, reset, timeout, cut short
            raise _NetworkError(f"{url}: download interrupted ({_one_line(e)})", moved) from None
        got = part.stat().st_size
        if got < size:
            raise _NetworkError(f"{url}: download interrupted at {got:,} of {size:,} bytes", moved)
        return moved


class _NetworkError(PgolfError):
    """A transient failure worth retrying; ``moved`` bytes were transferred before it."""

    def __init__(self, message: str, moved: int = 0) -> None:
        super().__init__(message)
        self.moved = moved


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _verify(part: Path, size: int, etag: str, remote: str) -> None:
    """Check size and, when the ETag is a content hash, the hash; then the shard format."""
    got = part.stat().st_size
    if got != size:
        part.unlink()
        raise PgolfError(f"{remote}: downloaded {got:,} bytes but the server announced {size:,}")
    digest = None
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        digest = _hash_file(part, hashlib.sha256())
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        digest = _hash_file(part, hashlib.sha1(f"blob {size}\0".encode()))
    if digest is not None and digest != etag:
        part.unlink()
        raise PgolfError(f"{remote}: checksum mismatch (got {digest[:12]}…, ETag {etag[:12]}…); rerun to download again")
    if part.name.startswith(".fineweb_"):
        from pgolf.data.shards import shard_num_tokens
        from pgolf.errors import ShardError

        try:
            shard_num_tokens(part)
        except ShardError as e:
            part.unlink()
            raise PgolfError(f"{remote}: downloaded file is not a valid shard ({e})") from None


def _hash_file(path: Path, h) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download_fineweb(
    out_dir: str | os.PathLike,
    *,
    train_shards: int = 1,
    variant: str = DEFAULT_VARIANT,
    repo_id: str | None = None,
    remote_root: str = DEFAULT_REMOTE_ROOT,
    revision: str = "main",
    endpoint: str | None = None,
    retries: int = 3,
    show_progress: bool = True,
) -> DownloadResult:
    """Fetch the manifest, all validation shards, ``train_shards`` training shards and the tokenizer."""
    dataset_dir_name(variant)
    if train_shards < 0:
        raise PgolfError(f"--train-shards {train_shards}: must be >= 0")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise PgolfError(f"{out}: exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _download(out, train_shards, variant, repo_id, remote_root, revision, endpoint, retries, show_progress)
    except BaseException:
        if created and not any(p.stat().st_size for p in out.rglob("*") if p.is_file()):
            shutil.rmtree(out, ignore_errors=True)  # nothing fetched: leave no empty --out behind
        raise


def _download(out, train_shards, variant, repo_id, remote_root, revision, endpoint, retries, show_progress):
    fetcher = Fetcher(repo_id or variant_repo(variant), revision, endpoint, retries, show_progress)
    result = DownloadResult(out)
    root = remote_root.strip("/")
    manifest_path = out / MANIFEST
    if not is_complete(manifest_path):
        result.bytes += fetcher.fetch(f"{root}/{MANIFEST}" if root else MANIFEST, manifest_path)
        result.downloaded.append(MANIFEST)
    else:
        result.skipped.append(MANIFEST)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for f in plan_files(manifest, variant, train_shards, remote_root):
        dest = out / f.local
        if is_complete(dest):
            result.skipped.append(f.local)
            continue
        result.bytes += fetcher.fetch(f.remote, dest)
        result.downloaded.append(f.local)
    return result

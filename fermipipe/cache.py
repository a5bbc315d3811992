"""Content-addressed caching: file hashes, step keys and the product store.

* :class:`HashIndex` hashes files by content (sha256) and remembers each hash under the file's
  stat signature (path, size, mtime, inode), so an unchanged file is never read twice: a no-op
  rerun over 1000 weekly files costs 1000 ``stat`` calls, not 100 GB of reading. Touching a
  file changes its signature, so it is re-read once — and gives the same hash, so every cache
  key stays the same.
* :func:`step_key` combines everything a step's output depends on: the content of its input
  file, its normalised parameters, the content of the common files it reads, the tool and its
  version, and the keys of the upstream steps.
* :class:`ProductStore` keeps products under ``<root>/objects/<key[:2]>/<key>/<name>`` with a
  JSON record of each file's size and hash. A stored product is trusted only if it is still
  there with the recorded content (checked through the hash index, so a truncated or edited
  file is caught); otherwise it is treated as absent and recomputed. Entries are written to a
  temporary name and renamed, and a per-key lock file keeps two runs from computing the same
  entry at the same moment. Deleting the store only means a full rerun.

No Prefect here: the Prefect task layer uses these keys as its cache keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextlib.contextmanager
def _setup_lock(db: Path | None) -> Iterator[None]:
    """An exclusive flock on ``<db>.lock`` (nothing for an in-memory index)."""
    if db is None:
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class HashIndex:
    """Content hashes of files, remembered under their stat signature.

    Backed by SQLite (safe for several threads and processes); ``path=None`` keeps the index in
    memory only.
    """

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:",
            check_same_thread=False,
            timeout=60,
            isolation_level=None,
        )
        # Switching a new database to WAL fails at once ("database is locked", no busy
        # wait) when another process does the same: two runs starting together. The set-up
        # is serialised across processes by a lock file beside the database.
        with self._lock, _setup_lock(path):
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER,"
                " mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def hash(self, path: Path) -> str:
        """Content hash of ``path``, reading the file only if its signature changed."""
        real = os.path.realpath(path)
        st = os.stat(real)
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, inode, sha256 FROM hashes WHERE path = ?", (real,)
            ).fetchone()
        if row is not None and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return str(row[3])
        digest = sha256_file(Path(real))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                (real, st.st_size, st.st_mtime_ns, st.st_ino, digest),
            )
        return digest


def _normalise(value: Any) -> Any:
    """Parameters in a canonical form: numbers compared by value, keys lower-cased."""
    if isinstance(value, Mapping):
        return {str(k).lower(): _normalise(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            return repr(float(text))
        except ValueError:
            return text
    return str(value)


def step_key(
    *,
    tool: str,
    tool_version: str,
    params: Mapping[str, Any],
    input_hashes: Mapping[str, str],
    upstream_keys: Mapping[str, str] | None = None,
    output_names: Mapping[str, str] | None = None,
) -> str:
    """The cache key of one step on one file.

    ``input_hashes`` maps each file parameter (infile, scfile, …) to its content hash, so that
    the key does not depend on where the files are; ``params`` are the other parameters.
    ``output_names`` (placeholder → file name) is part of the key because two inputs with
    identical content must still produce distinct products (prefect-3-facts: a content-only
    key makes two identical files share an entry).
    """
    payload = {
        "tool": tool,
        "version": tool_version,
        "params": _normalise(params),
        "inputs": dict(sorted(input_hashes.items())),
        "upstream": dict(sorted((upstream_keys or {}).items())),
        "outputs": dict(sorted((output_names or {}).items())),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    sha256: str


class ProductStore:
    """Products kept by cache key on persistent disk."""

    def __init__(self, root: Path, hashes: HashIndex | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hashes = hashes or HashIndex(self.root / "hashes.sqlite")

    def entry_dir(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def _record_path(self, key: str) -> Path:
        return self.entry_dir(key) / "entry.json"

    def meta(self, key: str) -> dict[str, Any]:
        """The free-form metadata recorded with an entry (empty when none or unreadable)."""
        try:
            meta = json.loads(self._record_path(key).read_text()).get("meta") or {}
        except (OSError, ValueError, AttributeError):
            return {}
        return dict(meta) if isinstance(meta, dict) else {}

    def lookup(self, key: str) -> dict[str, Path] | None:
        """The entry's files (name → path) if every one is present and intact, else None."""
        record = self._record_path(key)
        try:
            files = [StoredFile(**f) for f in json.loads(record.read_text())["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        out: dict[str, Path] = {}
        for item in files:
            path = self.entry_dir(key) / item.name
            try:
                if path.stat().st_size != item.size or self.hashes.hash(path) != item.sha256:
                    return None
            except OSError:
                return None
            out[item.name] = path
        return out

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive lock on one key, across threads and processes."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{key}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put(
        self,
        key: str,
        files: Mapping[str, Path],
        *,
        move: bool = False,
        link: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Path]:
        """Store ``files`` (stored name → source path) under ``key``; returns stored paths.

        Each file is copied (or moved, or hard-linked when ``link`` and the store is on the
        same file system) to a temporary name in the entry folder and renamed; the entry
        record (with ``meta``) is written last, so a crash leaves no entry that looks
        complete. A hard-linked product edited in place later fails its hash check on lookup
        (recomputed, never trusted); the tools replace files rather than edit them.
        """
        entry = self.entry_dir(key)
        entry.mkdir(parents=True, exist_ok=True)
        stored: list[StoredFile] = []
        out: dict[str, Path] = {}
        for name, src in files.items():
            dest = entry / name
            tmp = entry / f".{name}.tmp-{os.getpid()}-{threading.get_ident()}"
            if move:
                try:
                    os.replace(src, tmp)
                except OSError:  # different file system (RAM disk → disk)
                    shutil.copyfile(src, tmp)
                    os.unlink(src)
            elif link:
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copyfile(src, tmp)
            else:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            stored.append(StoredFile(name, dest.stat().st_size, self.hashes.hash(dest)))
            out[name] = dest
        record = {"key": key, "files": [vars(s) for s in stored], "meta": dict(meta or {})}
        tmp_record = entry / f".entry.json.tmp-{os.getpid()}-{threading.get_ident()}"
        tmp_record.write_text(json.dumps(record, indent=1))
        os.replace(tmp_record, self._record_path(key))
        return out

    def materialise(self, stored: Path, dest: Path) -> Path:
        """Put a copy of stored file ``stored`` at ``dest`` (hard link when possible).

        Written under a temporary name and renamed, so a reader never sees half a file.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            os.link(stored, tmp)
        except OSError:  # another file system (the RAM disk) or no hard links
            shutil.copyfile(stored, tmp)
        os.replace(tmp, dest)
        return dest

    def forget(self, key: str) -> None:
        """Remove an entry (used when it was found damaged)."""
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

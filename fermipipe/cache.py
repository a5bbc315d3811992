"""Content-addressed caching: file hashes, step keys and the product store.

* :class:`HashIndex` hashes files by content (BLAKE3) and remembers each hash under the file's
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
import errno
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from fermipipe.errors import FermipipeError
from fermipipe.fits.writing import atomic_output, remove_dead_temporaries

_CHUNK = 8 * 1024 * 1024
#: The window :func:`content_hash` maps and hashes at a time (a multiple of any page size).
_HASH_WINDOW = 256 * 1024 * 1024


class StoreObjectDamagedError(FermipipeError):
    """A stored object's content no longer matches the hash recorded when it was stored."""


class StoreWriteError(FermipipeError, OSError):
    """Writing into the store (or a product out of it) failed: names the path; the partial
    temporary is already removed, so a full disk gets its space back."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def _store_write(final: Path) -> Iterator[Path]:
    """:func:`~fermipipe.fits.writing.atomic_output` for ``final``: yield the temporary,
    rename it on success, remove it on any failure.

    An OSError (disk full, quota, permissions) becomes :class:`StoreWriteError` naming
    ``final`` and the file system that refused it — not "internal error … (bad data?)".
    """
    try:
        with atomic_output(final) as tmp:
            yield tmp
    except OSError as exc:
        what = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what += f" (disk full: the file system holding {final.parent})"
        raise StoreWriteError(exc.errno or 0, f"cannot write {final}: {what}", str(final)) from None


def content_hash(path: Path) -> str:
    """Hex BLAKE3 of a file's content: the content hash behind every cache key, store record
    and manifest.

    BLAKE3, not sha256: a first run hashes every input (GBs), and even with the CPU's SHA
    instructions sha256 is well under half as fast (benchmarks/hashing.py). The file is
    hashed through a memory map (as the FITS readers here read), 256 MB at a time: the
    hasher releases the interpreter lock for each window, and a thread hashing beside
    busy Python threads must not queue for the lock after every small read (measured: 1 MB
    reads beside one busy thread made hashing many times slower; benchmarks/hashing.py
    runs that case too). The windows bound the mapped pages counted in the RSS.
    """
    hasher = blake3.blake3()
    for window in mapped_windows(path):
        hasher.update(window)
    return hasher.hexdigest()


def mapped_windows(path: Path) -> Iterator[mmap.mmap]:
    """``path``'s content as read-only memory maps of :data:`_HASH_WINDOW` bytes (the last
    one shorter), each unmapped when the next is made; nothing for an empty file."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for offset in range(0, size, _HASH_WINDOW):
            length = min(_HASH_WINDOW, size - offset)
            with mmap.mmap(fh.fileno(), length, access=mmap.ACCESS_READ, offset=offset) as view:
                yield view


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
            # The status-change time: an in-place edit that restores size and mtime (utime)
            # still moves it, and no call sets it back. (The sha256 table of earlier
            # versions, ``hashes``, is not read.)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS blake3 (path TEXT PRIMARY KEY, size INTEGER,"
                " mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER, nlink INTEGER,"
                " digest TEXT)"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def hash(self, path: Path, *, verify: bool = False) -> str:
        """Content hash of ``path``, reading the file only if its signature changed — or
        always with ``verify``.

        The signature is size, mtime, inode and ctime. ctime catches an in-place edit that
        puts size and mtime back (no call sets ctime). Adding or removing a hard link also
        moves ctime (the store links products in and out); that alone — link count changed,
        size, mtime and inode the same — only updates the record, so a no-op rerun does not
        re-read every product. Merges and products re-check content anyway
        (:func:`verify_stored`).
        """
        real = os.path.realpath(path)
        st = os.stat(real)
        if not verify:
            with self._lock:
                row = self._db.execute(
                    "SELECT size, mtime_ns, inode, ctime_ns, nlink, digest FROM blake3"
                    " WHERE path = ?",
                    (real,),
                ).fetchone()
            if row is not None and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
                same_ctime = row[3] == st.st_ctime_ns
                relinked = row[3] is None or (row[4] is not None and row[4] != st.st_nlink)
                if same_ctime or relinked:
                    if not same_ctime:
                        self._record(real, st, str(row[5]))
                    return str(row[5])
        digest = content_hash(Path(real))
        self._record(real, st, digest)
        return digest

    def _record(self, real: str, st: os.stat_result, digest: str) -> None:
        # The index only saves reading: when it cannot be written (a full disk) the hash
        # is still right, it is just computed again next time.
        with self._lock, contextlib.suppress(sqlite3.OperationalError):
            self._db.execute(
                "INSERT OR REPLACE INTO blake3 (path, size, mtime_ns, inode, ctime_ns, nlink,"
                " digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_nlink, digest),
            )


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


def verify_stored(path: Path) -> Path:
    """Re-read ``path`` if it is a product-store object, and check its content against the
    content hash recorded when it was stored; return ``path``.

    The one place objects are read out of the store: merges call it for each input
    (:mod:`fermipipe.merge`), :meth:`ProductStore.materialise` for each product it places.
    The stat-keyed index keeps lookups fast; this is the content check behind them, done
    when the bytes are about to be used anyway. An object is recognised by the entry record
    beside it (``<store>/objects/<k[:2]>/<key>/entry.json`` listing its name); other files
    are returned unchecked. A mismatch removes the entry (the next run recomputes it) and
    raises :class:`StoreObjectDamagedError` naming the file.
    """
    path = Path(path)
    record = path.parent / "entry.json"
    if path.parent.parent.parent.name != "objects" or not record.is_file():
        return path
    try:
        files = {f["name"]: f for f in json.loads(record.read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        files = {}
    recorded = files.get(path.name)
    if recorded is None:
        return path  # not one of the entry's files (the record itself, a temporary)
    try:
        actual = content_hash(path)
    except OSError as exc:
        raise StoreObjectDamagedError(
            f"{path}: stored object unreadable: {exc.strerror or exc}"
        ) from None
    if actual != recorded.get("blake3"):
        shutil.rmtree(path.parent, ignore_errors=True)
        raise StoreObjectDamagedError(
            f"{path}: stored object changed since it was stored (BLAKE3 {actual[:12]}… is not "
            f"the recorded {str(recorded.get('blake3'))[:12]}…); entry removed, rerun to "
            "recompute it"
        )
    return path


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    blake3: str  # content_hash (records of earlier versions hold sha256: read as absent)


class ProductStore:
    """Products kept by cache key on persistent disk."""

    def __init__(
        self, root: Path, hashes: HashIndex | None = None, *, verify: bool = False
    ) -> None:
        """``verify=True`` (``--verify-cache``): every lookup re-reads and re-hashes the
        entry's files instead of trusting the stat-keyed index."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hashes = hashes or HashIndex(self.root / "hashes.sqlite")
        self.verify = verify

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

    def _files(self, key: str) -> list[StoredFile] | None:
        try:
            record = json.loads(self._record_path(key).read_text())
            return [StoredFile(**f) for f in record["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def lookup(self, key: str, *, verify: bool | None = None) -> dict[str, Path] | None:
        """The entry's files (name → path) if every one is present and intact, else None.

        Intact = the recorded size and content hash; the hash comes from the stat-keyed index
        (size, mtime, ctime, inode: an in-place edit changes ctime even when size and mtime
        are put back), or is recomputed from the content with ``verify`` (default: the
        store's ``verify``).
        """
        verify = self.verify if verify is None else verify
        files = self._files(key)
        if files is None:
            return None
        out: dict[str, Path] = {}
        for item in files:
            path = self.entry_dir(key) / item.name
            try:
                if path.stat().st_size != item.size:
                    return None
                if self.hashes.hash(path, verify=verify) != item.blake3:
                    return None
            except OSError:
                return None
            out[item.name] = path
        return out

    def read_object(self, path: Path) -> Path:
        """``path`` (a file of this store) re-verified against its recorded hash: see
        :func:`verify_stored`, which every read of a stored object for a merge or a product
        goes through."""
        return verify_stored(path)

    def verify_all(self) -> list[str]:
        """Re-hash every stored file; remove and return the keys of damaged entries."""
        damaged: list[str] = []
        for record in sorted((self.root / "objects").glob("*/*/entry.json")):
            key = record.parent.name
            if self.lookup(key, verify=True) is None:
                self.forget(key)
                damaged.append(key)
        return damaged

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
        try:
            return self._put(entry, key, files, move=move, link=link, meta=meta)
        except OSError as exc:
            # Nothing half-stored stays behind (a full disk gets its space back): an entry
            # without its record is unusable anyway.
            if not self._record_path(key).exists():
                shutil.rmtree(entry, ignore_errors=True)
            if isinstance(exc, StoreWriteError):
                raise
            where = os.fsdecode(exc.filename) if exc.filename is not None else str(entry)
            what = exc.strerror or str(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                what += f" (disk full: the file system holding {entry})"
            raise StoreWriteError(exc.errno or 0, f"cannot write {where}: {what}", where) from None

    def _put(
        self,
        entry: Path,
        key: str,
        files: Mapping[str, Path],
        *,
        move: bool,
        link: bool,
        meta: Mapping[str, Any] | None,
    ) -> dict[str, Path]:
        entry.mkdir(parents=True, exist_ok=True)
        stored: list[StoredFile] = []
        out: dict[str, Path] = {}
        for name, src in files.items():
            dest = entry / name
            with _store_write(dest) as tmp:
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
            stored.append(StoredFile(name, dest.stat().st_size, self.hashes.hash(dest)))
            out[name] = dest
        record = {"key": key, "files": [vars(s) for s in stored], "meta": dict(meta or {})}
        record_path = self._record_path(key)
        with _store_write(record_path) as tmp_record:
            tmp_record.write_text(json.dumps(record, indent=1))
        return out

    def materialise(self, stored: Path, dest: Path) -> Path:
        """Put a copy of stored file ``stored`` at ``dest`` (hard link when possible).

        Written under a temporary name and renamed, so a reader never sees half a file.
        """
        dest = Path(dest)
        self.read_object(Path(stored))  # a product is never made from a changed object
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _store_write(dest) as tmp:
            try:
                os.link(stored, tmp)
            except OSError:  # another file system (the RAM disk) or no hard links
                shutil.copyfile(stored, tmp)
        return dest

    def remove_dead_temporaries(self) -> list[Path]:
        """Remove the temporaries that writers killed mid-write left in the store (their
        PID is in the name: see :func:`fermipipe.fits.writing.remove_dead_temporaries`)."""
        return remove_dead_temporaries(self.root, recursive=True)

    def forget(self, key: str) -> None:
        """Remove an entry (used when it was found damaged)."""
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

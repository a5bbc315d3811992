"""Benchmark: the content hash behind the cache (BLAKE3, memory-mapped windows) against
sha256 and against small reads, side by side.

A first run hashes every input before its cache keys are known (a mission: ~900 weekly FT1
files of ~200 MB), in threads of the flow's process, while its main thread is busy (the
spacecraft slices, Prefect), so both the hash's speed and how it shares the interpreter
lock are part of the run's head. Rows:

* sha256 and BLAKE3 over the same memory-mapped windows (:func:`fermipipe.cache.content_hash`
  is the BLAKE3 one), one thread and ``--threads`` threads;
* BLAKE3 by 1 MiB reads instead of windows, and both beside one busy Python thread (a
  pure-Python loop holding the interpreter lock whenever it can).

Best of ``--repeat``, alternating; the files are read once first, so every row hashes from
the page cache.

Run from the repository root::

    uv run python benchmarks/hashing.py [--files 8] [--mb 200] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from fermipipe.cache import content_hash, mapped_windows

_READ = 1024 * 1024


def sha256_hash(path: Path) -> str:
    """sha256 of ``path`` over the windows :func:`content_hash` maps."""
    hasher = hashlib.sha256()
    for window in mapped_windows(path):
        hasher.update(window)
    return hasher.hexdigest()


def blake3_by_reads(path: Path) -> str:
    """BLAKE3 of ``path`` by 1 MiB reads into one buffer (what the windows replaced)."""
    buf = bytearray(_READ)
    view = memoryview(buf)
    hasher = blake3.blake3()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest()


@contextlib.contextmanager
def busy_thread() -> Iterator[None]:
    """One Python thread spinning (holding the interpreter lock whenever it can)."""
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def seconds(fn: Callable[[Path], str], files: Sequence[Path], threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, files))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--mb", type=int, default=200, help="size of each file (MB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: list[tuple[str, Callable[[Path], str], int, bool]] = []
    for threads in sorted({1, args.threads}):
        rows += [
            (f"sha256, windows, {threads} thread(s)", sha256_hash, threads, False),
            (f"blake3, windows, {threads} thread(s)", content_hash, threads, False),
        ]
    rows += [
        (f"blake3, 1 MiB reads, {args.threads} threads", blake3_by_reads, args.threads, False),
        (f"blake3, windows, {args.threads} threads, busy thread", content_hash, args.threads,
         True),
        (f"blake3, 1 MiB reads, {args.threads} threads, busy thread", blake3_by_reads,
         args.threads, True),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hash-bench-") as tmp:
        files = []
        for i in range(args.files):
            path = Path(tmp) / f"file{i}.bin"
            path.write_bytes(os.urandom(args.mb * 1_000_000))
            files.append(path)
        assert {content_hash(f) for f in files} == {blake3_by_reads(f) for f in files}
        best = {name: float("inf") for name, *_ in rows}
        for _ in range(args.repeat):
            for name, fn, threads, busy in rows:
                with busy_thread() if busy else contextlib.nullcontext():
                    best[name] = min(best[name], seconds(fn, files, threads))
    total = args.files * args.mb / 1000
    print(f"hashing {args.files} files × {args.mb} MB ({total:.1f} GB) from the page cache, "
          f"best of {args.repeat}")  # fmt: skip
    for name, *_ in rows:
        print(f"  {name:<44} {best[name]:6.2f} s  {total / best[name]:6.2f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the content hash behind the cache (BLAKE3) against sha256, side by side.

A first run hashes every input before its cache keys are known (a mission: ~900 weekly FT1
files of ~200 MB), so the hash's speed is part of the run's head. Both hashes read the same
files the same way (1 MiB reads into one buffer; hashlib and blake3 both release the GIL),
one thread and then ``--threads`` threads, alternating, best of ``--repeat``; the files are
read once first, so both hash from the page cache.

Run from the repository root::

    uv run python benchmarks/hashing.py [--files 8] [--mb 200] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fermipipe.cache import content_hash

_READ = 1024 * 1024


def sha256_hash(path: Path) -> str:
    """sha256 of ``path``, read like :func:`fermipipe.cache.content_hash` reads."""
    buf = bytearray(_READ)
    view = memoryview(buf)
    hasher = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest()


def throughput(fn: Callable[[Path], str], files: Sequence[Path], threads: int) -> float:
    """GB/s of hashing ``files`` with ``threads`` threads."""
    nbytes = sum(f.stat().st_size for f in files)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, files))
    return nbytes / (time.perf_counter() - t0) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--mb", type=int, default=200, help="size of each file (MB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hash-bench-") as tmp:
        files = []
        for i in range(args.files):
            path = Path(tmp) / f"file{i}.bin"
            path.write_bytes(os.urandom(args.mb * 1_000_000))
            files.append(path)
        for f in files:  # into the page cache
            content_hash(f)
        best: dict[tuple[str, int], float] = {}
        for _ in range(args.repeat):
            for threads in sorted({1, args.threads}):
                for name, fn in (("sha256", sha256_hash), ("blake3", content_hash)):
                    rate = throughput(fn, files, threads)
                    best[name, threads] = max(best.get((name, threads), 0.0), rate)
    total = args.files * args.mb / 1000
    print(f"hashing {args.files} files × {args.mb} MB ({total:.1f} GB) from the page cache, "
          f"best of {args.repeat}")  # fmt: skip
    for threads in sorted({1, args.threads}):
        sha, b3 = best["sha256", threads], best["blake3", threads]
        print(f"  {threads} thread(s): sha256 {sha:5.2f} GB/s   blake3 {b3:5.2f} GB/s   "
              f"blake3/sha256 {b3 / sha:4.1f}×")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

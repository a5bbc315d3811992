"""Content hashing, step keys and the product store."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from fermipipe import cache
from fermipipe.cache import HashIndex, ProductStore, content_hash, step_key


def test_hash_index_reads_file_once_until_signature_changes(tmp_path: Path) -> None:
    data = tmp_path / "week.fits"
    data.write_bytes(b"x" * 1000)
    index = HashIndex(tmp_path / "idx.sqlite")
    first = index.hash(data)
    assert first == content_hash(data)
    # Same content behind a changed signature: re-read, same hash.
    os.utime(data, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert index.hash(data) == first
    # One byte changed (same size): new signature, new hash.
    data.write_bytes(b"x" * 999 + b"y")
    assert index.hash(data) != first


#: BLAKE3 of b"abc", from the BLAKE3 reference's test values.
BLAKE3_ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def test_content_hash_is_blake3_of_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BLAKE3's published test value for "abc", an empty file, and a file spanning several
    reads (its last one partial) hashed as one piece."""
    abc, empty, big = tmp_path / "abc", tmp_path / "empty", tmp_path / "big"
    abc.write_bytes(b"abc")
    empty.write_bytes(b"")
    data = os.urandom(3 * 1024 * 1024 + 12345)
    big.write_bytes(data)
    assert content_hash(abc) == BLAKE3_ABC
    assert content_hash(empty) == blake3.blake3(b"").hexdigest()
    assert content_hash(big) == blake3.blake3(data).hexdigest()
    # Windows smaller than the file: several, the last one partial.
    monkeypatch.setattr(cache, "_HASH_WINDOW", 16 * mmap.ALLOCATIONGRANULARITY)
    assert content_hash(big) == blake3.blake3(data).hexdigest()
    with pytest.raises(FileNotFoundError) as info:
        content_hash(tmp_path / "gone")
    assert info.value.filename == str(tmp_path / "gone")  # an error names its file


def test_a_store_record_of_an_earlier_version_is_read_as_absent(tmp_path: Path) -> None:
    """Records that hold sha256 (before content hashes were BLAKE3) are never trusted: the
    entry is recomputed, not reported damaged."""
    store = ProductStore(tmp_path / "store")
    src = tmp_path / "ccube.fits"
    src.write_bytes(b"\0" * 2880)
    stored = store.put("k" * 64, {"ccube.fits": src})
    record = stored["ccube.fits"].parent / "entry.json"
    old = json.loads(record.read_text())
    for f in old["files"]:
        f["sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
        del f["blake3"]
    record.write_text(json.dumps(old))
    assert store.lookup("k" * 64) is None


def test_hash_index_uses_stored_hash_for_unchanged_signature(tmp_path: Path) -> None:
    data = tmp_path / "a.fits"
    data.write_bytes(b"abc")
    index = HashIndex(tmp_path / "idx.sqlite")
    index.hash(data)
    # Poison the stored hash: an unchanged signature must answer from the index (no read).
    index._db.execute("UPDATE blake3 SET digest = 'stale'")
    assert index.hash(data) == "stale"
    index.close()
    # The index persists across processes.
    again = HashIndex(tmp_path / "idx.sqlite")
    assert again.hash(data) == "stale"


def test_step_key_depends_on_content_params_version_and_names() -> None:
    base = dict(
        tool="gtselect",
        tool_version="native-1",
        params={"emin": 100, "zmax": "90"},
        input_hashes={"infile": "aa"},
        output_names={"outfile": "w1_sel.fits"},
    )
    key = step_key(**base)
    assert key == step_key(**{**base, "params": {"ZMAX": 90.0, "emin": "100"}})
    assert key != step_key(**{**base, "params": {"emin": 200, "zmax": 90}})
    assert key != step_key(**{**base, "input_hashes": {"infile": "ab"}})
    assert key != step_key(**{**base, "tool_version": "native-2"})
    assert key != step_key(**{**base, "output_names": {"outfile": "w2_sel.fits"}})
    assert key != step_key(**base, upstream_keys={"select": "k1"})


def test_store_roundtrip_and_damage_detection(tmp_path: Path) -> None:
    store = ProductStore(tmp_path / "store")
    src = tmp_path / "ccube.fits"
    src.write_bytes(b"\0" * 5760)
    stored = store.put("k" * 64, {"ccube.fits": src})
    assert store.lookup("k" * 64) == stored
    # Truncated → not trusted.
    with open(stored["ccube.fits"], "r+b") as fh:
        fh.truncate(2880)
    assert store.lookup("k" * 64) is None
    # Same size, different bytes → not trusted either.
    stored = store.put("k" * 64, {"ccube.fits": src})
    with open(stored["ccube.fits"], "r+b") as fh:
        fh.seek(100)
        fh.write(b"\1")
    assert store.lookup("k" * 64) is None
    # Missing → not trusted; unknown key → None.
    stored = store.put("k" * 64, {"ccube.fits": src})
    stored["ccube.fits"].unlink()
    assert store.lookup("k" * 64) is None
    assert store.lookup("0" * 64) is None


LOCK_SCRIPT = """
import sys, time
from pathlib import Path
from fermipipe.cache import ProductStore
store = ProductStore(Path(sys.argv[1]))
with store.lock("samekey"):
    with open(sys.argv[2], "a") as log:
        log.write(f"start {time.time()}\\n")
    time.sleep(0.5)
    with open(sys.argv[2], "a") as log:
        log.write(f"end {time.time()}\\n")
"""


def test_lock_serialises_two_processes(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    procs = [
        subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(tmp_path / "store"), str(log)])
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["start", "end", "start", "end"]
    assert float(events[2][1]) >= float(events[1][1])

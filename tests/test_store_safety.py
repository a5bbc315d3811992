"""The store and the products under faults: edited objects, killed writers, a full disk.

Real files, real processes (SIGKILL), a real full file system (a 2 MiB tmpfs; where it
cannot be mounted, RLIMIT_FSIZE in a subprocess gives the same EFBIG-style failure). Every
test checks the inputs' sha256 before and after.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits

from fermipipe.cache import ProductStore, StoreObjectDamagedError, StoreWriteError
from fermipipe.errors import ToolError
from fermipipe.fits.writing import remove_dead_temporaries, temporary_name
from fermipipe.manifest import Manifest, ManifestInput, read_manifest, sidecar_path
from fermipipe.merge import image_sum

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FT1 = SAMPLE / "lat_photon_weekly_w700_p305_v001.fits"
FT2 = SAMPLE / "lat_spacecraft_weekly_w700_p310_v001.fits"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


# ------------------------------------------------------------------ edited store objects


def _edit_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one byte inside the last data block
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_store_object_edited_in_place_with_size_and_mtime_kept_is_not_trusted(
    tmp_path: Path,
) -> None:
    src = tmp_path / "ltcube.fits"
    shutil.copyfile(FT2, src)
    before = sha(src)
    store = ProductStore(tmp_path / "store")
    stored = store.put("k" * 64, {"ltcube.fits": src})["ltcube.fits"]
    assert store.lookup("k" * 64) == {"ltcube.fits": stored}  # the index knows it now
    _edit_keeping_size_and_mtime(stored)
    assert store.lookup("k" * 64) is None  # stat-keyed, yet not fooled (ctime moved)
    assert sha(src) == before


def test_store_read_for_a_product_reverifies_content(tmp_path: Path) -> None:
    """Even an index that believes the old signature (the edit raced the lookup) cannot
    make a product from a changed object: the read-out re-hashes the content."""
    src = tmp_path / "ccube.fits"
    shutil.copyfile(FT1, src)
    before = sha(src)
    store = ProductStore(tmp_path / "store")
    key = "a" * 64
    stored = store.put(key, {"ccube.fits": src})["ccube.fits"]
    files = store.lookup(key)
    assert files is not None
    _edit_keeping_size_and_mtime(stored)
    # Make the index agree with the edited file's new signature but keep the old hash:
    st = stored.stat()
    store.hashes._db.execute(
        "UPDATE blake3 SET ctime_ns = ?, inode = ? WHERE path = ?",
        (st.st_ctime_ns, st.st_ino, os.path.realpath(stored)),
    )
    assert store.lookup(key) is not None  # the fast path trusts the index …
    with pytest.raises(StoreObjectDamagedError, match="changed since it was stored"):
        store.materialise(stored, tmp_path / "out" / "ccube.fits")  # … the read-out does not
    assert not (tmp_path / "out" / "ccube.fits").exists()
    assert store.lookup(key) is None  # the damaged entry is gone: the next run recomputes
    assert sha(src) == before


def test_verify_cache_rehashes_every_lookup(tmp_path: Path) -> None:
    src = tmp_path / "x.fits"
    shutil.copyfile(FT1, src)
    before = sha(src)
    fast = ProductStore(tmp_path / "store")
    key = "b" * 64
    stored = fast.put(key, {"x.fits": src})["x.fits"]
    _edit_keeping_size_and_mtime(stored)
    st = stored.stat()
    fast.hashes._db.execute(
        "UPDATE blake3 SET ctime_ns = ?, inode = ? WHERE path = ?",
        (st.st_ctime_ns, st.st_ino, os.path.realpath(stored)),
    )
    assert fast.lookup(key) is not None
    verifying = ProductStore(tmp_path / "store", fast.hashes, verify=True)  # --verify-cache
    assert verifying.lookup(key) is None
    assert verifying.verify_all() == [key] and not fast.entry_dir(key).exists()
    assert sha(src) == before


def test_hash_index_rereads_after_in_place_edit_not_after_relinking(tmp_path: Path) -> None:
    """Fast where it may be (a hard link added or removed moves ctime only), never fooled
    by an edit that puts size and mtime back."""
    from fermipipe.cache import HashIndex

    data = tmp_path / "a.fits"
    shutil.copyfile(FT2, data)
    index = HashIndex(tmp_path / "idx.sqlite")
    real = index.hash(data)
    index._db.execute("UPDATE blake3 SET digest = 'poisoned'")  # reads would correct it
    os.link(data, tmp_path / "twin.fits")  # as the store does when it links a product in
    assert index.hash(data) == "poisoned"  # not re-read: only the link count moved
    (tmp_path / "twin.fits").unlink()  # … and when the work folder's copy is dropped
    assert index.hash(data) == "poisoned"
    _edit_keeping_size_and_mtime(data)
    assert index.hash(data) not in ("poisoned", real)  # re-read: the content changed
    index.close()


def test_merge_refuses_store_object_edited_in_place(
    tmp_path: Path, counts_maps: list[Path]
) -> None:
    before = {p: sha(p) for p in counts_maps}
    store = ProductStore(tmp_path / "store")
    stored = [store.put(f"{i:064d}", {"cmap.fits": counts_maps[0]})["cmap.fits"] for i in range(3)]
    for key in (f"{i:064d}" for i in range(3)):
        assert store.lookup(key) is not None
    _edit_keeping_size_and_mtime(stored[1])
    out = tmp_path / "products" / "sum.fits"
    with pytest.raises(ToolError, match="changed since it was stored") as err:
        image_sum(stored, out)
    assert str(stored[1]) in str(err.value)
    assert not out.exists() and not out.parent.exists() or temporaries(out.parent) == []
    assert store.lookup(f"{1:064d}") is None  # removed: recomputed next run
    assert store.lookup(f"{0:064d}") is not None
    assert {p: sha(p) for p in counts_maps} == before


# ------------------------------------------------------------------ killed writers

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fermipipe.fits.writing import atomic_output
    out = Path(sys.argv[1])
    with atomic_output(out) as tmp, open(tmp, "wb") as fh:
        fh.write(b"SIMPLE  =" + b" " * 2871)
        fh.flush()
        print(tmp, flush=True)
        time.sleep(300)  # a long merge still writing
    """
)


def test_sigkilled_writer_leaves_a_temporary_the_next_run_removes(tmp_path: Path) -> None:
    src = tmp_path / "input.fits"
    shutil.copyfile(FT2, src)
    before = sha(src)
    outdir = tmp_path / "products"
    outdir.mkdir()
    out = outdir / "example_ltcube.fits"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())
    # A live writer's temporary is not touched …
    assert tmp.exists() and remove_dead_temporaries(outdir) == []
    mine = temporary_name(outdir / "mine.fits")
    mine.write_bytes(b"x")  # … nor this (live) process's own
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tmp.exists() and not out.exists()  # SIGKILL: no cleanup ran
    assert remove_dead_temporaries(outdir) == [tmp]
    assert not tmp.exists() and mine.exists()
    assert sha(src) == before


MERGER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fermipipe.manifest import Manifest, ManifestInput
    from fermipipe.merge import image_sum
    out, maps = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    n = 0
    while True:  # merge again and again until killed
        n += 1
        m = Manifest(str(out), "image_sum", f"cfg{n}", {}, [
            ManifestInput(p.stem, p.name, "0" * 64, f"key{i}") for i, p in enumerate(maps)])
        image_sum(maps, out, manifest=m)
        print(n, flush=True)
    """
)


@pytest.fixture
def counts_maps(tmp_path: Path) -> list[Path]:
    """Three real counts maps of the sample week (native gtbin)."""
    maps = []
    for i in range(3):
        out = tmp_path / "maps" / f"cmap{i}.fits"
        out.parent.mkdir(exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "fermipipe.native", "gtbin", f"evfile={FT1}",
             f"outfile={out}", "algorithm=CMAP", "nxpix=400", "nypix=400", "binsz=0.5",
             "coordsys=GAL", "yref=0", "proj=CAR", f"xref={i * 10}"],
            check=True, cwd=REPO, capture_output=True,
        )  # fmt: skip
        maps.append(out)
    return maps


def test_merge_product_and_manifest_appear_together_under_sigkill(
    tmp_path: Path, counts_maps: list[Path]
) -> None:
    maps = [counts_maps[0]] * 3  # same grid: summable
    before = {p: sha(p) for p in counts_maps}
    out = tmp_path / "products" / "example_ccube.fits"
    out.parent.mkdir()
    for delay in [0.3 + 0.1 * i for i in range(14)]:
        proc = subprocess.Popen(
            [sys.executable, "-c", MERGER, str(out), *map(str, maps)],
            cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if out.exists():  # a product is never there without its manifest
            manifest = read_manifest(out, check_product=True)
            assert manifest is not None, f"product without its manifest (killed at {delay} s)"
            with fits.open(out) as hdul:
                assert hdul[0].header["FPCONFIG"] == manifest.config_hash[:16]
                assert hdul[0].header["FPMANIF"] == sidecar_path(out).name
        remove_dead_temporaries(out.parent)
        assert temporaries(out.parent) == []
    if not out.exists():  # a busy machine: every kill above came before a merge finished
        proc = subprocess.Popen(
            [sys.executable, "-c", MERGER, str(out), *map(str, maps)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        proc.stdout.readline()  # the first merge is done
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert out.exists() and read_manifest(out, check_product=True) is not None
    assert {p: sha(p) for p in counts_maps} == before


def test_image_sum_with_manifest_equals_stamping_after(
    tmp_path: Path, counts_maps: list[Path]
) -> None:
    from fermipipe.merge import stamp_manifest

    maps = [counts_maps[0]] * 2
    before = sha(counts_maps[0])

    def manifest(out: Path) -> Manifest:
        return Manifest(str(out), "image_sum", "c" * 64, {"native": "1"},
                        [ManifestInput("w", "w.fits", "0" * 64, "k1")])  # fmt: skip

    one = tmp_path / "one" / "sum.fits"
    two = tmp_path / "two" / "sum.fits"
    image_sum(maps, one, manifest=manifest(one))
    image_sum(maps, two)
    stamp_manifest(two, manifest(two), "image_sum")
    with fits.open(one) as a, fits.open(two) as b:
        # CHECKSUM/DATASUM comments carry the second they were written: values compared only.
        volatile = ("CHECKSUM", "DATASUM", "DATE")
        ha = [c for c in a[0].header.cards if c.keyword not in volatile]
        hb = [c for c in b[0].header.cards if c.keyword not in volatile]
        assert [str(c) for c in ha] == [str(c) for c in hb]
        assert a[0].header["DATASUM"] == b[0].header["DATASUM"]
        assert (a[0].data == b[0].data).all()
    assert read_manifest(one, check_product=True) is not None
    assert read_manifest(two, check_product=True) is not None
    assert sha(counts_maps[0]) == before


# ------------------------------------------------------------------ a full disk


@contextlib.contextmanager
def small_tmpfs(size: str = "2m") -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="fermipipe-full-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    finally:
        folder.rmdir()


def used_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_disk_full_in_store_cleans_up_and_names_the_path(tmp_path: Path) -> None:
    big = tmp_path / "big.fits"
    big.write_bytes(FT1.read_bytes() * 2)  # 3 MB > the 2 MiB file system
    before = sha(big)
    with small_tmpfs() as disk:
        empty = used_bytes(disk)
        store = ProductStore(disk / "store")
        key = "c" * 64
        with pytest.raises(StoreWriteError) as err:
            store.put(key, {"big.fits": big})
        message = str(err.value)
        assert str(store.entry_dir(key) / "big.fits") in message
        assert "disk full" in message and "No space left on device" in message
        assert "\n" not in message
        assert temporaries(disk) == []
        assert used_bytes(disk) - empty < 512 * 1024  # the space is given back
        assert store.lookup(key) is None
    assert sha(big) == before


def test_disk_full_native_output_is_one_line_naming_the_output(tmp_path: Path) -> None:
    src = tmp_path / "ft1.fits"
    shutil.copyfile(FT1, src)
    before = sha(src)
    with small_tmpfs("1m") as disk:
        out = disk / "selected.fits"
        proc = subprocess.run(
            [sys.executable, "-m", "fermipipe.native", "gtselect", f"infile={src}",
             f"outfile={out}", "emin=30", "emax=1e6", "zmax=180"],
            capture_output=True, text=True, cwd=REPO, check=False,
        )  # fmt: skip
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, proc.stderr
        assert str(out) in lines[0] and "disk full" in lines[0]
        assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
        assert list(disk.iterdir()) == []  # no partial output, no temporary
    assert sha(src) == before


def test_disk_full_merge_product_is_one_line_naming_it_no_temporary(
    counts_maps: list[Path],
) -> None:
    maps = [counts_maps[0]] * 2
    before = sha(counts_maps[0])
    with small_tmpfs("256k") as disk:
        out = disk / "products" / "example_ccube.fits"
        manifest = Manifest(str(out), "image_sum", "c" * 64, {},
                            [ManifestInput("w", "w.fits", "0" * 64, "k1")])  # fmt: skip
        with pytest.raises(ToolError) as err:
            image_sum(maps, out, manifest=manifest)
        message = str(err.value)
        assert str(out) in message and "disk full" in message and "\n" not in message
        assert not out.exists() and not sidecar_path(out).exists()
        assert temporaries(disk) == []
    assert sha(counts_maps[0]) == before

"""image_sum's accumulator on real counts cubes (native gtbin weeks): integer maps are summed
in their own type, every add checked for overflow (refused, never wrapped), and the product's
image is streamed to disk — the same file astropy writes, checksums and all."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_checksums
from weekly_cubes import weekly_cube

from fermipipe import merge
from fermipipe.compact_counts import compact
from fermipipe.errors import ToolError

INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A native gtbin CCUBE of a generated week (360×180×24 int32, ~20 k events)."""
    return weekly_cube(tmp_path_factory.mktemp("week"), 700)


def _map(path: Path, week: Path, data: np.ndarray, *, compact_form: bool = False) -> Path:
    """A copy of ``week`` (headers, GTI, EBOUNDS) whose image is ``data`` (its type sets
    BITPIX), written with checksums; with ``compact_form``, in its compact form."""
    with fits.open(week) as hdul:
        hdul[0].data = data
        hdul.writeto(path, checksum=True)
    if compact_form:
        return compact(path, path.with_name(path.stem + ".compact.fits"))
    return path


def _voxel(week: Path) -> int:
    """A flat index near the end of the cube (a late chunk of a dense add)."""
    return fits.getdata(week).size - 17


def _with(week: Path, dtype: str, changes: dict[int, int], *, base: bool = True) -> np.ndarray:
    """The week's counts (or zeros) in ``dtype`` with some voxels set."""
    image = fits.getdata(week).astype(dtype)
    if not base:
        image[...] = 0
    for index, value in changes.items():
        image.reshape(-1)[index] = value
    return image


def _no_scratch(folder: Path) -> bool:
    return not list(folder.glob(".*tmp*"))


@pytest.mark.parametrize("form", ["dense", "compact"])
def test_int32_sums_up_to_the_limit_and_refuses_beyond(
    week: Path, tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2**31 − 1 in a voxel is summed exactly; one count more is refused, naming the product,
    in a one-pass merge and in a running sum (which names the map and stays unchanged)."""
    monkeypatch.setattr(merge, "_STEP", 100_003)  # a dense add in many checked chunks
    v = _voxel(week)
    compact_form = form == "compact"
    a = _map(tmp_path / "a.fits", week, _with(week, "i4", {v: INT32_MAX - 5}))
    b = _map(tmp_path / "b.fits", week, _with(week, "i4", {v: 5}), compact_form=compact_form)
    c = _map(tmp_path / "c.fits", week, _with(week, "i4", {v: 6}), compact_form=compact_form)

    ok = merge.image_sum([a, b], tmp_path / "ok.fits")
    got = fits.getdata(ok.output)
    assert got.dtype == np.dtype(">i4") and int(got.reshape(-1)[v]) == INT32_MAX
    wide = fits.getdata(a).astype(np.int64) + fits.getdata(week).astype(np.int64)
    wide.reshape(-1)[v] = INT32_MAX
    assert np.array_equal(got, wide) and ok.counts_exact is True

    out = tmp_path / "out" / "sum.fits"
    with pytest.raises(ToolError, match="the summed counts overflow int32") as err:
        merge.image_sum([a, c], out)
    assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and _no_scratch(out.parent)

    running = merge.RunningSum(a)
    running.add(a)
    before = running.pixels.copy()  # type: ignore[union-attr]
    with pytest.raises(ToolError, match="the summed counts overflow int32") as err:
        running.add(c)
    assert str(c) in str(err.value)
    assert np.array_equal(running.pixels, before)  # all or nothing (chunks taken back)
    running.add(b)
    merge.image_sum([a, b], tmp_path / "run.fits", presummed=running)
    assert np.array_equal(fits.getdata(tmp_path / "run.fits"), got)


@pytest.mark.parametrize(
    ("dtype", "near", "step", "name"),
    [
        ("i2", -(2**15) + 100, -100, "int16"),  # the lower bound, with negative pixels
        ("i8", 2**63 - 1 - 100, 100, "int64"),  # 64-bit: a wrap-around, detected
        ("u1", 200, 55, "uint8"),  # BITPIX 8
    ],
)
@pytest.mark.parametrize("form", ["dense", "compact"])
def test_other_integer_types_are_summed_in_their_type(
    week: Path, tmp_path: Path, dtype: str, near: int, step: int, name: str, form: str
) -> None:
    v = _voxel(week)
    compact_form = form == "compact"
    a = _map(tmp_path / "a.fits", week, _with(week, dtype, {v: near}, base=False))
    b = _map(tmp_path / "b.fits", week, _with(week, dtype, {v: step}), compact_form=compact_form)
    sign = 1 if step > 0 else -1
    c = _map(
        tmp_path / "c.fits", week, _with(week, dtype, {v: step + sign}), compact_form=compact_form
    )
    running = merge.RunningSum(a)
    running.add(a)
    assert running.pixels.dtype == np.dtype(dtype).newbyteorder("=")  # type: ignore[union-attr]
    ok = merge.image_sum([a, b], tmp_path / "ok.fits")
    got = fits.getdata(ok.output)
    assert got.dtype == np.dtype(dtype).newbyteorder(">")
    assert int(got.reshape(-1)[v]) == near + step  # the type's very limit
    with pytest.raises(ToolError, match=f"overflow {name}"):
        merge.image_sum([a, c], tmp_path / "bad.fits")
    assert not (tmp_path / "bad.fits").exists()


def test_partial_sums_stay_int32_and_an_int64_part_is_range_checked(
    week: Path, tmp_path: Path
) -> None:
    """Parts are saved in the map's type; a part saved as int64 (an earlier version's) goes
    into the int32 sum only within range."""
    v = _voxel(week)
    a = _map(tmp_path / "a.fits", week, _with(week, "i4", {v: INT32_MAX - 5}))
    b = _map(tmp_path / "b.fits", week, _with(week, "i4", {v: 5}), compact_form=True)
    part = merge.partial_image_sum([a, b], tmp_path / "p.npz", first=a)
    with np.load(part) as npz:
        assert npz["image"].dtype == np.dtype("=i4")
        image = npz["image"]
    merge.image_sum([a, b], tmp_path / "parts.fits", partials=[part])
    merge.image_sum([a, b], tmp_path / "one.fits")
    assert np.array_equal(
        fits.getdata(tmp_path / "parts.fits"), fits.getdata(tmp_path / "one.fits")
    )

    inputs = np.array([str(a), str(b)])
    in_range = tmp_path / "wide-ok.npz"
    np.savez(in_range, image=image.astype(np.int64), **{merge._PART_INPUTS: inputs})
    merge.image_sum([a, b], tmp_path / "wide.fits", partials=[in_range])
    assert np.array_equal(fits.getdata(tmp_path / "wide.fits"), fits.getdata(tmp_path / "one.fits"))
    too_big = image.astype(np.int64)
    too_big.reshape(-1)[v] += 1
    bad = tmp_path / "wide-bad.npz"
    np.savez(bad, image=too_big, **{merge._PART_INPUTS: inputs})
    with pytest.raises(ToolError, match="overflow int32"):
        merge.image_sum([a, b], tmp_path / "x.fits", partials=[bad])


def test_the_accumulator_is_int32_and_no_full_size_copy_is_made(week: Path, tmp_path: Path) -> None:
    """An int32 sum holds one int32 image: no int64 accumulator, no conversion or byteswapped
    copy when it is written (traced numpy allocations)."""
    b = _map(tmp_path / "b.fits", week, fits.getdata(week), compact_form=True)
    nbytes = fits.getdata(week).nbytes  # the int32 image: 6.2 MB
    running = merge.RunningSum(week)
    running.add(week)
    running.add(b)
    assert running.pixels.dtype == np.dtype("=i4")  # type: ignore[union-attr]

    tracemalloc.start()
    merge.image_sum([week, b], tmp_path / "pre.fits", presummed=running)
    _, taken_over = tracemalloc.get_traced_memory()  # the running sum's image is reused
    tracemalloc.stop()
    tracemalloc.start()
    merge.image_sum([week, b], tmp_path / "one.fits")  # previous product + a compact week
    _, one_pass = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert taken_over < 0.25 * nbytes, taken_over
    assert one_pass < 1.3 * nbytes, one_pass  # int64 + astype used 3 × nbytes
    expected = fits.getdata(week).astype(np.int64) * 2
    assert np.array_equal(fits.getdata(tmp_path / "pre.fits"), expected)
    assert np.array_equal(fits.getdata(tmp_path / "one.fits"), expected)


def _cards(path: Path) -> list[list[str]]:
    """Every HDU's card images, CHECKSUM/DATASUM cut to their values (their comments hold
    the time of writing, and CHECKSUM covers the comments)."""
    out = []
    with fits.open(path) as hdul:
        for hdu in hdul:
            images = []
            for card in hdu.header.cards:
                if card.keyword == "DATASUM":
                    images.append(f"DATASUM {card.value}")
                elif card.keyword != "CHECKSUM":
                    images.append(card.image)
                else:
                    images.append("CHECKSUM")
            out.append(images)
    return out


def _data_units(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    with fits.open(path) as hdul:
        spans = [hdul.fileinfo(i) for i in range(len(hdul))]
    return [raw[s["datLoc"] : s["datLoc"] + s["datSpan"]] for s in spans]


@pytest.mark.parametrize("dtype", ["i4", "i2", "f4"])
def test_the_streamed_product_is_the_file_astropy_writes(
    week: Path, tmp_path: Path, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed write and astropy's writeto of the same sum: the same data bytes in every
    HDU, the same cards; checksums verify (fitsverify, astropy) and FILENAME is the name."""
    monkeypatch.setattr(merge, "_STEP", 100_003)  # many steps, one not a multiple of a block
    a = _map(tmp_path / "a.fits", week, fits.getdata(week).astype(dtype))
    b = _map(tmp_path / "b.fits", week, (fits.getdata(week) * 3).astype(dtype))
    streamed = merge.image_sum([a, b, a], tmp_path / "s" / "sum.fits").output
    monkeypatch.setattr(merge, "_streamable", lambda header, dtype: False)
    written = merge.image_sum([a, b, a], tmp_path / "w" / "sum.fits").output
    assert _data_units(streamed) == _data_units(written)
    assert _cards(streamed) == _cards(written)
    assert_checksums(streamed)
    assert fits.getheader(streamed)["FILENAME"] == "sum.fits"
    assert fits.getdata(streamed).dtype == np.dtype(dtype).newbyteorder(">")
    total = fits.getdata(week).astype(np.float64) * 5
    assert np.array_equal(fits.getdata(streamed), total)
    assert _no_scratch(streamed.parent)


def test_gzipped_and_truncated_dense_inputs(week: Path, tmp_path: Path) -> None:
    """A gzipped map is read through astropy (its offsets are not the file's), with the same
    sum; a map whose file ends inside its image is one line naming it."""
    import gzip
    import shutil

    packed = tmp_path / "week.fits.gz"
    with open(week, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    merge.image_sum([packed, week], tmp_path / "gz.fits")
    merge.image_sum([week, packed], tmp_path / "gz2.fits")
    expected = fits.getdata(week).astype(np.int64) * 2
    assert np.array_equal(fits.getdata(tmp_path / "gz.fits"), expected)
    assert np.array_equal(fits.getdata(tmp_path / "gz2.fits"), expected)

    cut = tmp_path / "cut.fits"
    cut.write_bytes(week.read_bytes()[: 2880 * 40])
    for inputs in ([cut, week], [week, cut]):
        with pytest.raises(ToolError) as err:
            merge.image_sum(inputs, tmp_path / "x.fits")
        assert str(cut) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "x.fits").exists() and _no_scratch(tmp_path)


def test_incremental_merge_equals_the_full_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """previous dense product + a new compact week (read alone, or presummed: the week in a
    running sum, the product added to it in read chunks) = a merge of all the weeks."""
    monkeypatch.setattr(merge, "_STEP", 65_537)
    weeks = [weekly_cube(tmp_path, w) for w in (700, 701, 702)]
    new = compact(weeks[2], tmp_path / "w702.compact.fits")
    previous = merge.image_sum(weeks[:2], tmp_path / "prev.fits").output
    full = fits.getdata(merge.image_sum(weeks, tmp_path / "full.fits").output)
    plain = merge.image_sum([previous, new], tmp_path / "plain.fits").output
    running = merge.RunningSum(previous)
    running.add(new)
    pre = merge.image_sum([previous, new], tmp_path / "pre.fits", presummed=running).output
    total = sum(int(fits.getdata(w).sum()) for w in weeks)
    assert int(full.sum()) == total > 30_000
    for product in (plain, pre):
        assert np.array_equal(fits.getdata(product), full)
        assert_checksums(product)


# ------------------------------------------------- a running sum's header facts


def _week_with(path: Path, week: Path, exposure: float) -> Path:
    """``week`` with its GTI EXPOSURE set to ``exposure``, in compact form (as the store
    holds weekly maps)."""
    with fits.open(week) as hdul:
        hdul["GTI"].header["EXPOSURE"] = exposure
        hdul.writeto(path, checksum=True)
    return compact(path, path.with_name(path.stem + ".compact.fits"))


def test_a_running_sum_gives_the_one_pass_product_without_reopening_its_maps(
    tmp_path: Path,
) -> None:
    """Maps folded in another order than the merge's (as files finish): the product equals a
    one-pass merge, data and cards — EXPOSURE summed in input order, although these values
    sum to another float in fold order — and the folded maps are not opened again: they are
    gone when the product is made (the first input, the template, stays)."""
    cubes = [weekly_cube(tmp_path, w) for w in (700, 701, 702, 703)]
    exposures = [1.0, 1e16, 1.0, 1.0]
    weeks = [_week_with(tmp_path / f"e{i}.fits", c, e) for i, (c, e) in enumerate(zip(cubes, exposures, strict=True))]  # fmt: skip
    one = merge.image_sum(weeks, tmp_path / "one" / "sum.fits").output
    folds = [2, 3, 0, 1]
    in_order = in_folds = 0.0
    for i, j in zip(range(4), folds, strict=True):
        in_order, in_folds = in_order + exposures[i], in_folds + exposures[j]
    assert in_order != in_folds  # the order of additions shows in the sum
    assert fits.getheader(one, "GTI")["EXPOSURE"] == in_order

    running = merge.RunningSum(weeks[folds[0]])
    for j in folds:
        running.add(weeks[j])
    for path in weeks[1:]:
        path.unlink()
    pre = merge.image_sum(weeks, tmp_path / "pre" / "sum.fits", presummed=running).output
    assert _data_units(pre) == _data_units(one)
    assert _cards(pre) == _cards(one)
    assert_checksums(pre)


def test_a_running_sum_beside_maps_read_at_the_end(tmp_path: Path) -> None:
    """An incremental merge: the previous product (first input, not folded), two new weeks
    folded (then removed) and one read at the end: the product of the same merge without a
    running sum, data and cards."""
    cubes = [weekly_cube(tmp_path, w) for w in (700, 701, 702, 703, 704)]
    weeks = [_week_with(tmp_path / f"e{i}.fits", c, 1000.0 + i / 3) for i, c in enumerate(cubes)]
    previous = merge.image_sum(weeks[:2], tmp_path / "prev.fits").output
    inputs = [previous, *weeks[2:]]
    plain = merge.image_sum(inputs, tmp_path / "plain" / "sum.fits").output
    running = merge.RunningSum(weeks[4])
    running.add(weeks[4])
    running.add(weeks[2])
    weeks[4].unlink()
    weeks[2].unlink()
    pre = merge.image_sum(inputs, tmp_path / "pre" / "sum.fits", presummed=running).output
    assert _data_units(pre) == _data_units(plain)
    assert _cards(pre) == _cards(plain)


def test_a_running_sum_on_another_grid_is_refused(week: Path, tmp_path: Path) -> None:
    """Maps folded against a first map of another grid (each checked against it) do not go
    into a merge whose first input differs: one line, no product."""
    other = tmp_path / "other.fits"
    with fits.open(week) as hdul:
        hdul[0].header["CRVAL1"] = 10.0
        hdul.writeto(other, checksum=True)
    running = merge.RunningSum(other)
    running.add(other)
    out = tmp_path / "out" / "sum.fits"
    with pytest.raises(ToolError, match="WCS differs from the first input: CRVAL1") as err:
        merge.image_sum([week, other], out, presummed=running)
    assert str(other) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()

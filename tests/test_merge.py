"""fermipipe.merge on real LAT products: counts maps made from the three ft1tiny parts must
sum to the Fermitools map of the whole file, grids are checked, GTIs are united, tree
merges run a real pairwise program, event lists are concatenated."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from pipeline_project import fits_equal

from fermipipe import merge, runner
from fermipipe.errors import ToolError
from fermipipe.fits.gti import Gti, read_gti

PY = sys.executable

#: A counts map "tool": bins an FT1 file on the grid of a template map the way gtbin does
#: (astropy WCS with origin 1, index floor(p - 0.5) on [0.5, n + 0.5); PROVENANCE §3) and
#: keeps the file's GTI with an EXPOSURE keyword (= its ONTIME here, no FT2).
CMAP_PROGRAM = textwrap.dedent(
    """
    import sys
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    events, template, out = sys.argv[1:4]
    with fits.open(template) as t, fits.open(events) as e:
        header = t[0].header.copy()
        wcs = WCS(header, naxis=2)
        data = e["EVENTS"].data
        x, y = wcs.wcs_world2pix(data["RA"], data["DEC"], 1)
        nx, ny = header["NAXIS1"], header["NAXIS2"]
        ok = (x >= 0.5) & (x < nx + 0.5) & (y >= 0.5) & (y < ny + 0.5)
        image = np.zeros((ny, nx), dtype=np.int32)
        np.add.at(image, (np.floor(y[ok] - 0.5).astype(int), np.floor(x[ok] - 0.5).astype(int)), 1)
        gti = e["GTI"].copy()
        gti.header["EXPOSURE"] = float(np.sum(gti.data["STOP"] - gti.data["START"]))
        gti.header["ONTIME"] = gti.header["EXPOSURE"]
        fits.HDUList([fits.PrimaryHDU(image, header), gti]).writeto(out, overwrite=True)
    """
)

#: A gtltsum-like pairwise program: infile1=… infile2=… outfile=… → primary images added.
PAIRSUM_PROGRAM = textwrap.dedent(
    """
    import sys
    from astropy.io import fits

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    with fits.open(args["infile1"]) as a, fits.open(args["infile2"]) as b:
        a[0].data = a[0].data + b[0].data
        a.writeto(args["outfile"], overwrite=True)
    """
)


@pytest.fixture(scope="module")
def part_maps(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Counts maps of ft1tiny0/1/2 on the grid of the evtbin CM2 reference."""
    folder = tmp_path_factory.mktemp("maps")
    tool = folder / "cmap.py"
    tool.write_text(CMAP_PROGRAM)
    maps = []
    for i in range(3):
        out = folder / f"part{i}.fits"
        events = shared_data / "evtbin" / f"ft1tiny{i}.fits"
        template = shared_data / "evtbin" / "outref" / "CM2.fits"
        subprocess.run([PY, tool, events, template, out], check=True)
        maps.append(out)
    return maps


def test_sum_of_part_maps_is_the_whole_map(
    part_maps: list[Path], shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged" / "sum.fits"
    info = merge.image_sum(part_maps, out)
    ref_path = shared_data / "evtbin" / "outref" / "CM2.fits"
    with fits.open(out, checksum=True) as got, fits.open(ref_path) as ref:
        # The Fermitools map of the whole file, pixel for pixel.
        assert np.array_equal(got[0].data, ref[0].data)
        assert got[0].data.dtype == ref[0].data.dtype
        assert int(got[0].data.sum()) > 300  # not trivially empty maps
        # GTI: union of the parts (touching at the cut times) = the whole file's GTI.
        assert read_gti(got["GTI"]) == read_gti(ref["GTI"])
        parts = [fits.getheader(p, "GTI") for p in part_maps]
        assert got["GTI"].header["EXPOSURE"] == pytest.approx(sum(h["EXPOSURE"] for h in parts))
        assert got["GTI"].header["ONTIME"] == pytest.approx(sum(h["ONTIME"] for h in parts))
        assert got[0].header["NMERGED"] == 3 and got[0].header["NLEFTOUT"] == 0
        for key in ("CTYPE1", "CRVAL1", "CDELT2", "CRPIX1"):
            assert got[0].header[key] == ref[0].header[key]
    assert info.inputs == 3


def test_left_out_files_are_recorded(part_maps: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "sum.fits"
    merge.image_sum(part_maps[:2], out, left_out={"ft1tiny2": "failed at select: exit code 1"})
    header = fits.getheader(out)
    assert header["NMERGED"] == 2 and header["NLEFTOUT"] == 1
    assert any("left out ft1tiny2: failed at select" in str(h) for h in header["HISTORY"])


def test_a_different_grid_is_refused(part_maps: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "shifted.fits"
    with fits.open(part_maps[1]) as hdul:
        hdul[0].header["CRVAL1"] = hdul[0].header["CRVAL1"] + 0.1
        hdul.writeto(other)
    out = tmp_path / "sum.fits"
    with pytest.raises(ToolError, match="CRVAL1") as err:
        merge.image_sum([part_maps[0], other], out)
    assert "shifted.fits" in str(err.value)
    assert not out.exists()  # nothing half-written
    assert list(tmp_path.glob(".*tmp*")) == []


def test_different_ebounds_are_refused(shared_data: Path, tmp_path: Path) -> None:
    cube = shared_data / "evtbin" / "outref" / "test.ccube"
    other = tmp_path / "other.ccube"
    with fits.open(cube) as hdul:
        hdul["EBOUNDS"].data["E_MAX"][-1] *= 1.01
        hdul.writeto(other)
    with pytest.raises(ToolError, match="EBOUNDS"):
        merge.image_sum([cube, other], tmp_path / "sum.ccube")
    merge.image_sum([cube, cube], tmp_path / "twice.ccube")
    with fits.open(cube) as a, fits.open(tmp_path / "twice.ccube") as b:
        assert np.array_equal(b[0].data, 2 * a[0].data)
        assert np.array_equal(b["EBOUNDS"].data, a["EBOUNDS"].data)


def test_healpix_skymaps_are_summed(shared_data: Path, tmp_path: Path) -> None:
    hpx = shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_counts_cube_hpx.fits.gz"
    out = tmp_path / "hpx.fits"
    merge.image_sum([hpx, hpx, hpx], out)
    with fits.open(hpx) as a, fits.open(out) as b:
        channels = [c for c in a["SKYMAP"].columns.names if c.startswith("CHANNEL")]
        assert len(channels) == 17
        for c in channels:
            assert np.array_equal(b["SKYMAP"].data[c], 3 * a["SKYMAP"].data[c])
        assert b["SKYMAP"].header["NSIDE"] == 32
        assert b["GTI"].header["EXPOSURE"] == pytest.approx(3 * a["GTI"].header["EXPOSURE"])
    coarse = tmp_path / "coarse.fits"
    with fits.open(hpx) as hdul:
        hdul["SKYMAP"].header["NSIDE"] = 16
        hdul.writeto(coarse)
    with pytest.raises(ToolError, match="NSIDE"):
        merge.image_sum([hpx, coarse], tmp_path / "bad.fits")


def test_image_sum_streams(shared_data: Path, tmp_path: Path) -> None:
    """Peak memory does not grow with the number of inputs (one map at a time)."""
    cube = shared_data / "evtbin" / "outref" / "test.ccube"  # 100×100×100 int32 = 4 MB

    def peak(n: int) -> int:
        tracemalloc.start()
        merge.image_sum([cube] * n, tmp_path / f"s{n}.ccube")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    two, twelve = peak(2), peak(12)
    assert twelve < 1.3 * two, (two, twelve)
    assert twelve < 6 * 4_000_000


def test_tree_levels_pair_in_order(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.fits" for i in range(5)]
    jobs, upper = merge.next_level(paths, tmp_path, "lt", 1)
    assert [(j.left.name, j.right.name) for j in jobs] == [
        ("0.fits", "1.fits"),
        ("2.fits", "3.fits"),
    ]
    assert upper == [jobs[0].output, jobs[1].output, paths[4]]
    jobs2, upper2 = merge.next_level(upper, tmp_path, "lt", 2)
    assert len(jobs2) == 1 and upper2 == [jobs2[0].output, paths[4]]
    assert merge.next_level([paths[0]], tmp_path, "lt", 1) == ([], [paths[0]])


def test_hierarchical_merge_with_a_real_pairwise_tool(
    part_maps: list[Path], tmp_path: Path
) -> None:
    """Five inputs → three levels of pairs, each level's pairs run in parallel."""
    tool = tmp_path / "pairsum"
    tool.write_text(f"#!{PY}\n{PAIRSUM_PROGRAM}")
    tool.chmod(0o755)
    inputs = [*part_maps, *part_maps[:2]]
    ctx = runner.open_run("tree-test", workers=2, scratch=tmp_path / "s", log_dir=tmp_path / "logs")
    level, depth, invocations = list(inputs), 1, 0
    try:
        while len(level) > 1:
            jobs, level = merge.next_level(level, tmp_path, "tree", depth)
            invs = [
                merge.pair_invocation(j, str(tool), "fermitools", step="merge:tree") for j in jobs
            ]
            assert all(inv.argv is not None and "mode=h" in inv.argv for inv in invs)
            with ThreadPoolExecutor(len(invs)) as pool:
                results = list(
                    pool.map(
                        lambda inv: runner.run_invocation(inv, pool=ctx.pool, scratch=ctx.scratch),
                        invs,
                    )
                )
            assert [r.status for r in results] == ["ok"] * len(invs)
            invocations += len(invs)
            depth += 1
        assert ctx.pool.peak == 2  # the two pairs of level 1 ran side by side
    finally:
        runner.close_run("tree-test")
    assert invocations == 4 and depth == 4
    final = tmp_path / "final" / "tree.fits"
    merge.finish(level[0], final, {"x": "empty: no events"}, len(inputs), "pairsum tree merge")
    expected = sum(fits.getdata(p).astype(np.int64) for p in inputs)
    with fits.open(final) as hdul:
        assert np.array_equal(hdul[0].data, expected)
        assert hdul[0].header["NMERGED"] == 5 and hdul[0].header["NLEFTOUT"] == 1


def test_native_event_merge_unites_gtis(shared_data: Path, tmp_path: Path) -> None:
    parts = [shared_data / "evtbin" / f"ft1tiny{i}.fits" for i in range(3)]
    out = tmp_path / "merged_ft1.fits"
    info = merge.native_event_merge(parts, out, left_out={})
    assert info.inputs == 3
    with fits.open(out) as got, fits.open(shared_data / "evtbin" / "ft1tiny.fits") as whole:
        assert len(got["EVENTS"].data) == 396 + 512 + 644
        assert np.array_equal(
            np.sort(got["EVENTS"].data["TIME"]), np.sort(whole["EVENTS"].data["TIME"])
        )
        assert read_gti(got["GTI"]) == read_gti(whole["GTI"])
        assert got[0].header["NMERGED"] == 3
        assert got[0].header.get("FILENAME", out.name) == out.name
    assert isinstance(read_gti(fits.open(out)["GTI"]), Gti)


def test_ftmerge_is_chosen_only_for_the_fermitools_engine() -> None:
    assert merge.use_ftmerge("native") is False
    argv = merge.ftmerge_argv(
        [Path("/a b.fits")], Path("/o.fits"), Path("/tmp/fermipipe-test.list")
    )
    assert argv[0] == "ftmerge" and argv[1] == "infile=@/tmp/fermipipe-test.list"
    assert Path("/tmp/fermipipe-test.list").read_text() == "/a b.fits\n"
    Path("/tmp/fermipipe-test.list").unlink()


def _summed_in_parts(inputs: list[Path], parts: int, folder: Path) -> list[Path]:
    runs = merge.split_parts(inputs, parts)
    assert [p for run in runs for p in run] == inputs and len(runs) == parts
    return [
        merge.partial_image_sum(run, folder / f"part{i}.npz", first=inputs[0])
        for i, run in enumerate(runs)
    ]


@pytest.mark.parametrize("parts", [2, 3])
def test_image_sum_from_partial_sums_equals_one_pass(
    part_maps: list[Path], tmp_path: Path, parts: int
) -> None:
    """Parts summed apart (in parallel in the flow) give the same product, keywords included
    (EXPOSURE/ONTIME are still added input by input, in order)."""
    inputs = [*part_maps, *part_maps[::-1], part_maps[1]]  # 7 maps
    one_pass = tmp_path / "one.fits"
    merge.image_sum(inputs, one_pass)
    partials = _summed_in_parts(inputs, parts, tmp_path)
    in_parts = tmp_path / "parts.fits"
    merge.image_sum(inputs, in_parts, partials=partials)
    fits_equal(in_parts, one_pass)
    expected = sum(fits.getdata(p).astype(np.int64) for p in inputs)
    assert np.array_equal(fits.getdata(in_parts), expected)


def test_healpix_partial_sums(shared_data: Path, tmp_path: Path) -> None:
    hpx = shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_counts_cube_hpx.fits.gz"
    inputs = [hpx] * 5
    merge.image_sum(inputs, tmp_path / "one.fits")
    partials = _summed_in_parts(inputs, 2, tmp_path)
    merge.image_sum(inputs, tmp_path / "parts.fits", partials=partials)
    fits_equal(tmp_path / "parts.fits", tmp_path / "one.fits")


def test_partial_sums_refuse_other_grids_and_wrong_cover(
    part_maps: list[Path], tmp_path: Path
) -> None:
    other = tmp_path / "shifted.fits"
    with fits.open(part_maps[0]) as hdul:
        hdul[0].header["CRVAL1"] += 1.0
        hdul.writeto(other)
    with pytest.raises(ToolError, match=r"CRVAL1.*") as err:
        merge.partial_image_sum([part_maps[1], other], tmp_path / "p.npz", first=part_maps[0])
    assert "shifted.fits" in str(err.value)
    partials = _summed_in_parts(part_maps, 2, tmp_path)
    with pytest.raises(ToolError, match="do not cover exactly the inputs"):
        merge.image_sum(part_maps[:2], tmp_path / "x.fits", partials=partials)
    with pytest.raises(ToolError, match="do not cover exactly the inputs"):
        merge.image_sum(part_maps, tmp_path / "x.fits", partials=partials[::-1])
    assert not (tmp_path / "x.fits").exists()


def test_split_parts_keeps_order_and_balances() -> None:
    items = [Path(str(i)) for i in range(10)]
    assert [len(r) for r in merge.split_parts(items, 3)] == [3, 4, 3]
    assert merge.split_parts(items, 20) == [[p] for p in items]
    assert merge.split_parts(items, 0) == [items]


def test_flow_sums_image_parts_as_parallel_tasks(
    part_maps: list[Path], tmp_path: Path, prefect_server: dict[str, str]
) -> None:
    """In the work subflow an image sum of many maps runs as one merge-part task per
    worker, then the combining merge; the product equals a one-pass sum."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    from fermipipe.plan import MergePlan
    from flows.products import MIN_PER_PART, parallel_image_sum

    inputs = part_maps * 3  # 9 maps: two parts of at least MIN_PER_PART with 2 workers
    assert len(inputs) >= 2 * MIN_PER_PART
    plan = MergePlan("cm", "cmap", tmp_path / "out" / "cm.fits", "image_sum")
    ctx = runner.open_run("parts", workers=2, scratch=tmp_path / "s", log_dir=tmp_path / "l")

    @flow(name="image-sum-parts")
    def run() -> float:
        return parallel_image_sum(plan, inputs, {}, runner.run_spec(ctx))

    try:
        state = run(return_state=True)
    finally:
        runner.close_run("parts")
    assert state.is_completed() and state.result() > 0
    merge.image_sum(inputs, tmp_path / "one.fits")
    fits_equal(plan.output, tmp_path / "one.fits")
    assert not (tmp_path / "s" / "merge-cm").exists()  # the parts are removed
    expected = ["merge-cm", "merge-cm-part0", "merge-cm-part1"]
    with get_client(sync_client=True) as client:
        for _ in range(100):  # task runs reach the server as events: allow them a moment
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                ),
                task_run_filter=TaskRunFilter(),
            )
            names = sorted(r.name for r in runs)
            if names == expected:
                break
            time.sleep(0.2)
    assert names == expected


# ------------------------------------------------------- compact inputs and subtract


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Native gtbin cubes of three consecutive generated weeks, a second version of the
    middle one (another seed: other events and GTIs in the same week), and their compact
    forms."""
    from weekly_cubes import weekly_cube

    from fermipipe.compact_counts import compact

    folder = tmp_path_factory.mktemp("weeks")
    cubes = {
        "w0": weekly_cube(folder, 700),
        "w1": weekly_cube(folder, 701),
        "w2": weekly_cube(folder, 702),
        "w1new": weekly_cube(folder, 701, seed=9),
    }
    for name, path in list(cubes.items()):
        cubes[f"{name}c"] = compact(path, folder / f"{name}.compact.fits")
    return cubes


def _bytes_but_checksums(path: Path) -> bytes:
    """The file's bytes with the CHECKSUM/DATASUM cards blanked (their comments hold the
    time of writing)."""
    raw = bytearray(path.read_bytes())
    with fits.open(path) as hdul:
        spans = [(hdul.fileinfo(i)["hdrLoc"], hdul.fileinfo(i)["datLoc"]) for i in range(len(hdul))]
    for start, stop in spans:
        for at in range(start, stop, 80):
            if raw[at : at + 8] in (b"CHECKSUM", b"DATASUM "):
                raw[at : at + 80] = b" " * 80
    return bytes(raw)


def test_compact_inputs_sum_to_the_same_product(weeks: dict[str, Path], tmp_path: Path) -> None:
    """Compact maps (first, middle, last; alone or in partial sums) give the product the
    expanded maps give, bit for bit."""
    dense = merge.image_sum(
        [weeks["w0"], weeks["w1"], weeks["w2"]], tmp_path / "dense" / "sum.fits"
    )
    mixed = merge.image_sum(
        [weeks["w0c"], weeks["w1"], weeks["w2c"]], tmp_path / "mixed" / "sum.fits"
    )
    compact = merge.image_sum(
        [weeks["w0c"], weeks["w1c"], weeks["w2c"]], tmp_path / "compact" / "sum.fits"
    )
    expected = _bytes_but_checksums(dense.output)
    assert _bytes_but_checksums(mixed.output) == expected
    assert _bytes_but_checksums(compact.output) == expected
    fits_equal(compact.output, dense.output)
    with fits.open(compact.output, checksum=True) as hdul:
        assert all(h.verify_checksum() == 1 and h.verify_datasum() == 1 for h in hdul)
        total = sum(int(fits.getdata(weeks[w]).sum()) for w in ("w0", "w1", "w2"))
        assert int(hdul[0].data.sum()) == total > 10_000
        assert hdul[0].data.dtype.name == "int32" and compact.counts_exact is True
    inputs = [weeks["w0c"], weeks["w1"], weeks["w2c"], weeks["w1c"]]
    partials = _summed_in_parts(inputs, 2, tmp_path)
    merge.image_sum(inputs, tmp_path / "parts" / "sum4.fits", partials=partials)
    merge.image_sum([weeks[w] for w in ("w0", "w1", "w2", "w1")], tmp_path / "sum4.fits")
    assert _bytes_but_checksums(tmp_path / "parts" / "sum4.fits") == _bytes_but_checksums(
        tmp_path / "sum4.fits"
    )


def test_subtract_replaces_a_changed_week(weeks: dict[str, Path], tmp_path: Path) -> None:
    """previous product − old week + new week = the full merge with the new week: counts and
    GTI exactly, EXPOSURE to float64 rounding, time span the same."""
    previous = merge.image_sum([weeks["w0"], weeks["w1c"], weeks["w2c"]], tmp_path / "prev.fits")
    full = merge.image_sum([weeks["w0c"], weeks["w1newc"], weeks["w2"]], tmp_path / "full.fits")
    for old in ("w1", "w1c"):  # the old week dense or compact
        updated = merge.image_sum(
            [previous.output, weeks["w1newc"]], tmp_path / f"upd-{old}.fits", subtract=[weeks[old]]
        )
        with fits.open(updated.output) as got, fits.open(full.output) as ref:
            assert np.array_equal(got[0].data, ref[0].data)
            assert got[0].data.dtype == ref[0].data.dtype
            assert read_gti(got["GTI"]) == read_gti(ref["GTI"])
            assert got["GTI"].header["ONTIME"] == ref["GTI"].header["ONTIME"]
            assert got["GTI"].header["EXPOSURE"] == pytest.approx(
                ref["GTI"].header["EXPOSURE"], rel=1e-13
            )
            for key in ("TSTART", "TSTOP", "DATE-OBS", "DATE-END"):
                assert got["GTI"].header[key] == ref["GTI"].header[key], key
        assert updated.counts_exact is True
    with fits.open(weeks["w1"]) as a, fits.open(weeks["w1new"]) as b:
        assert not np.array_equal(a[0].data, b[0].data)  # the week did change
        assert read_gti(a["GTI"]) != read_gti(b["GTI"])


def test_subtract_refuses_what_it_cannot_do_exactly(weeks: dict[str, Path], tmp_path: Path) -> None:
    previous = merge.image_sum([weeks["w0c"], weeks["w1c"]], tmp_path / "prev.fits").output
    out = tmp_path / "out.fits"
    with pytest.raises(ToolError, match="negative counts") as err:
        merge.image_sum([previous], out, subtract=[weeks["w2c"]])  # never summed in
    assert str(weeks["w2c"]) in str(err.value)
    with pytest.raises(ToolError, match="first start"):
        merge.image_sum([previous], out, subtract=[weeks["w0c"]])  # span unknown
    with pytest.raises(ToolError, match="last stop"):
        merge.image_sum([previous], out, subtract=[weeks["w1"]])
    merge.image_sum([previous, weeks["w1new"]], out, subtract=[weeks["w1"]])  # replaced: fine
    assert out.exists() and list(tmp_path.glob(".*tmp*")) == []


def _float_map(path: Path, template: Path, image: np.ndarray) -> Path:
    with fits.open(template) as hdul:
        hdul[0].data = image.astype(np.float32)
        hdul.writeto(path, checksum=True)
    return path


def test_float32_counts_are_exact_up_to_2_to_the_24(weeks: dict[str, Path], tmp_path: Path) -> None:
    """Integer counts in float32 maps: sums and subtractions exact up to 2^24 per pixel;
    beyond, a sum is flagged inexact and a subtraction refused."""
    image = fits.getdata(weeks["w0"]).astype(np.float64)
    big = image.copy()
    big.reshape(-1)[123] = 2.0**24 - 2  # the largest counts are exact...
    a = _float_map(tmp_path / "a.fits", weeks["w0"], big)
    b = _float_map(tmp_path / "b.fits", weeks["w1"], fits.getdata(weeks["w1"]))
    c = _float_map(tmp_path / "c.fits", weeks["w2"], fits.getdata(weeks["w2"]))
    ok = merge.image_sum([a, b, c], tmp_path / "abc.fits")
    assert ok.counts_exact is True
    back = merge.image_sum([ok.output], tmp_path / "ac.fits", subtract=[b])  # b: the middle week
    expected = (big + fits.getdata(weeks["w2"])).astype(np.float32)
    assert np.array_equal(fits.getdata(back.output), expected)
    assert fits.getdata(back.output).max() == 2.0**24 - 2 + fits.getdata(weeks["w2"]).flat[123]
    over = merge.image_sum([a, a], tmp_path / "aa.fits")  # ...their double is not
    assert over.counts_exact is False
    with pytest.raises(ToolError, match="16777216"):
        merge.image_sum([over.output], tmp_path / "x.fits", subtract=[a])
    half = _float_map(tmp_path / "half.fits", weeks["w1"], fits.getdata(weeks["w1"]) + 0.5)
    with pytest.raises(ToolError, match="non-integer") as err:
        merge.image_sum([ok.output], tmp_path / "x.fits", subtract=[half])
    assert "half.fits" in str(err.value)
    assert not (tmp_path / "x.fits").exists()

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

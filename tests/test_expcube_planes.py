"""Energy-parallel gtexpcube2 (fermipipe.expcube_planes, tasks.post.run_post_planes): one run
per energy plane, stacked, equals one run of the full grid — data bit for bit, header cards
image for image (DATE/CHECKSUM/DATASUM aside).

The per-plane runs are real processes: a ``gtexpcube2`` executable in a temporary Fermitools
installation (the layout :func:`fermipipe.fermitools.locate` recognises, put first on PATH by
the run's environment) that runs ``python -m fermipipe.native gtexpcube2 "$@"`` — the real
Fermitools' command line and files, without the Fermitools.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_project import REPO, make_project, run_flow

from fermipipe.expcube_planes import (
    full_plane_energies,
    plane_runs,
    single_plane_params,
    stack_planes,
)
from fermipipe.fits.table import FitsFile
from fermipipe.native import run_tool
from fermipipe.native.gtexpcube2 import plane_energies

pytestmark = pytest.mark.timeout(300)
VOLATILE = {"DATE", "CHECKSUM", "DATASUM"}
SAMPLE_CALDB = REPO / "data" / "sample" / "caldb"


def assert_same_product(ours: Path, single: Path) -> None:
    """Every HDU: header card images in order (volatile ones aside) and data bytes."""
    with FitsFile(ours) as a, FitsFile(single) as b:
        assert [h.extname for h in a.hdus] == [h.extname for h in b.hdus]
        for x, y in zip(a.hdus, b.hdus, strict=True):
            cx = [str(c) for c in x.header.cards if c.keyword not in VOLATILE]
            cy = [str(c) for c in y.header.cards if c.keyword not in VOLATILE]
            assert cx == cy, x.extname
            assert a.data_bytes(x.index).tobytes() == b.data_bytes(y.index).tobytes(), x.extname


# ---------------------------------------------------------------------- the plane runs


@pytest.mark.parametrize(
    "energy_params",
    [
        {"ebinalg": "LOG", "emin": "100", "emax": "1000000", "enumbins": "24"},  # mission
        {"ebinalg": "LOG", "emin": "100", "emax": "316227.76601683797", "enumbins": "28",
         "bincalc": "CENTER"},  # the existing tool's HEALPix config
        {"ebinalg": "LOG", "emin": "30", "emax": "500000", "enumbins": "17", "edisp_bins": "2"},
    ],
)  # fmt: skip
def test_each_run_makes_exactly_one_plane_of_the_full_run(energy_params: dict[str, str]) -> None:
    params = {"infile": "lt.fits", "cmap": "none", "irfs": "P8R3_SOURCE_V3", **energy_params}
    energies = full_plane_energies(params)
    assert len(set(energies)) == len(energies) > 10
    for energy in energies:
        one = single_plane_params(params, energy)
        assert one["enumbins"] == "1" and one["bincalc"] == "CENTER"
        assert one["irfs"] == "P8R3_SOURCE_V3" and one["cmap"] == "none"
        # what the tool computes from the strings it is given (the native tool's own code)
        p = {**one, "emin": float(one["emin"]), "emax": float(one["emax"]), "enumbins": 1,
             "edisp_bins": 0, "ebinfile": "NONE"}  # fmt: skip
        assert plane_energies(p, None) == [energy]
        assert float(one["emin"]) < energy < float(one["emax"])


def _single_and_stacked(tmp_path: Path, params: dict[str, Any]) -> tuple[Path, Path]:
    single = tmp_path / "single.fits"
    run_tool("gtexpcube2", {**params, "outfile": str(single)})
    runs = plane_runs(params, tmp_path)
    for run in runs:
        run_tool("gtexpcube2", run.params)
    stacked = stack_planes([Path(r.params["outfile"]) for r in runs], tmp_path / "stacked.fits")
    return single, stacked


@pytest.fixture(scope="module")
def ltcube(shared_data: Path) -> Path:
    return shared_data / "fermitools-2.4" / "w323_ltcube_z90.fits.gz"


def test_stacked_wcs_edge_equals_a_single_run(tmp_path: Path, ltcube: Path, caldb: Path) -> None:
    params = {"infile": str(ltcube), "cmap": "none", "irfs": "P8R3_SOURCE_V3", "evtype": "3",
              "nxpix": "36", "nypix": "18", "binsz": "10", "coordsys": "GAL", "xref": "0",
              "yref": "0", "axisrot": "0", "proj": "AIT", "ebinalg": "LOG", "emin": "100",
              "emax": "1000000", "enumbins": "8", "edisp_bins": "1", "caldb": str(caldb)}  # fmt: skip
    assert_same_product(*_single_and_stacked(tmp_path, params))


def test_stacked_healpix_center_equals_a_single_run(
    tmp_path: Path, ltcube: Path, caldb: Path
) -> None:
    params = {"infile": str(ltcube), "cmap": "hpx", "irfs": "P8R3_SOURCE_V3", "evtype": "3",
              "hpx_ordering_scheme": "RING", "hpx_order": "3", "coordsys": "GAL",
              "ebinalg": "LOG", "emin": "100", "emax": "100000", "enumbins": "12",
              "bincalc": "CENTER", "caldb": str(caldb)}  # fmt: skip
    assert_same_product(*_single_and_stacked(tmp_path, params))


def test_a_run_that_makes_two_planes_is_refused(tmp_path: Path, ltcube: Path, caldb: Path) -> None:
    from fermipipe.errors import ToolError

    two = tmp_path / "two.fits"
    run_tool("gtexpcube2", {"infile": str(ltcube), "cmap": "hpx", "irfs": "P8R3_SOURCE_V3",
                            "evtype": "3", "hpx_order": "1", "ebinalg": "LOG", "emin": "100",
                            "emax": "1000", "enumbins": "1", "outfile": str(two),
                            "caldb": str(caldb)})  # fmt: skip
    with pytest.raises(ToolError, match="made 2 planes, not 1"):
        stack_planes([two], tmp_path / "out.fits")


# ---------------------------------------------------------------------- through the flow


def fake_fermitools(prefix: Path, caldb: Path) -> Path:
    """A Fermitools installation whose gtexpcube2 is the native one behind the real tool's
    command line (gtselect exists only so that the installation is recognised)."""
    fermi = prefix / "share" / "fermitools"
    (fermi / "syspfiles").mkdir(parents=True)
    (fermi / "data").mkdir()
    (fermi / "data" / "caldb").symlink_to(caldb)  # the install's CALDB ($CALDB of its env)
    (prefix / "bin").mkdir()
    probe = prefix / "bin" / "gtselect"
    probe.write_text("#!/bin/sh\nexit 1\n")
    exe = prefix / "bin" / "gtexpcube2"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fermipipe.native gtexpcube2 "$@"\n')
    for path in (probe, exe):
        path.chmod(0o755)
    return prefix


def test_fermitools_gtexpcube2_post_step_runs_per_plane_and_stacks(
    tmp_path: Path, prefect_server: Any
) -> None:
    config = make_project(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["fermitools"] = {"prefix": str(fake_fermitools(tmp_path / "ft", SAMPLE_CALDB))}
    cfg["post_processing"] = [
        {
            "name": "expcube",
            "tool": "gtexpcube2",
            "engine": "fermitools",
            "inputs": {"infile": "{ltcube}", "cmap": "{ccube}"},
            # EDGE planes from the counts cube's EBOUNDS (4 bins → 5 planes) plus edisp_bins
            "params": {
                "irfs": "SYNTH_SOURCE_V1",
                "evtype": 3,
                "bincalc": "EDGE",
                "edisp_bins": 1,
            },  # fmt: skip
            "outputs": {"expcube": "expcube.fits"},
        }
    ]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    state, summary = run_flow(config, tmp_path / "summary.json")
    assert state.is_completed(), summary
    (post,) = summary["post"]
    assert post["status"] == "ok" and post["cpu_seconds"] > 0, post
    products = tmp_path / "products"
    stacked = products / "expcube.fits"
    # The flow ran one process per plane: their log lines name each plane.
    log = "\n".join(p.read_text() for p in (tmp_path / "products" / "logs").rglob("*"))
    planes = len(full_plane_energies({"infile": "x", "cmap": str(products / "example_ccube.fits"),
                                      "bincalc": "EDGE", "edisp_bins": "1",
                                      "irfs": "SYNTH_SOURCE_V1"}))  # fmt: skip
    assert planes == 4 + 1 + 2
    for k in range(planes):
        assert f"expcube[plane {k}]" in log
    single = tmp_path / "single.fits"
    run_tool(
        "gtexpcube2",
        {"infile": str(products / "example_ltcube.fits"), "cmap": str(products / "example_ccube.fits"),
         "irfs": "SYNTH_SOURCE_V1", "evtype": 3, "bincalc": "EDGE", "edisp_bins": 1,
         "outfile": str(single), "caldb": str(SAMPLE_CALDB)},
    )  # fmt: skip
    assert_same_product(stacked, single)
    with FitsFile(single) as f:
        assert int(f.hdu(0).header["NAXIS3"]) == planes

"""Native hpx_divide: a native gtbin HEALPIX count map of the real 2FHL events divided by the
real gtexpcube2 HEALPix exposure (nside 32 RING GAL, 12 LOG planes 100 MeV–100 GeV,
bincalc=CENTER; PROVENANCE.md)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify
from native_cli import run_native

from fermipipe.errors import ToolError
from fermipipe.native import gtbin, hpx_divide

HPX = {"algorithm": "HEALPIX", "hpx_ordering_scheme": "RING", "hpx_order": 5, "coordsys": "GAL"}
HPX |= {"ebinalg": "LOG", "emin": 100, "emax": 100000, "enumbins": 12, "scfile": "NONE"}
CHANGED = {"NAXIS1", "CHECKSUM", "DATASUM"}  # SKYMAP cards the division rewrites (+TFORM/TUNIT)


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("hpxdiv")
    events = shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_events.fits.gz"

    def counts(name: str, **change: object) -> Path:
        out = d / f"{name}.fits"
        params = {"evfile": str(events), "outfile": str(out), **HPX, **change}
        gtbin.run({k: str(v) for k, v in params.items()})
        return out

    return {
        "dir": d,
        "counts": counts,
        "ring5": counts("ring5"),
        "exposure": shared_data
        / "fermitools-2.4"
        / "expcube_hpx_ring5_gal_P8R3_SOURCE_V3_center.fits.gz",
    }


def _columns(path: Path, ext: str) -> np.ndarray:
    with fits.open(path) as h:
        return np.column_stack([h[ext].data[c] for c in h[ext].columns.names]).astype(float)


def test_flux_is_counts_over_exposure(inputs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "flux.fits"
    outcome = hpx_divide.run(
        {"counts": str(inputs["ring5"]), "exposure": str(inputs["exposure"]), "outfile": str(out)}
    )
    assert outcome.outputs == [str(out)]
    counts = _columns(inputs["ring5"], "SKYMAP")
    exposure = _columns(inputs["exposure"], "HPXEXPOSURES")
    assert counts.shape == exposure.shape == (12288, 12)
    assert counts.sum() > 10000 and np.all(exposure > 0)
    flux = _columns(out, "SKYMAP")
    assert flux.tobytes() == (counts / exposure).tobytes()
    with fits.open(out) as a, fits.open(inputs["ring5"]) as b:
        assert [h.name for h in a] == [h.name for h in b]
        sky, ref = a["SKYMAP"].header, b["SKYMAP"].header
        for key in ref:
            if key in CHANGED or key.startswith("TFORM") or key == "HISTORY":
                continue
            assert sky[key] == ref[key], key
        assert [sky[f"TFORM{i}"] for i in range(1, 13)] == ["D"] * 12
        assert {sky[f"TUNIT{i}"] for i in range(1, 13)} == {"ph/cm2/s"}
        for name in ("EBOUNDS", "GTI"):
            assert a[name].data.tobytes() == b[name].data.tobytes()
            cards = [
                [c.image for c in x[name].header.cards if c.keyword not in CHANGED] for x in (a, b)
            ]
            assert cards[0] == cards[1], name
        assert any("hpx_divide" in str(v) for v in a[0].header["HISTORY"])
    assert_fitsverify(out)


def test_zero_exposure_gives_zero(inputs: dict[str, Any], tmp_path: Path) -> None:
    """The real exposure with the southern Galactic hemisphere's planes 10–12 set to 0 (the
    2FHL events, > 50 GeV, are all in the last plane)."""
    edited = tmp_path / "exposure_holes.fits"
    with fits.open(inputs["exposure"]) as h:
        _, lat = hp.pix2ang(32, np.arange(12288), lonlat=True)
        south = lat < 0
        for c in ("ENERGY10", "ENERGY11", "ENERGY12"):
            h["HPXEXPOSURES"].data[c][south] = 0.0
        h.writeto(edited)
    out = tmp_path / "flux.fits"
    res = run_native("hpx_divide", str(inputs["ring5"]), str(edited), str(out))
    assert res.returncode == 0, res.stderr
    counts = _columns(inputs["ring5"], "SKYMAP")
    exposure = _columns(edited, "HPXEXPOSURES")
    zero = exposure == 0
    assert zero.sum() == 3 * south.sum() > 0 and counts[zero].sum() > 0
    flux = _columns(out, "SKYMAP")
    assert np.all(flux[zero] == 0)
    assert flux[~zero].tobytes() == (counts[~zero] / exposure[~zero]).tobytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hpx_ordering_scheme": "NESTED"}, "ORDERING differs: counts NESTED, exposure RING"),
        ({"hpx_order": 6}, "NSIDE differs: counts 64, exposure 32"),
        ({"coordsys": "CEL"}, "COORDSYS differs"),
        ({"enumbins": 11}, "counts have 11 energy planes, exposure 12"),
        ({"emin": 200}, "not the centres of the counts energy bins"),
    ],
)
def test_mismatches_are_one_line(
    inputs: dict[str, Any], change: dict[str, object], message: str
) -> None:
    name = "_".join(f"{k}{v}" for k, v in change.items())
    counts = inputs["counts"](name, **change)
    out = inputs["dir"] / f"flux_{name}.fits"
    res = run_native("hpx_divide", str(counts), str(inputs["exposure"]), str(out))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert not out.exists()


def test_not_a_healpix_map_and_edge_planes(inputs: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="no SKYMAP"):
        hpx_divide.run(
            {
                "counts": str(
                    inputs["exposure"].parent / "expcube_ltcube_phi2_P8R3_SOURCE_V3_car_cel.fits.gz"
                ),
                "exposure": str(inputs["exposure"]),
                "outfile": str(tmp_path / "x.fits"),
            }
        )
    # Swapped arguments: the exposure file has no CHANNEL columns.
    with pytest.raises(ToolError, match="are not CHANNEL1..n"):
        hpx_divide.run(
            {
                "counts": str(inputs["exposure"]),
                "exposure": str(inputs["ring5"]),
                "outfile": str(tmp_path / "x.fits"),
            }
        )
    existing = tmp_path / "exists.fits"
    shutil.copy(inputs["ring5"], existing)
    params = {"counts": str(inputs["ring5"]), "exposure": str(inputs["exposure"])}
    with pytest.raises(ToolError, match="clobber=no"):
        hpx_divide.run({**params, "outfile": str(existing), "clobber": "no"})

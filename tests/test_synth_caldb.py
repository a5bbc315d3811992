"""The synthetic CALDB (fermipipe.synth_caldb): the layout of the real P8R3_SOURCE_V3 files
(shared CALDB subset), deterministic bytes, labelled synthetic, plausible values."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify

from fermipipe.synth_caldb import SYNTH_IRF, write_synthetic_caldb

REAL_IRF = "P8R3_SOURCE_V3"
PAIRS = (("ea", "aeff"), ("psf", "psf"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("caldb")
    return root, write_synthetic_caldb(root)


def _bcf(root: Path, folder: str, prefix: str, irf: str) -> Path:
    return root / "data" / "glast" / "lat" / "bcf" / folder / f"{prefix}_{irf}_FB.fits"


def test_same_layout_as_the_real_files(synth: tuple[Path, list[Path]], caldb: Path) -> None:
    root, _ = synth
    for folder, prefix in PAIRS:
        with (
            fits.open(_bcf(caldb, folder, prefix, REAL_IRF)) as real,
            fits.open(_bcf(root, folder, prefix, SYNTH_IRF)) as ours,
        ):
            assert [h.name for h in ours] == [h.name for h in real]
            for r, o in zip(real[1:], ours[1:], strict=True):
                assert o.columns.names == [n.strip() for n in r.columns.names], r.name
                for rc, oc in zip(r.columns, o.columns, strict=True):
                    assert (oc.format, oc.dim, oc.unit or "") == (rc.format, rc.dim, rc.unit or "")
                    a, b = np.asarray(r.data[rc.name]), np.asarray(o.data[oc.name])
                    assert (b.shape, b.dtype) == (a.shape, a.dtype), f"{r.name}.{rc.name}"
                for key in ("DETNAM", "HDUCLASS", "HDUCLAS1", "HDUCLAS2", "CCNM0001", "PSFVER"):
                    assert o.header.get(key) == r.header.get(key), f"{r.name} {key}"
                assert o.header["CBD10001"] == f"VERSION({SYNTH_IRF})"
                # The grids cover the real ones' ranges.
                for col in ("ENERG_LO", "ENERG_HI", "CTHETA_LO", "CTHETA_HI"):
                    if col in r.columns.names:
                        np.testing.assert_allclose(
                            [o.data[col].min(), o.data[col].max()],
                            [r.data[col].min(), r.data[col].max()],
                            rtol=0.35,
                        )


def test_index_rows_point_at_the_tables(synth: tuple[Path, list[Path]], caldb: Path) -> None:
    root, _ = synth
    lat = root / "data" / "glast" / "lat"
    with (
        fits.open(lat / "caldb.indx") as ours,
        fits.open(caldb / "data" / "glast" / "lat" / "caldb.indx") as real,
    ):
        assert ours["CIF"].columns.names == real["CIF"].columns.names
        assert ours["CIF"].columns.formats == real["CIF"].columns.formats
        rows = ours["CIF"].data
        real_versions = set(
            re.findall(r"VERSION\(([^)]*)\)", " ".join(real["CIF"].data["CAL_CBD"]))
        )
    assert SYNTH_IRF not in real_versions  # not mistakable for a real IRF
    assert len(rows) == 12
    for row in rows:
        with fits.open(root / row["CAL_DIR"] / row["CAL_FILE"]) as h:
            hdu = h[int(row["CAL_XNO"])]
            assert hdu.header["CCNM0001"] == row["CAL_CNAM"]
            assert hdu.header["DETNAM"] == row["DETNAM"]
            assert f"VERSION({SYNTH_IRF})" in row["CAL_CBD"]


def test_deterministic_small_and_valid(synth: tuple[Path, list[Path]], tmp_path: Path) -> None:
    root, paths = synth
    again = write_synthetic_caldb(tmp_path)
    assert [p.relative_to(tmp_path) for p in again] == [p.relative_to(root) for p in paths]
    for a, b in zip(paths, again, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
        assert_fitsverify(a)
    assert sum(p.stat().st_size for p in paths) < 200_000


def test_labelled_synthetic(synth: tuple[Path, list[Path]]) -> None:
    _, paths = synth
    for path in paths:
        with fits.open(path) as h:
            for hdu in h:
                text = " ".join(str(c) for c in hdu.header.get("COMMENT", []))
                assert "SYNTHETIC IRF" in text and "not for science" in text, (path.name, hdu.name)


def test_plausible_values(synth: tuple[Path, list[Path]]) -> None:
    root, _ = synth
    with fits.open(_bcf(root, "ea", "aeff", SYNTH_IRF)) as h:
        for kind in ("FRONT", "BACK"):
            area = h[f"EFFECTIVE AREA_{kind}"].data["EFFAREA"][0].astype(float)  # (cos, E)
            assert np.all(area >= 0) and 0.3 < area.max() < 0.5  # m²
            assert np.all(np.diff(area, axis=0) >= 0)  # more area on axis
            assert area[-1, 0] < 0.01 * area[-1].max()  # turn-on at low energy
            # Efficiency factor p0·f + p1 at f = 0.9, piecewise linear in log10 E.
            a0, b0, a1, e1, a2, e2 = (
                h[f"EFFICIENCY_PARAMS_{kind}"].data["EFFICIENCY_PARS"].astype(float).T
            )
            loge = np.linspace(1.5, 6.0, 50)[:, None]
            b1 = (a0 - a1) * e1 + b0
            b2 = (a1 - a2) * e2 + b1
            p = np.where(
                loge < e1, a0 * loge + b0, np.where(loge < e2, a1 * loge + b1, a2 * loge + b2)
            )
            factor = 0.9 * p[:, 0] + p[:, 1]
            assert np.all(np.abs(factor - 1) < 0.05)
    with fits.open(_bcf(root, "psf", "psf", SYNTH_IRF)) as h:
        front = h["PSF_SCALING_PARAMS_FRONT"].data["PSFSCALE"][0]
        back = h["PSF_SCALING_PARAMS_BACK"].data["PSFSCALE"][0]
        assert 0 < front[0] < back[0] and front[2] < 0  # BACK wider; narrower with energy
        for kind in ("FRONT", "BACK"):
            rpsf = h[f"RPSF_{kind}"].data
            assert np.all(rpsf["GCORE"] > 1) and np.all(rpsf["GTAIL"] > 1)
            assert np.all(rpsf["STAIL"] > rpsf["SCORE"])

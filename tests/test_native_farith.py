"""Native farith on real images: gtbin count maps of the 2FHL events and the real gtexpcube2
all-sky AIT exposure (its pixels outside the AIT ellipse are 0: the divisor-0 rule).

Every pixel is checked against numpy with the farith rules (farith.f), not against numbers
written here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fitscheck import assert_fitsverify
from native_cli import run_native

from fermipipe.errors import ToolError
from fermipipe.native import farith, gtbin
from fermipipe.native.params import parse_argv

AIT = {"nxpix": 360, "nypix": 180, "binsz": 1, "coordsys": "GAL", "xref": 0, "yref": 0}
AIT |= {"axisrot": 0, "proj": "AIT"}


@pytest.fixture(scope="module")
def images(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-D count map and a 9-plane count cube (360×180 AIT GAL) and the real exposure."""
    d = tmp_path_factory.mktemp("farith")
    events = shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_events.fits.gz"
    out = {
        "exposure": shared_data
        / "fermitools-2.4"
        / "expcube_wcs_ait_allsky_gal_P8R3_SOURCE_V3_edge.fits.gz"
    }
    for name, extra in (
        ("cmap", {"algorithm": "CMAP"}),
        (
            "ccube",
            {"algorithm": "CCUBE", "ebinalg": "LOG", "emin": 5e4, "emax": 2e6, "enumbins": 9},
        ),
    ):
        path = d / f"{name}.fits"
        params = {"evfile": str(events), "scfile": "NONE", "outfile": str(path), **AIT, **extra}
        gtbin.run({k: str(v) for k, v in params.items()})
        out[name] = path
    return out


def _image(path: Path) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as h:
        return np.array(h[0].data, dtype=np.float64), h[0].header.copy()


def _farith(tmp_path: Path, a: Path | str, b: Path | str, ops: str, **extra: object) -> Path:
    out = tmp_path / f"out_{ops.replace('/', 'div')}.fits"
    params = {"infil1": str(a), "infil2": str(b), "outfil": str(out), "ops": ops}
    params |= {"clobber": "yes", **{k: str(v) for k, v in extra.items()}}
    farith.run(params)
    return out


def test_divide_map_by_cube_wraps_and_zero_divisor_is_blank(
    images: dict[str, Path], tmp_path: Path
) -> None:
    """2-D counts / 9-plane exposure: the map is reused for every plane (wrap-around), the
    output is float32, and pixels with exposure 0 get blank (-999, the .par default)."""
    counts, ch = _image(images["cmap"])
    exposure, eh = _image(images["exposure"])
    assert counts.shape == (180, 360) and exposure.shape == (9, 180, 360)
    zero = exposure == 0
    assert zero.sum() > 0.1 * zero.size  # outside the AIT ellipse
    assert counts.sum() > 1000
    out = _farith(tmp_path, images["cmap"], images["exposure"], "DIV")
    with fits.open(out) as h:
        data, header = h[0].data, h[0].header
        assert len(h) == 1
    assert header["BITPIX"] == -32 and data.shape == (9, 180, 360)
    num = np.broadcast_to(counts, exposure.shape)
    expected = np.where(zero, -999.0, num / np.where(zero, 1.0, exposure)).astype(">f4")
    assert data.dtype == expected.dtype
    assert data.tobytes() == expected.tobytes()
    # Header from the first input: its WCS and DSS, not its BITPIX/NAXIS; cfitsio's FITS
    # comment lines once.
    for key in ("CTYPE1", "CRPIX1", "CRVAL1", "CDELT1", "CTYPE2", "NDSKEYS", "DSVAL4"):
        assert header[key] == ch[key], key
    assert header["NAXIS"] == 3 and header["NAXIS3"] == 9
    assert list(header.keys()).count("COMMENT") == 2
    assert "BUNIT" not in header and "BSCALE" not in header
    assert header["FILENAME"] == out.name
    assert_fitsverify(out)


def test_same_shape_operations_against_numpy(images: dict[str, Path], tmp_path: Path) -> None:
    """counts cube ∘ exposure cube, pixel by pixel, for every operation (null=yes: the
    divisor-0 pixels are NaN)."""
    counts, _ = _image(images["ccube"])
    exposure, _ = _image(images["exposure"])
    assert counts.shape == exposure.shape
    zero = exposure == 0
    expected = {
        "ADD": counts + exposure,
        "-": counts - exposure,
        "MULT": counts * exposure,
        "MIN": np.minimum(counts, exposure),
        "max": np.maximum(counts, exposure),
        "/": np.where(zero, math.nan, counts / np.where(zero, 1.0, exposure)),
    }
    for ops, want in expected.items():
        out = _farith(tmp_path, images["ccube"], images["exposure"], ops, null="yes")
        data = fits.getdata(out)
        assert data.dtype == np.dtype(">f4"), ops
        assert data.tobytes() == want.astype(">f4").tobytes(), ops
    assert np.isnan(fits.getdata(tmp_path / "out_div.fits")).sum() == zero.sum()
    assert_fitsverify(tmp_path / "out_div.fits")


def test_integer_output_and_blank_keyword(images: dict[str, Path], tmp_path: Path) -> None:
    """int32 counts: ADD stays BITPIX 32; DIV with datatype=J truncates toward zero and,
    with null=yes, writes BLANK for the divisor-0 pixels."""
    counts, ch = _image(images["ccube"])
    assert ch["BITPIX"] == 32
    out = _farith(tmp_path, images["ccube"], images["ccube"], "ADD")
    with fits.open(out) as h:
        assert h[0].header["BITPIX"] == 32
        assert np.array_equal(h[0].data, 2 * counts)
    out = _farith(tmp_path, images["ccube"], images["ccube"], "DIV", datatype="J", null="yes")
    zero = counts == 0
    with fits.open(out, do_not_scale_image_data=True) as h:
        header, data = h[0].header, np.array(h[0].data)
    assert header["BITPIX"] == 32 and header["BLANK"] == -999
    assert np.array_equal(data[zero], np.full(zero.sum(), -999))
    assert np.array_equal(data[~zero], np.ones((~zero).sum()))
    assert_fitsverify(out)


def test_vectors_dims_and_evenvec(images: dict[str, Path], tmp_path: Path) -> None:
    """farith.txt example 4 (vectors, dim1) and a per-plane factor through dim2."""
    out = _farith(tmp_path, "1,2,4,8,7,6", "1,2,3,4", "SUB", dim1="2,3", datatype="I")
    data = fits.getdata(out)
    assert data.tolist() == [[0, 0, -2, -2], [3, 6, 1, 4], [6, 4, 4, 2]]
    counts, _ = _image(images["cmap"])
    out = _farith(tmp_path, images["cmap"], "2,0.5,4", "MUL", dim2="1,1,3")
    data = fits.getdata(out)
    want = np.stack([counts * 2, counts * 0.5, counts * 4]).astype(">f4")
    assert data.tobytes() == want.tobytes()
    with pytest.raises(ToolError, match="not even multiples"):
        _farith(tmp_path, images["cmap"], "1,2,3,4,5,6,7", "ADD")


def test_refusals_are_one_line(images: dict[str, Path], shared_data: Path, tmp_path: Path) -> None:
    hpx = shared_data / "gammapy-fermi-lat-data" / "2fhl" / "fermi_2fhl_counts_cube_hpx.fits.gz"
    with pytest.raises(ToolError, match="only reads images"):
        _farith(tmp_path, f"{hpx}[1]", images["cmap"], "DIV")
    with pytest.raises(ToolError, match="Unknown arithmetic operator"):
        _farith(tmp_path, images["cmap"], images["cmap"], "POW")
    with pytest.raises(ToolError, match="do not fit BITPIX 8"):
        _farith(tmp_path, images["cmap"], "1000", "SUB", datatype="B")
    existing = tmp_path / "exists.fits"
    existing.write_bytes(b"")
    params = {"infil1": str(images["cmap"]), "infil2": "2", "outfil": str(existing)}
    with pytest.raises(ToolError, match="clobber=no"):
        farith.run({**params, "ops": "MUL"})
    farith.run({**params, "outfil": f"!{existing}", "ops": "MUL"})  # "!" overwrites
    assert fits.getheader(existing)["BITPIX"] == -32


def test_positional_command_line(images: dict[str, Path], tmp_path: Path) -> None:
    """The existing tool's config form: ``farith A B OUT DIV clobber=yes``."""
    out = tmp_path / "corr.fits"
    args = [str(images["ccube"]), str(images["exposure"]), str(out), "DIV", "clobber=yes"]
    res = run_native("farith", *args)
    assert res.returncode == 0, res.stderr
    assert out.exists() and fits.getheader(out)["NAXIS3"] == 9
    res = run_native("farith", *args, "extra")
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "too many positional" in res.stderr


def test_parse_argv_positional_rules() -> None:
    assert parse_argv(["a", "b", "c", "DIV", "null=yes"], "farith") == {
        "infil1": "a",
        "infil2": "b",
        "outfil": "c",
        "ops": "DIV",
        "null": "yes",
    }
    # Positional words fill the names not given as name=value, in order of appearance.
    assert parse_argv(["ops=ADD", "a", "b"], "farith") == {
        "ops": "ADD",
        "infil1": "a",
        "infil2": "b",
    }
    with pytest.raises(ToolError, match="duplicated"):
        parse_argv(["a", "infil1=b"], "farith")
    # Tools without a positional order are unchanged.
    with pytest.raises(ToolError, match="not of the form name=value"):
        parse_argv(["evfile.fits"], "gtselect")
    assert parse_argv(["x", "y", "z"], "hpx_divide") == {
        "counts": "x",
        "exposure": "y",
        "outfile": "z",
    }

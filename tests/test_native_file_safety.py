"""The native command line never damages an input and reports bad files in one line.

Every test runs ``python -m fermipipe.native`` in a real subprocess on real LAT files (the
bundled sample week, copied to a temporary folder) and checks the inputs' sha256 before and
after: a refused run must leave every input byte for byte as it was, leave no output and no
temporary behind, and print one ``error:`` line (never a traceback).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
FT1 = SAMPLE / "lat_photon_weekly_w700_p305_v001.fits"
FT2 = SAMPLE / "lat_spacecraft_weekly_w700_p310_v001.fits"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (symlinks are not followed twice)."""
    return {
        os.fsdecode(p.relative_to(folder)): sha(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def native(*args: str | os.PathLike[str], limit_as: int | None = None) -> tuple[int, str, str]:
    """Run the native CLI; output decoded like the OS decodes names (any bytes survive)."""

    def limit() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    proc = subprocess.run(
        [sys.executable, "-m", "fermipipe.native", *map(os.fspath, args)],
        capture_output=True,
        cwd=REPO,
        timeout=300,
        check=False,
        preexec_fn=limit if limit_as is not None else None,
    )
    out = proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "surrogateescape")
    return proc.returncode, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder holding a real FT1 and FT2 week."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(FT1, folder / "ft1.fits")
    shutil.copyfile(FT2, folder / "ft2.fits")
    return folder


def no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*") if ".tmp-" in p.name], list(folder.rglob(".*"))


# ------------------------------------------------------------------ output = an input

#: tool → (the arguments but outfile, the input parameter names in them)
TOOLS: dict[str, tuple[list[str], dict[str, str]]] = {
    "gtselect": (["emin=100", "emax=1e5", "zmax=90"], {"infile": "ft1.fits"}),
    "gtmktime": (
        ["filter=DATA_QUAL>0", "roicut=no"],
        {"scfile": "ft2.fits", "evfile": "ft1.fits"},
    ),
    "gtbin": (
        [
            "algorithm=CMAP",
            "nxpix=10",
            "nypix=10",
            "binsz=1",
            "coordsys=GAL",
            "xref=0",
            "yref=0",
            "proj=CAR",
        ],
        {"evfile": "ft1.fits", "scfile": "ft2.fits"},
    ),  # fmt: skip
    "gtltcube": (
        ["dcostheta=0.025", "binsz=1", "zmax=90"],
        {"evfile": "ft1.fits", "scfile": "ft2.fits"},
    ),
    # The check runs before any work: a real FT1 file stands for the livetime cubes.
    "gtltsum": ([], {"infile1": "ft1.fits", "infile2": "ft2.fits"}),
}

CASES = [(tool, param) for tool, (_a, files) in TOOLS.items() for param in files]
FORMS = ["same", "dotdot", "symlink", "hardlink", "in_list"]
#: (tool, input parameter, how the output names it); gtmktime's evfile is one file, never an
#: @list, so it has no in_list case.
OUTFILE_CASES = [
    (tool, param, form)
    for tool, (_a, files) in TOOLS.items()
    for param in files
    for form in FORMS
    if not (tool == "gtmktime" and param == "evfile" and form == "in_list")
]


@pytest.mark.parametrize(("tool", "param", "form"), OUTFILE_CASES)
def test_native_outfile_equal_to_infile_is_refused(
    inputs: Path, tool: str, param: str, form: str
) -> None:
    extra, files = TOOLS[tool]
    target = inputs / files[param]
    params = {p: str(inputs / name) for p, name in files.items()}
    if form == "same":
        outfile = str(target)
    elif form == "dotdot":
        (inputs / "sub").mkdir()
        outfile = f"{inputs}/sub/../{target.name}"
    elif form == "symlink":
        (inputs / "alias.fits").symlink_to(target)
        outfile = str(inputs / "alias.fits")
    elif form == "hardlink":
        os.link(target, inputs / "twin.fits")
        outfile = str(inputs / "twin.fits")
    else:
        listfile = inputs / "list.txt"
        listfile.write_text(f"{target}\n")
        params[param] = f"@{listfile}"
        outfile = str(target)
    before = digests(inputs)
    args = [f"{k}={v}" for k, v in params.items()]
    code, _out, err = native(tool, *args, *extra, f"outfile={outfile}")
    assert_one_line_error(code, err, "refusing to overwrite an input", param)
    assert digests(inputs) == before
    no_temporaries(inputs)


# ------------------------------------------------------------------ inputs that are not FITS


def _bad_contents() -> dict[str, bytes]:
    return {
        "zero_byte": b"",
        "text": b"lat_photon_weekly_w700_p305_v001.fits\n",
        "html": b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "binary": bytes(range(256)) * 20,
        "utf16": "SIMPLE  =".encode("utf-16"),
    }


@pytest.mark.parametrize("content", list(_bad_contents()))
@pytest.mark.parametrize(("tool", "param"), CASES)
def test_native_non_fits_input_is_one_line(
    inputs: Path, tmp_path: Path, tool: str, param: str, content: str
) -> None:
    extra, files = TOOLS[tool]
    bad = inputs / "bad.fits"
    bad.write_bytes(_bad_contents()[content])
    params = {p: str(inputs / name) for p, name in files.items()}
    params[param] = str(bad)
    before = digests(inputs)
    out = tmp_path / "out.fits"
    code, _out, err = native(tool, *(f"{k}={v}" for k, v in params.items()), *extra,
                             f"outfile={out}")  # fmt: skip
    assert_one_line_error(code, err, f"{bad}: not a FITS file", param)
    assert digests(inputs) == before
    assert not out.exists()
    no_temporaries(tmp_path)


@pytest.mark.parametrize(("tool", "param"), CASES)
def test_native_gzip_content_without_gz_name_says_name_it_gz(
    inputs: Path, tmp_path: Path, tool: str, param: str
) -> None:
    extra, files = TOOLS[tool]
    packed = inputs / "packed.fits"
    packed.write_bytes(gzip.compress((inputs / files[param]).read_bytes()))
    params = {p: str(inputs / name) for p, name in files.items()}
    params[param] = str(packed)
    before = digests(inputs)
    out = tmp_path / "out.fits"
    code, _out, err = native(tool, *(f"{k}={v}" for k, v in params.items()), *extra,
                             f"outfile={out}")  # fmt: skip
    assert_one_line_error(code, err, f"{packed}: not a FITS file", "gzip-compressed: name it .gz")
    assert digests(inputs) == before
    assert not out.exists()


def test_native_gzip_fits_named_gz_is_read(inputs: Path, tmp_path: Path) -> None:
    packed = inputs / "ft1.fits.gz"
    packed.write_bytes(gzip.compress((inputs / "ft1.fits").read_bytes()))
    before = digests(inputs)
    code, _o, err = native("gtselect", f"infile={packed}", f"outfile={tmp_path / 'o.fits'}",
                           "emin=100", "emax=1e5", "zmax=90")  # fmt: skip
    assert code == 0, err
    assert digests(inputs) == before


@pytest.mark.parametrize("tool", ["gtselect", "gtbin", "gtltsum"])
def test_native_bare_text_list_is_not_read_as_a_list(
    inputs: Path, tmp_path: Path, tool: str
) -> None:
    """A text file is a list only when written ``@file``: bare, it must be FITS."""
    extra, files = TOOLS[tool]
    param = next(iter(files))
    listfile = inputs / "files.txt"
    listfile.write_text(f"{inputs / files[param]}\n")
    params = {p: str(inputs / name) for p, name in files.items()}
    params[param] = str(listfile)
    before = digests(inputs)
    out = tmp_path / "out.fits"
    code, _out, err = native(tool, *(f"{k}={v}" for k, v in params.items()), *extra,
                             f"outfile={out}")  # fmt: skip
    assert_one_line_error(code, err, f"{listfile}: not a FITS file")
    assert "file list" not in err and "in list" not in err
    assert digests(inputs) == before
    assert not out.exists()


def test_native_list_naming_a_non_fits_file_names_it(inputs: Path, tmp_path: Path) -> None:
    junk = inputs / "junk.fits"
    junk.write_text("<html></html>\n")
    listfile = inputs / "files.txt"
    listfile.write_text(f"{inputs / 'ft1.fits'}\n{junk}\n")
    before = digests(inputs)
    code, _o, err = native("gtselect", f"infile=@{listfile}", f"outfile={tmp_path / 'o.fits'}")
    assert_one_line_error(code, err, f"{junk}: not a FITS file", str(listfile))
    assert digests(inputs) == before


# ------------------------------------------------------------------ names are data

NAMES = [
    "with space.fits",
    "quote'single.fits",
    'quote"double.fits',
    "semi;colon.fits",
    "$HOME.fits",
    "~tilde.fits",
    "é.fits",
    "日本.fits",
    "tab\there.fits",
    "new\nline.fits",
    " blank around.fits ",
]


def _names() -> list[str]:
    names = list(NAMES)
    if sys.platform.startswith("linux"):  # any bytes but / and NUL (not on macOS' APFS)
        names.append(os.fsdecode(b"raw\xff\xfebyte.fits"))
    return names


@pytest.mark.parametrize("name", _names())
def test_native_file_names_are_data_any_bytes(inputs: Path, tmp_path: Path, name: str) -> None:
    src = inputs / f"in {name}"
    shutil.copyfile(inputs / "ft1.fits", src)
    outdir = tmp_path / f"out {name[:-5]}"
    outdir.mkdir()
    out = outdir / name
    before = digests(inputs)
    code, stdout, err = native("gtselect", f"infile={src}", f"outfile={out}",
                               "emin=100", "emax=1e5", "zmax=90")  # fmt: skip
    assert code == 0, err
    assert out.is_file(), os.listdir(outdir)
    assert os.listdir(outdir) == [name]  # exactly that name: nothing expanded, no temporary
    assert str(out) in stdout
    with fits.open(out) as hdul:  # a valid FITS header: FILENAME escaped to ASCII
        assert hdul[0].header["FILENAME"].isascii()
        assert len(hdul["EVENTS"].data) > 0
    if "\n" in name:  # a list holds one name per line: such a name cannot be listed
        return
    # gtbin (evtbin lists: "@" + a list holding the odd name) reads it back.
    listfile = tmp_path / "l.txt"
    listfile.write_bytes(os.fsencode(out) + b"\n")
    cmap = outdir / f"cmap {name}"
    code, stdout, err = native("gtbin", f"evfile=@{listfile}", f"outfile={cmap}",
                               *TOOLS["gtbin"][0])  # fmt: skip
    assert code == 0, err
    assert cmap.is_file()
    assert digests(inputs) == before
    no_temporaries(tmp_path)


def test_native_home_in_a_name_is_not_expanded(inputs: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    before = digests(inputs)
    proc = subprocess.run(
        [sys.executable, "-m", "fermipipe.native", "gtselect", f"infile={inputs / 'ft1.fits'}",
         "outfile=$HOME/o.fits", "emin=100", "emax=1e5", "zmax=90"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    # "$HOME" is a folder name here, and there is no folder called "$HOME": refused.
    assert_one_line_error(proc.returncode, proc.stderr, "$HOME", "does not exist")
    assert not list(home.iterdir())
    (tmp_path / "$HOME").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "fermipipe.native", "gtselect", f"infile={inputs / 'ft1.fits'}",
         "outfile=$HOME/o.fits", "emin=100", "emax=1e5", "zmax=90"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "$HOME" / "o.fits").is_file() and not list(home.iterdir())
    assert digests(inputs) == before


# ------------------------------------------------------------------ impossible outputs


@pytest.mark.parametrize(("tool", "param"), CASES)
def test_native_outfile_in_missing_folder_is_one_line(
    inputs: Path, tmp_path: Path, tool: str, param: str
) -> None:
    extra, files = TOOLS[tool]
    params = {p: str(inputs / name) for p, name in files.items()}
    out = tmp_path / "no-such-folder" / "out.fits"
    before = digests(inputs)
    code, _out, err = native(tool, *(f"{k}={v}" for k, v in params.items()), *extra,
                             f"outfile={out}")  # fmt: skip
    assert_one_line_error(code, err, str(out), "does not exist")
    assert digests(inputs) == before
    assert not out.parent.exists()


def test_native_outfile_equal_to_a_folder_is_one_line(inputs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "products"
    folder.mkdir()
    before = digests(inputs)
    code, _out, err = native("gtselect", f"infile={inputs / 'ft1.fits'}", f"outfile={folder}")
    assert_one_line_error(code, err, str(folder), "is a folder")
    assert digests(inputs) == before
    assert folder.is_dir() and not list(folder.iterdir())
    no_temporaries(tmp_path)


@pytest.mark.parametrize(("tool", "param"), CASES)
def test_native_infile_a_folder_is_one_line(
    inputs: Path, tmp_path: Path, tool: str, param: str
) -> None:
    extra, files = TOOLS[tool]
    params = {p: str(inputs / name) for p, name in files.items()}
    params[param] = str(tmp_path)
    before = digests(inputs)
    out = tmp_path / "out.fits"
    code, _out, err = native(tool, *(f"{k}={v}" for k, v in params.items()), *extra,
                             f"outfile={out}")  # fmt: skip
    assert_one_line_error(code, err, f"{tmp_path}: is a folder", param)
    assert digests(inputs) == before
    assert not out.exists()


def test_native_huge_map_out_of_memory_is_one_line_no_partial_output(
    inputs: Path, tmp_path: Path
) -> None:
    """A 100000² map does not fit in memory: one line, non-zero exit, nothing left behind.
    The address space is capped at 6 GiB so the test does not depend on the machine's RAM."""
    out = tmp_path / "huge.fits"
    before = digests(inputs)
    code, _out, err = native(
        "gtbin", f"evfile={inputs / 'ft1.fits'}", f"outfile={out}", "algorithm=CMAP",
        "nxpix=100000", "nypix=100000", "binsz=0.001", "coordsys=GAL", "xref=0", "yref=0",
        "proj=CAR", limit_as=6 * 1024**3,
    )  # fmt: skip
    assert_one_line_error(code, err, "not enough memory")
    assert digests(inputs) == before
    assert list(tmp_path.iterdir()) == [inputs]


def test_native_fifo_input_is_one_line_not_a_hang(inputs: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.fits"
    os.mkfifo(fifo)
    before = digests(inputs)
    code, _out, err = native("gtselect", f"infile={fifo}", f"outfile={tmp_path / 'o.fits'}")
    assert_one_line_error(code, err, f"{fifo}: not a FITS file")
    assert digests(inputs) == before
    assert not (tmp_path / "o.fits").exists()


def test_native_error_about_a_name_with_a_newline_is_one_line(inputs: Path, tmp_path: Path) -> None:
    bad = inputs / "two\nlines.fits"
    bad.write_text("<html></html>\n")
    before = digests(inputs)
    code, _out, err = native("gtselect", f"infile={bad}", f"outfile={tmp_path / 'o.fits'}")
    assert_one_line_error(code, err, "two\\x0alines.fits: not a FITS file")
    assert digests(inputs) == before

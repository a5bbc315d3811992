"""The existing runner's own configs (``../shared/seed``) run unchanged.

They are read in place, never copied: only the paths to data differ from machine to machine,
so the tests point ``input.directory`` and ``common_files.scfile`` (and ``fermi_base``, a path
on its author's cluster) at generated data with ``--set`` — nothing else. Each run starts in
its own folder, the run root: that is where the runner's ``./data/...`` and ``${root:...}``
paths land, as for the existing runner started from its repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from astropy.io import fits
from pipeline_project import SAMPLE, fits_equal, mission_ft2

from fermipipe.config import load_config
from fermipipe.errors import ConfigError
from flows.cli import load_and_plan

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed"
FIRST = "fermi_pipeline.yaml"
LATER = "fermi_pipeline_8perdecade.yaml"
WEEKS = ("700", "701")
# What the later config's ${vars.*} paths resolve to (relative to the run root).
COUNTS = "data/counts_100MeV-316GeV-8pd_zmax90_hpx128_w009-w947.fits"
LIVETIME = "data/livetime_zmax90_w009-w947.fits"
FIRST_CCUBE = "data/lat_source_zmax90_gt1_10gev_ccube_merged.fits"
FIRST_LTCUBE = "data/lat_source_zmax90_gt1_10gev_ltcube_merged.fits"
FIRST_EXPOSURE = "data/lat_source_zmax90_gt1_10gev_expcube1_merged.fits"
FIRST_CORRMAP = "data/lat_source_zmax90_gt1_10gev_corrmap_merged.fits"
EXPOSURE = "data/exposure_100MeV-316GeV-8pd_zmax90_hpx128_w009-w947.fits"
FLUX = "data/flux_100MeV-316GeV-8pd_zmax90_hpx128_w009-w947.fits"
CALDB = REPO.parent / "shared" / "data" / "caldb"


@pytest.fixture(scope="module")
def seed() -> Path:
    if not SEED.is_dir():
        pytest.skip(f"the existing runner's configs are not at {SEED} (CI has ../shared)")
    return SEED


@pytest.fixture(scope="module")
def lat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weekly photon files and one mission-long spacecraft file, as the configs expect."""
    root = tmp_path_factory.mktemp("lat")
    weekly = root / "weekly" / "photon"
    weekly.mkdir(parents=True)
    for week in WEEKS:
        name = f"lat_photon_weekly_w{week}_p305_v001.fits"
        (weekly / name).write_bytes((SAMPLE / name).read_bytes())
    parts = [SAMPLE / f"lat_spacecraft_weekly_w{w}_p310_v001.fits" for w in WEEKS]
    mission_ft2(parts, root / "lat_spacecraft_merged.fits")
    return root


def data_settings(name: str, data: Path) -> list[str]:
    settings = [
        f"input.directory={data / 'weekly' / 'photon'}",
        f"common_files.scfile={data / 'lat_spacecraft_merged.fits'}",
    ]
    if name == LATER:
        settings.append("fermi_base=null")  # its author's conda env: not on this machine
    return settings


def cli(
    config: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "flows" / "fermi.py"), str(config), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def sets(settings: list[str]) -> list[str]:
    return [word for s in settings for word in ("--set", s)]


def sha256s(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------ dry runs


@pytest.mark.parametrize("name", [FIRST, LATER])
def test_seed_dry_run_is_fully_resolved(
    seed: Path, lat_data: Path, tmp_path: Path, name: str
) -> None:
    out = cli(seed / name, tmp_path, "--dry-run", *sets(data_settings(name, lat_data)))
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert len(commands) == 4 * len(WEEKS) + 2 + 2  # 4 steps per week, 2 merges, 2 post
    for line in commands:
        assert "${" not in line, line
        assert not any(f"{{{p}}}" in line for p in ("input", "scfile", "temp_select"))
    text = out.stdout
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    if name == FIRST:
        assert "gtselect evclass=INDEF evtype=INDEF" in text and "emin=1000 emax=10000" in text
        assert "phibins=1" in text and "algorithm=CCUBE" in text
        # Merge outputs "./data/..." are in the run root, where the post commands look.
        assert f"-> {tmp_path / FIRST_CCUBE}" in text
        assert f"-> {tmp_path / FIRST_LTCUBE}" in text
        # gtexpcube2 and farith run natively here, in this process: their "./data/..."
        # paths are made absolute against the run root, where the merges wrote.
        assert f"infile={tmp_path / FIRST_LTCUBE}" in text
        assert "[native] farith" in text and "ops=DIV" in text
    else:
        assert "gtselect evclass=1024 evtype=3" in text
        assert "emin=100 emax=316228 enumbins=28" in text
        assert "hpx_ordering_scheme=RING hpx_order=7 coordsys=GAL" in text
        assert f"-> {tmp_path / COUNTS}" in text and f"-> {tmp_path / LIVETIME}" in text
        # ${vars.scripts_dir} is ${root:scripts}: absolute, in the run root.
        assert f"python3 {tmp_path}/scripts/parallel_expcube.py" in text
        assert "script not found" in text  # a warning in a dry run, an error in a run


def test_seed_config_errors_are_reported_at_once(seed: Path, tmp_path: Path) -> None:
    """Unchanged, on a machine without its author's data or environment: every problem,
    one line each, in one pass (exit 2), and nothing written."""
    out = cli(seed / LATER, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert all(line.startswith("fermipipe: config error: ") for line in lines), lines
    assert "Traceback" not in out.stderr
    text = out.stderr
    for where in ("fermi_base:", "input.directory:", "common_files.scfile:"):
        assert f"{LATER}: {where}" in text, text
    assert list(tmp_path.iterdir()) == []


def test_skip_post_does_not_require_post_tools(seed: Path, lat_data: Path) -> None:
    """The later config's post-processing runs scripts that are not here: an error when
    post-processing would run, not checked when it will not (--skip-post or run.skip_post)."""
    settings = data_settings(LATER, lat_data)
    with pytest.raises(ConfigError, match=r"post_processing\[0\].command: script not found"):
        load_and_plan(str(seed / LATER), settings=settings)
    _cfg, choices, plan = load_and_plan(str(seed / LATER), settings=settings, skip_post=True)
    assert choices.skip_post and plan.post == ()
    _cfg, choices, plan = load_and_plan(
        str(seed / LATER), settings=[*settings, "run.skip_post=true"]
    )
    assert choices.skip_post and plan.post == ()
    _cfg, choices, plan = load_and_plan(
        str(seed / LATER), settings=[*settings, "run.steps=[gtselect,gtmktime]"], skip_post=True
    )
    assert [inv.step for inv in plan.files[0].chain] == ["gtselect", "gtmktime"]
    # The first config's gtexpcube2 and farith have native versions: planned natively.
    _cfg, _choices, plan = load_and_plan(str(seed / FIRST), settings=data_settings(FIRST, lat_data))
    assert [(inv.tool, inv.engine) for inv in plan.post] == [
        ("gtexpcube2", "native"),
        ("farith", "native"),
    ]


def test_parallel_accum_false_sums_in_one_pass(seed: Path, lat_data: Path) -> None:
    settings = data_settings(FIRST, lat_data)
    _cfg, _choices, plan = load_and_plan(str(seed / FIRST), settings=settings, skip_post=True)
    assert all(m.parallel for m in plan.merges)
    settings.append("resources.parallel_accum=false")
    _cfg, _choices, plan = load_and_plan(str(seed / FIRST), settings=settings, skip_post=True)
    assert not any(m.parallel for m in plan.merges)


def test_seed_keys_are_honoured(seed: Path, lat_data: Path, tmp_path: Path) -> None:
    cfg = load_config(seed / LATER, root=tmp_path, overrides=data_settings(LATER, lat_data))
    assert cfg.vars["evclass"] == 1024 and cfg.vars["counts"] == str(tmp_path / COUNTS)
    assert cfg.resources.ltcube_cache.enabled
    assert cfg.cache.directory == tmp_path / "ltcube_cache"  # ltcube_cache.path
    assert cfg.resources.stream_merge and cfg.resources.slice_scfile
    assert cfg.science_models["isotropic"] == "iso_P8R3_ULTRACLEANVETO_V3_v1.txt"
    assert [s.cleanup_outputs for s in cfg.steps] == [[], ["temp_select"], [], ["temp_gti"]]
    assert cfg.steps[0].outputs == {"temp_select": "{stem}_temp_select.fits"}
    assert cfg.merging[0].output_name == "chunk_hpxcube"
    fermi = load_config(seed / LATER, root=tmp_path, overrides=[
        *data_settings(LATER, lat_data)[:2], f"fermi_base={tmp_path / 'env'}"
    ], check_files=False)  # fmt: skip
    assert fermi.fermitools.prefix == tmp_path / "env"


# ------------------------------------------------------------------------ real runs


def structured(name: str, data: Path) -> dict[str, Any]:
    """The same chain as seed ``name``, written in the structured form."""
    cuts = {"ra": 0, "dec": 0, "rad": 180, "tmin": "INDEF", "tmax": "INDEF", "zmax": 90}
    if name == FIRST:
        select = {**cuts, "evclass": "INDEF", "evtype": "INDEF", "emin": 1000, "emax": 10000}
        binning = {
            "algorithm": "CCUBE", "nxpix": 3600, "nypix": 1800, "binsz": 0.1,
            "coordsys": "GAL", "xref": 0, "yref": 0, "axisrot": 0, "proj": "AIT",
            "ebinalg": "LOG", "emin": 1000, "emax": 10000, "enumbins": 1,
        }  # fmt: skip
        binned, merged = "chunk_ccube", ("merge_ccubes", FIRST_CCUBE)
        lt_merge = ("merge_ltcubes", FIRST_LTCUBE)
    else:
        select = {**cuts, "evclass": 1024, "evtype": 3, "emin": 100, "emax": 316228}
        binning = {
            "algorithm": "HEALPIX", "hpx_ordering_scheme": "RING", "hpx_order": 7,
            "coordsys": "GAL", "hpx_ebin": True, "hpx_region": "", "ebinalg": "LOG",
            "emin": 100, "emax": 316228, "enumbins": 28,
        }  # fmt: skip
        binned, merged = "chunk_hpxcube", ("merge_hpxcubes", COUNTS)
        lt_merge = ("merge_ltcubes", LIVETIME)
    scfile = str(data / "lat_spacecraft_merged.fits")
    return {
        "input": {"directory": str(data / "weekly" / "photon"), "pattern": "*.fits"},
        "common_files": {"scfile": scfile},
        "engine": "native",
        "resources": {"cores": 2},
        "steps": [
            {"name": "gtselect", "tool": "gtselect", "inputs": {"infile": "{input}"},
             "params": select, "outputs": {"temp_select": "{stem}_temp_select.fits"}},
            {"name": "gtmktime", "tool": "gtmktime",
             "inputs": {"scfile": "{scfile}", "evfile": "{temp_select}"},
             "params": {"filter": "(DATA_QUAL>0)&&(LAT_CONFIG==1)", "roicut": False},
             "outputs": {"temp_gti": "{stem}_temp_gti.fits"}},
            {"name": "bin", "tool": "gtbin",
             "inputs": {"evfile": "{temp_gti}", "scfile": "{scfile}"},
             "params": binning, "outputs": {binned: "{stem}_" + binned + ".fits"}},
            {"name": "gtltcube", "tool": "gtltcube",
             "inputs": {"evfile": "{temp_gti}", "scfile": "{scfile}"},
             "params": {"dcostheta": 0.025, "binsz": 1, "phibins": 1, "zmax": 90},
             "outputs": {"chunk_ltcube": "{stem}_chunk_ltcube.fits"}},
        ],
        "merging": [
            {"name": merged[0], "input_pattern": "{" + binned + "}",
             "output_file": "./" + merged[1], "strategy": "image_sum"},
            {"name": lt_merge[0], "input_pattern": "{chunk_ltcube}",
             "output_file": "./" + lt_merge[1], "strategy": "hierarchical", "tool": "gtltsum"},
        ],
    }  # fmt: skip


def check_post_products(name: str, root: Path) -> None:
    """The post-processing products: exposure on the counts grid, and flux = counts /
    exposure (0 where the exposure is 0), checked against numpy."""
    import numpy as np

    if name == FIRST:
        counts = fits.getdata(root / FIRST_CCUBE).astype(np.float64)
        exposure = fits.getdata(root / FIRST_EXPOSURE).astype(np.float64)
        assert exposure.shape == (2, 1800, 3600)  # EDGE planes of the one energy bin
        # farith wraps the one-plane counts map around the two exposure planes (HEASARC
        # farith), as with the real tool; where the exposure is 0 it writes blank (-999).
        corr = fits.getdata(root / FIRST_CORRMAP)
        expected = np.where(exposure > 0, counts / np.where(exposure > 0, exposure, 1), -999)
        np.testing.assert_array_equal(corr, expected.astype(np.float32))
        assert (exposure[0] > 0).mean() > 0.5  # most of the AIT ellipse (π/4 of the rectangle)
        return
    with (
        fits.open(root / COUNTS) as c,
        fits.open(root / EXPOSURE) as e,
        fits.open(root / FLUX) as f,
    ):
        assert e["HPXEXPOSURES"].header["NSIDE"] == 128 and len(e["ENERGIES"].data) == 28
        for k in (1, 14, 28):
            cnt = np.asarray(c["SKYMAP"].data[f"CHANNEL{k}"], dtype=np.float64)
            exp = np.asarray(e["HPXEXPOSURES"].data[f"ENERGY{k}"], dtype=np.float64)
            flux = np.asarray(f["SKYMAP"].data[f"CHANNEL{k}"], dtype=np.float64)
            assert (exp > 0).all()  # all-sky exposure of two days
            np.testing.assert_array_equal(flux, cnt / exp)


def ran(summary: dict[str, Any]) -> dict[str, set[str]]:
    """step → the files a tool really ran for."""
    out: dict[str, set[str]] = {}
    for f in summary["per_file"]:
        for step in f["steps"]:
            if step["step"] not in f["cached_steps"]:
                out.setdefault(step["step"], set()).add(f["file"])
    return out


@pytest.mark.parametrize("name", [FIRST, LATER])
def test_seed_runs_natively_to_merged_products(
    prefect_server: dict[str, str],
    seed: Path,
    lat_data: Path,
    tmp_path: Path,
    name: str,
) -> None:
    before = sha256s(lat_data)
    root = tmp_path / "repo"
    root.mkdir()
    summary = tmp_path / "summary.json"
    settings = data_settings(name, lat_data)
    # The whole chain, post-processing included: gtexpcube2 and farith (first config), the
    # runner's scripts/parallel_expcube.py and scripts/hpx_divide.py (later config, not
    # here) all run natively, with the IRFs of the real CALDB subset.
    out = cli(
        seed / name,
        root,
        "--summary-json",
        str(summary),
        *sets(settings),
        env={**prefect_server, "CALDB": str(CALDB)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    products = (FIRST_CCUBE, FIRST_LTCUBE) if name == FIRST else (COUNTS, LIVETIME)
    post = (FIRST_EXPOSURE, FIRST_CORRMAP) if name == FIRST else (EXPOSURE, FLUX)
    for product in products:
        assert (root / product).is_file(), product
        assert (root / (product + ".manifest.json")).is_file()
    check_post_products(name, root)
    # Like the existing runner: per-file intermediates went with the work area; only the
    # merged products (with their manifests and quick-look) are left as files to use.
    left = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_relative_to(root / "products" / "logs")
    )
    cache = "ltcube_cache/" if name == LATER else "products/.fermipipe-cache/"
    user_files = [p for p in left if not p.startswith(cache)]
    expected = {p for product in products for p in (product, product + ".manifest.json")}
    expected.add(str(Path(products[0]).with_suffix(".png")))
    expected.update(post)
    assert set(user_files) == expected, user_files
    assert not any("temp_" in p or "chunk_" in p for p in user_files)
    assert not (root / "work").exists()
    report = json.loads(summary.read_text())
    assert report["files"]["ok"] == len(WEEKS)
    if name == LATER:
        assert report["science_models"]["point_source_catalog"] == "4FGL-DR4"
        manifest = json.loads((root / (COUNTS + ".manifest.json")).read_text())
        assert manifest["science_models"]["galactic_diffuse"] == "gll_iem_v07.fits"
        with fits.open(root / COUNTS) as hdul:
            assert hdul["SKYMAP"].header["NSIDE"] == 128
            assert hdul["SKYMAP"].header["ORDERING"] == "RING"
            assert len(hdul["EBOUNDS"].data) == 28

    # The same chain in the structured form gives the same products.
    other = tmp_path / "structured"
    other.mkdir()
    config = other / "structured.yaml"
    config.write_text(yaml.safe_dump(structured(name, lat_data), sort_keys=False))
    out = cli(config, other, env=prefect_server)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for product in products:
        fits_equal(root / product, other / product)

    if name == LATER:
        # resources.ltcube_cache.enabled: false — livetime cubes are not reused; the rest is.
        again = tmp_path / "again.json"
        out = cli(
            seed / name,
            root,
            "--skip-post",
            "--summary-json",
            str(again),
            *sets([*settings, "resources.ltcube_cache.enabled=false"]),
            env=prefect_server,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        steps_run = ran(json.loads(again.read_text()))
        # gtltcube ran again (its input, the gtmktime intermediate, was remade for it); the
        # counts maps came from the cache.
        assert len(steps_run.get("gtltcube", ())) == len(WEEKS), steps_run
        assert "gtbin_healpix" not in steps_run, steps_run
    assert sha256s(lat_data) == before  # inputs untouched


def test_interpolation_problems_are_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "pipe.yaml"
    config.write_text(
        "vars:\n  emin: 100\n"
        "input: {directory: weekly}\n"
        "steps:\n"
        "  - name: sel\n"
        "    command: gtselect infile={input} outfile={sel} emin=${vars.emin} emax=${vars.emx}\n"
        "    outputs: ['{sel}']\n"
        "    cleanup: ['{later}']\n"
        "  - name: two\n"
        "    command: gtmktime evfile={sel} outfile={later} scfile=\\${HOME}/ft2.fits\n"
        "    outputs: ['{later}']\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config, check_files=False)
    lines = info.value.problems
    assert all("\n" not in line and line.startswith(f"{config}: ") for line in lines)
    text = "\n".join(lines)
    assert "steps[0].command: cannot resolve" in text and "vars.emx" in text
    assert "steps[1].command: '${' left after interpolation" in text
    # ... and the rest of the config is checked in the same pass.
    assert (
        "steps[0].cleanup[0]: 'later' is not an output of this or an earlier step "
        "(it is made by the later step 'two')" in text
    )
    assert len(lines) == 3

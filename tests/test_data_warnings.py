"""Bad data accepted by the tools is reported, never passed over in silence (issue #11, 4).

Real sample weeks damaged in a temporary folder: a spacecraft file cut to its first 2 h of a
day-long week, NaN/infinite values injected into event columns, an EVENTS table with 0 rows.
Each must give a data warning naming the file and the size of the problem — through the
native tools, the runner (logged at WARNING) and a real pipeline run (in the summary) — and
with ``on_data_warning: fail`` the file's step fails with the warning as its error. Products
stay as the Fermitools write them; clean weeks give no warning. Inputs' sha256 are checked
before and after every case.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from pipeline_project import PHOTON, SAMPLE, SPACECRAFT, make_project, run_flow

from fermipipe import runner
from fermipipe.errors import ToolError
from fermipipe.native import run_tool
from fermipipe.plan import Invocation
from fermipipe.summary import FileSummary, RunSummary

REPO = Path(__file__).resolve().parents[1]
WEEK = "701"
FT1 = SAMPLE / PHOTON.format(WEEK)
FT2 = SAMPLE / SPACECRAFT.format(WEEK)
SELECT = {
    "ra": "INDEF",
    "dec": "INDEF",
    "rad": "INDEF",
    "tmin": "INDEF",
    "tmax": "INDEF",
    "emin": "100",
    "emax": "1000000",
    "zmax": "90",
    "evclass": "128",
    "evtype": "3",
}
MKTIME = {"filter": "(DATA_QUAL>0)&&(LAT_CONFIG==1)", "roicut": "no"}
LTCUBE = {"dcostheta": "0.1", "binsz": "10", "zmax": "90"}
CCUBE = {
    "algorithm": "CCUBE",
    "ebinalg": "LOG",
    "emin": "100",
    "emax": "1000000",
    "enumbins": "4",
    "nxpix": "72",
    "nypix": "36",
    "binsz": "5",
    "coordsys": "GAL",
    "xref": "0",
    "yref": "0",
    "axisrot": "0",
    "proj": "AIT",
}


def digests(*folders: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*.fits"))
    }


@pytest.fixture(autouse=True)
def sample_untouched() -> Iterator[None]:
    """The shared sample weeks are never written by any case."""
    before = digests(SAMPLE)
    yield
    assert digests(SAMPLE) == before


# ------------------------------------------------------------------------ damaged files


def ft2_first_hours(src: Path, dst: Path, hours: float = 2.0) -> Path:
    """The spacecraft file with only the rows of its first ``hours``."""
    with fits.open(src) as h:
        rows = h["SC_DATA"].data
        h["SC_DATA"].data = rows[rows["STOP"] <= rows["START"][0] + hours * 3600]
        h.writeto(dst)
    return dst


def with_values(src: Path, dst: Path, column: str, rows: list[int], value: float) -> Path:
    """The event file with ``value`` (NaN, inf) in ``column`` at ``rows``."""
    with fits.open(src) as h:
        h["EVENTS"].data[column][rows] = value
        h.writeto(dst)
    return dst


def zero_rows(src: Path, dst: Path) -> Path:
    """The event file with an EVENTS table of 0 rows (GTI and headers kept)."""
    with fits.open(src) as h:
        h["EVENTS"].data = h["EVENTS"].data[:0]
        h.writeto(dst)
    return dst


def selected_rows(path: Path, n: int, tmp: Path) -> list[int]:
    """``n`` rows of ``path`` the example selection keeps (so NaN there must drop them)."""
    out = tmp / f".kept-{path.name}"
    run_tool("gtselect", {"infile": str(path), "outfile": str(out), **SELECT})
    with fits.open(path) as h, fits.open(out) as k:
        kept = np.isin(h["EVENTS"].data["TIME"], k["EVENTS"].data["TIME"])
    out.unlink()
    return [int(i) for i in np.flatnonzero(kept)[:n]]


def only_one(warnings: list[str], pattern: str) -> str:
    hits = [w for w in warnings if re.search(pattern, w)]
    assert len(hits) == 1, warnings
    return hits[0]


# ------------------------------------------------------------------------- native tools


def test_ft2_covering_2h_of_a_day_warns_in_gtmktime_gtltcube_gtbin(tmp_path: Path) -> None:
    """ONTIME 5612 s of 69920 s went through without a word: now 'cover 8.0 %'."""
    cut = ft2_first_hours(FT2, tmp_path / "ft2_2h.fits")
    before = digests(tmp_path)
    sel = tmp_path / "sel.fits"
    run_tool("gtselect", {"infile": str(FT1), "outfile": str(sel), **SELECT})
    out = run_tool(
        "gtmktime",
        {"evfile": str(sel), "scfile": str(cut), "outfile": str(tmp_path / "gti.fits"), **MKTIME},
    )
    warning = only_one(out.warnings, "cover")
    assert str(cut) in warning and "cover 8.0 % of the GTI" in warning, warning
    assert "of 69920 s" in warning
    with fits.open(tmp_path / "gti.fits") as h:  # the product is still the tool's own
        assert 0 < h["GTI"].header["ONTIME"] < 0.09 * 69920
    # The livetime cube and counts cube of a full-day GTI from the cut FT2.
    good = tmp_path / "gti_full.fits"
    assert not run_tool(
        "gtmktime", {"evfile": str(sel), "scfile": str(FT2), "outfile": str(good), **MKTIME}
    ).warnings
    lt = run_tool(
        "gtltcube",
        {"evfile": str(good), "scfile": str(cut), "outfile": str(tmp_path / "lt.fits"), **LTCUBE},
    )
    warning = only_one(lt.warnings, "cover")
    assert str(cut) in warning and re.search(r"cover [78]\.\d % of the GTI", warning), warning
    cc = run_tool(
        "gtbin",
        {"evfile": str(good), "scfile": str(cut), "outfile": str(tmp_path / "cc.fits"), **CCUBE},
    )
    assert str(cut) in only_one(cc.warnings, r"cover [78]\.\d %")
    assert digests(tmp_path).items() >= before.items()


def test_nan_energies_dropped_by_gtselect_are_counted(tmp_path: Path) -> None:
    rows = selected_rows(FT1, 3, tmp_path)
    bad = with_values(FT1, tmp_path / "nan.fits", "ENERGY", rows, np.nan)
    before = digests(tmp_path)
    clean = run_tool(
        "gtselect", {"infile": str(FT1), "outfile": str(tmp_path / "a.fits"), **SELECT}
    )
    out = run_tool("gtselect", {"infile": str(bad), "outfile": str(tmp_path / "b.fits"), **SELECT})
    with fits.open(bad) as h:
        n = len(h["EVENTS"].data)
    warning = only_one(out.warnings, "NaN")
    assert warning == f"{bad}: 3 of {n} rows have NaN ENERGY (dropped)"
    assert out.n_rows == clean.n_rows - 3  # dropped as cfitsio drops them: no other change
    assert digests(tmp_path).items() >= before.items()


def test_infinite_ra_kept_without_a_position_cut_is_counted(tmp_path: Path) -> None:
    """Non-finite values in a column no cut looks at are kept, and the warning says so."""
    bad = with_values(FT1, tmp_path / "inf.fits", "RA", [0, 1], np.inf)
    params = {**SELECT, "emin": "INDEF", "emax": "INDEF", "zmax": "180", "evclass": "INDEF"}
    out = run_tool("gtselect", {"infile": str(bad), "outfile": str(tmp_path / "o.fits"), **params})
    assert only_one(out.warnings, "RA").endswith("2 of 15000 rows have infinite RA (kept)")


def test_nan_values_read_by_gtmktime_and_gtbin_are_counted(tmp_path: Path) -> None:
    """The same class of damage met by the tools that read events after gtselect: gtmktime
    keeps NaN energies (it cuts on TIME only) and drops NaN times; gtbin says how many rows
    it could not bin properly, and refuses NaN positions in one line, not a projection
    error."""
    nan = with_values(FT1, tmp_path / "nan_e.fits", "ENERGY", [3, 10], np.nan)
    nan = with_values(nan, tmp_path / "nan_et.fits", "TIME", [8], np.nan)
    before = digests(tmp_path)
    mk = run_tool(
        "gtmktime",
        {"evfile": str(nan), "scfile": str(FT2), "outfile": str(tmp_path / "g.fits"), **MKTIME},
    )
    assert mk.warnings == [
        f"{nan}: 2 of 15000 rows have NaN ENERGY (kept)",
        f"{nan}: 1 of 15000 rows have NaN TIME (dropped)",
    ]
    pha = {"algorithm": "PHA1", "ebinalg": "LOG", "emin": "100", "emax": "1000000"}
    cc = run_tool(
        "gtbin",
        {"evfile": str(nan), "scfile": str(FT2), "outfile": str(tmp_path / "p.fits"), **pha,
         "enumbins": "4"},
    )  # fmt: skip
    assert f"{nan}: 2 of 15000 rows have NaN ENERGY" in cc.warnings
    bad_ra = with_values(FT1, tmp_path / "nan_ra.fits", "RA", [5, 6], np.nan)
    with pytest.raises(ToolError, match="2 event\\(s\\) have NaN or infinite RA/DEC"):
        run_tool(
            "gtbin",
            {"evfile": str(bad_ra), "outfile": str(tmp_path / "c.fits"), **CCUBE},
        )
    assert digests(tmp_path).items() >= before.items()


def test_zero_row_events_table_warns_in_every_tool_that_reads_it(tmp_path: Path) -> None:
    """A 0-row EVENTS table still carries a day of good time: each tool says so."""
    empty = zero_rows(FT1, tmp_path / "zero.fits")
    before = digests(tmp_path)
    sel = tmp_path / "sel.fits"
    out = run_tool("gtselect", {"infile": str(empty), "outfile": str(sel), **SELECT})
    assert str(empty) in only_one(out.warnings, "0 rows in EVENTS but 69920 s of good time")
    lt = run_tool(
        "gtltcube",
        {"evfile": str(sel), "scfile": str(FT2), "outfile": str(tmp_path / "lt.fits"), **LTCUBE},
    )
    warning = only_one(lt.warnings, "0 rows")
    assert str(sel) in warning and "full livetime goes into the cube" in warning
    mk = run_tool(
        "gtmktime",
        {"evfile": str(sel), "scfile": str(FT2), "outfile": str(tmp_path / "g.fits"), **MKTIME},
    )
    assert str(sel) in only_one(mk.warnings, "0 rows in EVENTS")
    cc = run_tool(
        "gtbin",
        {"evfile": str(sel), "scfile": str(FT2), "outfile": str(tmp_path / "c.fits"), **CCUBE},
    )
    assert str(sel) in only_one(cc.warnings, "0 rows in EVENTS")
    assert digests(tmp_path).items() >= before.items()


def test_clean_sample_weeks_give_no_data_warning(tmp_path: Path) -> None:
    """No false alarms: the real weeks (FT2 covering their GTI) pass every tool quietly."""
    for week in ("700", "701", "702"):
        ft1, ft2 = SAMPLE / PHOTON.format(week), SAMPLE / SPACECRAFT.format(week)
        sel, gti = tmp_path / f"sel{week}.fits", tmp_path / f"gti{week}.fits"
        outcomes = [
            run_tool("gtselect", {"infile": str(ft1), "outfile": str(sel), **SELECT}),
            run_tool(
                "gtmktime", {"evfile": str(sel), "scfile": str(ft2), "outfile": str(gti), **MKTIME}
            ),
            run_tool(
                "gtltcube",
                {
                    "evfile": str(gti),
                    "scfile": str(ft2),
                    "outfile": str(tmp_path / "l.fits"),
                    **LTCUBE,
                },
            ),
            run_tool(
                "gtbin",
                {
                    "evfile": str(gti),
                    "scfile": str(ft2),
                    "outfile": str(tmp_path / "c.fits"),
                    **CCUBE,
                },
            ),
        ]
        assert [w for o in outcomes for w in o.warnings] == [], week


def test_native_command_line_prints_data_warnings_and_exits_0(tmp_path: Path) -> None:
    bad = with_values(FT1, tmp_path / "nan.fits", "ENERGY", selected_rows(FT1, 2, tmp_path), np.nan)
    proc = subprocess.run(
        [sys.executable, "-m", "fermipipe.native", "gtselect", f"infile={bad}",
         f"outfile={tmp_path / 'o.fits'}", *(f"{k}={v}" for k, v in SELECT.items())],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"warning: {bad}: 2 of 15000 rows have NaN ENERGY (dropped)"


# ------------------------------------------------------------------------------ runner


def _mktime_invocation(tmp_path: Path, scfile: Path, policy: str) -> Invocation:
    sel = tmp_path / "sel.fits"
    if not sel.exists():
        run_tool("gtselect", {"infile": str(FT1), "outfile": str(sel), **SELECT})
    out = tmp_path / f"gti_{policy}.fits"
    return Invocation(
        step="mktime",
        file_id=f"w{WEEK}",
        engine="native",
        tool="gtmktime",
        params={"evfile": str(sel), "scfile": str(scfile), "outfile": str(out), **MKTIME},
        inputs={"evfile": sel, "scfile": scfile},
        outputs={"chunk_gti": out},
        on_data_warning=policy,
    )


def test_runner_logs_data_warning_and_fails_the_step_under_fail_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cut = ft2_first_hours(FT2, tmp_path / "ft2_2h.fits")
    logger = logging.getLogger("test-data-warnings")
    with caplog.at_level(logging.WARNING, logger="test-data-warnings"):
        result = runner.run_invocation(
            _mktime_invocation(tmp_path, cut, "warn"), logger=logger, log_path=tmp_path / "l.log"
        )
    assert result.status == "ok" and len(result.warnings) == 1
    assert "cover 8.0 %" in result.warnings[0]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(result.warnings[0] in m for m in logged), logged
    assert result.warnings[0] in (tmp_path / "l.log").read_text()

    failed = runner.run_invocation(_mktime_invocation(tmp_path, cut, "fail"))
    assert failed.status == "failed" and failed.failure_kind == "deterministic"
    assert failed.error is not None and failed.warnings[0] in failed.error
    assert runner.classify_failure(failed) == "deterministic"  # never retried
    # The policy is part of what the step does: a "warn" result is never reused for "fail".
    warn_inv = _mktime_invocation(tmp_path, cut, "warn")
    fail_inv = _mktime_invocation(tmp_path, cut, "fail")
    assert warn_inv.params_digest != fail_inv.params_digest


def test_summary_lists_data_warnings_per_file_with_a_count() -> None:
    step = runner.StepResult("mktime", "w701", "ok", "gtmktime ...", warnings=["ft2 cover 8 %"])
    summary = RunSummary("c.yaml", 2, 0.0, 1.0)
    summary.files = [
        FileSummary("w701", "in/w701.fits", "ok", steps=[step]),
        FileSummary("w700", "in/w700.fits", "ok"),
    ]
    d = summary.to_dict()
    assert d["data_warnings"] == 1
    assert [f["warnings"] for f in d["per_file"]] == [["mktime: ft2 cover 8 %"], []]
    md = summary.markdown()
    assert "## Data warnings" in md and "- `w701`: mktime: ft2 cover 8 %" in md
    assert "1 data warning(s)" in summary.breakdown_text()


# ------------------------------------------------------------------------- pipeline runs


def _pipeline_case(
    root: Path, damage: Any, step: str, text: str, prefect_server: dict[str, str]
) -> None:
    """Weeks 700 and 701 with 701 damaged by ``damage(project)``: with ``warn`` the run
    ends Completed and the summary holds ``text`` for week 701's ``step``; a rerun (cache
    hits) still reports it; with ``fail`` the run ends Failed, that file failed at ``step``
    with the warning as its error."""
    config = make_project(root)
    damaged = damage(root / "in")
    inputs = digests(root / "in")
    state, summary = run_flow(config, root / "warn.json")
    assert state.is_completed(), summary
    assert summary["data_warnings"] >= 1
    by_file = {f["file"]: f for f in summary["per_file"]}
    (week,) = [f for f in by_file if "w701" in f]
    assert not any(w for f, s in by_file.items() if f != week for w in s["warnings"])
    warning = only_one(by_file[week]["warnings"], re.escape(text))
    assert warning.startswith(f"{step}: ") and damaged.name in warning, warning
    state, again = run_flow(config, root / "again.json")  # from the cache: still reported
    assert state.is_completed()
    assert warning in {w for f in again["per_file"] for w in f["warnings"]}

    cfg = yaml.safe_load(config.read_text())
    cfg["on_data_warning"] = "fail"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    state, summary = run_flow(config, root / "fail.json")
    assert not state.is_completed()
    assert summary["state"] == "Failed" and summary["files"]["failed"] == 1
    (failure,) = summary["failures"]
    assert failure["step"] == step and text in failure["error"], failure
    assert damaged.name in failure["error"]
    assert digests(root / "in") == inputs


def test_pipeline_ft2_covering_2h_of_the_day_warns_or_fails(
    tmp_path: Path, prefect_server: dict[str, str]
) -> None:
    def damage(folder: Path) -> Path:
        name = folder / SPACECRAFT.format(WEEK)
        cut = ft2_first_hours(name, folder / "cut.fits")
        cut.replace(name)
        return name

    _pipeline_case(tmp_path, damage, "mktime", "cover 8.0 % of the GTI", prefect_server)


def test_pipeline_nan_energies_warn_or_fail(tmp_path: Path, prefect_server: dict[str, str]) -> None:
    def damage(folder: Path) -> Path:
        name = folder / PHOTON.format(WEEK)
        bad = with_values(
            name, folder / "nan.tmp", "ENERGY", selected_rows(name, 4, folder.parent), np.nan
        )
        bad.replace(name)
        return name

    _pipeline_case(
        tmp_path, damage, "select", "4 of 15000 rows have NaN ENERGY (dropped)", prefect_server
    )


def test_pipeline_zero_row_events_week_warns_or_fails(
    tmp_path: Path, prefect_server: dict[str, str]
) -> None:
    """The 0-row week is left out of the merges (empty) and says why, instead of passing as
    a week of good time with no counts."""

    def damage(folder: Path) -> Path:
        name = folder / PHOTON.format(WEEK)
        zero_rows(name, folder / "zero.tmp").replace(name)
        return name

    _pipeline_case(
        tmp_path, damage, "select", "0 rows in EVENTS but 69920 s of good time", prefect_server
    )

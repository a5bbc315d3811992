"""Planning: rendering, quoting, engine choice, key=value parsing, dry runs of the mission."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from shared_inputs import FITS_STUB

from fermipipe.config import parse_config
from fermipipe.errors import ConfigError
from fermipipe.fermitools import FermitoolsInstall, locate
from fermipipe.plan import (
    Plan,
    build_plan,
    expand_command,
    format_param,
    prepare,
    render_dry_run,
    stem_of,
    tool_invocation,
    week_of,
)

REPO = Path(__file__).resolve().parents[1]
WEEKS = ("010", "011", "012", "013")
HOSTILE = 'a b;c\'d "q" $(x) é.fits'


def fermitools_layout(root: Path, tools: tuple[str, ...] = ("gtselect",)) -> FermitoolsInstall:
    """A conda-style Fermitools *directory layout* (empty files, never executed): lets the
    planner see an installation without any tool being run."""
    (root / "share" / "fermitools" / "syspfiles").mkdir(parents=True)
    (root / "bin").mkdir()
    for tool in tools:
        exe = root / "bin" / tool
        exe.write_bytes(b"")
        exe.chmod(0o755)
    install = locate(root)
    assert install is not None
    return install


ALL_TOOLS = ("gtselect", "gtmktime", "gtbin", "gtltcube", "gtltsum", "gtexpcube2", "farith")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Stand-in weekly photon files and an FT2 (the planner only needs their names)."""
    weekly = tmp_path / "weekly"
    weekly.mkdir()
    for week in WEEKS:
        (weekly / f"lat_photon_weekly_w{week}_p305_v001.fits").write_bytes(FITS_STUB)
    (tmp_path / "ft2.fits").write_bytes(FITS_STUB)
    return tmp_path


def small(data: Path, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "input": {"directory": str(data / "weekly"), "pattern": "*.fits"},
        "common_files": {"scfile": str(data / "ft2.fits")},
        "steps": steps,
    }
    cfg.update(extra)
    return cfg


def plan_of(data: Path, raw: dict[str, Any], **kwargs: Any) -> Plan:
    return build_plan(parse_config(raw, data, root=data), **kwargs)


SELECT_CMD = {
    "name": "select",
    "command": "gtselect infile={input} outfile={chunk_sel} emin=100 emax=1000000 zmax=90 "
    "evclass=128",
    "outputs": ["chunk_sel"],
}


# ------------------------------------------------------------------------- helpers


def test_stem_and_week() -> None:
    assert stem_of("/d/lat_photon_weekly_w010_p305_v001.fits") == "lat_photon_weekly_w010_p305_v001"
    assert stem_of("x.fits.gz") == "x" and stem_of("y.FITS") == "y" and stem_of("z.evt") == "z"
    assert week_of("lat_photon_weekly_w010_p305_v001.fits") == "010"
    assert week_of("lat_spacecraft_weekly_w1234_p310_v001.fits") == "1234"
    assert week_of("ft1.fits") is None


def test_format_param_fermitools_style() -> None:
    assert format_param(True) == "yes" and format_param(False) == "no"
    assert format_param(None) == "INDEF"
    assert format_param(1000000.0) == "1000000" and format_param(0.025) == "0.025"
    assert format_param(128) == "128" and format_param("CCUBE") == "CCUBE"
    assert format_param(1e-7) == "1e-07"


def test_expand_command_quotes_by_position() -> None:
    values = {"f": HOSTILE}
    shell, words = expand_command("printf '%s\\n' {f} '{f}' \"{f}\" x={f}", values)
    assert words == ["printf", "%s\\n", HOSTILE, HOSTILE, HOSTILE, f"x={HOSTILE}"]
    # The real shell reads back exactly the values, whatever the quoting context.
    out = subprocess.run(["/bin/sh", "-c", shell], capture_output=True, check=True, timeout=10)
    assert out.stdout.decode().splitlines() == [HOSTILE, HOSTILE, HOSTILE, f"x={HOSTILE}"]


def test_expand_command_detects_shell_syntax() -> None:
    for template in ("a {f} | b", "a {f} > out", "a; b", "a && b", "echo $HOME", "ls *.fits"):
        assert expand_command(template, {"f": "v"})[1] is None, template
    assert expand_command("a 'x|y' \"p>q\" {{lit}}", {})[1] == ["a", "x|y", "p>q", "{lit}"]
    with pytest.raises(ValueError, match="unterminated"):
        expand_command("a 'b", {})


# ------------------------------------------------------------------------- rendering


def test_existing_form_native_parses_key_values(data: Path) -> None:
    plan = plan_of(data, small(data, [SELECT_CMD]))
    assert len(plan.files) == len(WEEKS)
    first = plan.files[0]
    inv = first.chain[0]
    assert inv.engine == "native" and inv.tool == "gtselect"
    expected_out = plan.workdir / first.file_id / f"{first.file_id}_chunk_sel.fits"
    assert inv.params == {
        "infile": str(first.input),
        "outfile": str(expected_out),
        "emin": "100",
        "emax": "1000000",
        "zmax": "90",
        "evclass": "128",
    }
    # Not merged, not kept: an intermediate in the run's work area (it goes with it).
    assert inv.outputs == {"chunk_sel": expected_out}
    assert first.keep == ()
    assert inv.inputs == {"input": first.input}


def test_structured_native_and_fermitools_rendering(data: Path, tmp_path: Path) -> None:
    step = {
        "name": "select",
        "tool": "gtselect",
        "inputs": {"infile": "{input}"},
        "params": {"emin": 1000, "emax": 1e6, "zmax": 90.0, "ra": None, "convtype": -1},
        "outputs": {"chunk_sel": "{stem}_sel.fits"},
        "cleanup": True,
        "timeout": 30,
        "max_parallel": 2,
    }
    raw = small(data, [step])
    native = plan_of(data, raw).files[0].chain[0]
    fp = plan_of(data, raw).files[0]
    out = str(fp.chain[0].outputs["chunk_sel"])
    assert native.engine == "native" and native.argv is None
    assert native.params == {
        "infile": str(fp.input),
        "outfile": out,
        "emin": "1000",
        "emax": "1000000",
        "zmax": "90",
        "ra": "INDEF",
        "convtype": "-1",
    }
    assert native.timeout == 30 and native.max_parallel == 2
    assert out == str(data / "work" / fp.file_id / f"{fp.file_id}_sel.fits")
    assert fp.cleanup == (Path(out),)

    install = fermitools_layout(tmp_path / "env")
    ft = plan_of(data, raw, fermitools=install).files[0].chain[0]
    assert ft.engine == "fermitools" and ft.params == native.params
    assert ft.argv == (
        "gtselect",
        f"infile={fp.input}",
        f"outfile={out}",
        "emin=1000",
        "emax=1000000",
        "zmax=90",
        "ra=INDEF",
        "convtype=-1",
        "mode=h",
        "clobber=yes",
    )


def test_structured_output_to_named_parameter(data: Path) -> None:
    step = {
        "name": "arith",
        "tool": "fcarith",
        "engine": "native",
        "inputs": {"infil1": "{input}"},
        "outputs": {"res": "{stem}_r.fits"},
    }
    with pytest.raises(ConfigError, match=r"steps\[0\] \(step 'arith'\): fcarith has no native"):
        plan_of(data, small(data, [step]))
    step = {
        "name": "bin",
        "tool": "gtbin",
        "inputs": {"evfile": "{input}"},
        "params": {"outfile": "{res}", "algorithm": "CMAP"},
        "outputs": {"res": "{stem}_r.fits"},
    }
    inv = plan_of(data, small(data, [step])).files[0].chain[0]
    assert inv.params["outfile"] == str(inv.outputs["res"])
    assert list(inv.params) == ["evfile", "outfile", "algorithm"]


def test_hostile_file_names_shell_and_argv(tmp_path: Path) -> None:
    """Spaces, quotes, ';', '$(…)' and non-ASCII survive: shell commands (run for real with
    /bin/sh) and argv lists both carry the exact name."""
    weekly = tmp_path / "in dir;x"
    weekly.mkdir()
    hostile = weekly / HOSTILE
    hostile.write_bytes(FITS_STUB)
    steps = [
        {
            "name": "echo",
            # bare, single-quoted and double-quoted placeholders, plus a redirection (shell)
            "command": "printf '%s\\n' {input} '{input}' \"{input}\" > {listing}",
            "outputs": {"listing": "{stem}.txt"},
        },
        {
            "name": "select",
            "command": "gtselect infile={input} outfile={sel} emin=100",
            "outputs": {"sel": "{stem}_sel.fits"},
        },
    ]
    raw = {"input": {"directory": str(weekly), "pattern": "*.fits"}, "steps": steps}
    plan = build_plan(parse_config(raw, tmp_path, root=tmp_path))
    (fp,) = plan.files
    echo, select = fp.chain
    assert echo.engine == "shell"
    listing = echo.outputs["listing"]
    listing.parent.mkdir(parents=True, exist_ok=True)
    assert echo.shell is not None
    subprocess.run(["/bin/sh", "-c", echo.shell], check=True, timeout=10)
    assert listing.read_text(encoding="utf-8").splitlines() == [str(hostile)] * 3
    assert not (tmp_path / "x").exists()  # nothing ran from the ';' or '$(x)'
    # Native: the parsed parameter holds the exact path.
    assert select.engine == "native" and select.params["infile"] == str(hostile)
    assert shlex.split(select.render())[1] == f"infile={hostile}"


def test_hostile_name_in_fermitools_argv(tmp_path: Path) -> None:
    weekly = tmp_path / "weekly"
    weekly.mkdir()
    hostile = weekly / HOSTILE
    hostile.write_bytes(FITS_STUB)
    raw = {
        "input": {"directory": str(weekly)},
        "steps": [SELECT_CMD],
    }
    install = fermitools_layout(tmp_path / "env")
    (fp,) = build_plan(parse_config(raw, tmp_path, root=tmp_path), fermitools=install).files
    inv = fp.chain[0]
    assert inv.engine == "fermitools" and inv.argv is not None
    assert inv.argv[0] == "gtselect" and inv.argv[1] == f"infile={hostile}"
    assert inv.argv[-2:] == ("mode=h", "clobber=yes")


# ------------------------------------------------------------------------- engines


def test_engine_auto_without_fermitools_is_native(data: Path) -> None:
    assert locate(environ={"PATH": str(data)}) is None
    plan = plan_of(data, small(data, [SELECT_CMD]))
    assert plan.engines == {"select": "native"}


def test_no_native_version_without_fermitools_is_config_error(data: Path) -> None:
    steps = [
        SELECT_CMD,
        {
            "name": "expmap",
            "command": "gtsrcmaps scfile={chunk_sel} outfile={x} irfs=P8R3_SOURCE_V3",
            "outputs": ["x"],
        },
    ]
    with pytest.raises(ConfigError) as info:
        plan_of(data, small(data, steps))
    message = str(info.value)
    assert "steps[1] (step 'expmap'): gtsrcmaps has no native version and no Fermitools" in (
        message
    )
    # A dry run may still show the plan, with the problem as a warning.
    plan = plan_of(data, small(data, steps), allow_missing_tools=True)
    assert plan.warnings and "gtsrcmaps has no native version" in plan.warnings[0]
    assert plan.files[0].chain[1].engine == "fermitools"


def test_engine_fermitools_requested_without_install(data: Path) -> None:
    raw = small(data, [SELECT_CMD], engine="fermitools")
    with pytest.raises(ConfigError, match="engine fermitools but no Fermitools installation"):
        plan_of(data, raw)


def test_engine_choice_with_install(data: Path, tmp_path: Path) -> None:
    install = fermitools_layout(tmp_path / "env", ALL_TOOLS)
    native_step = dict(SELECT_CMD, engine="native")
    plan = plan_of(data, small(data, [native_step]), fermitools=install)
    assert plan.engines["select"] == "native"
    plan = plan_of(data, small(data, [SELECT_CMD], engine="native"), fermitools=install)
    assert plan.engines["select"] == "native"
    plan = plan_of(data, small(data, [SELECT_CMD]), fermitools=install)
    assert plan.engines["select"] == "fermitools"


def test_tool_missing_from_install(data: Path, tmp_path: Path) -> None:
    install = fermitools_layout(tmp_path / "env", ("gtselect",))
    step = {"name": "exp", "command": "gtsrcmaps scfile={input} outfile={e}", "outputs": ["e"]}
    with pytest.raises(ConfigError, match="gtsrcmaps has no native version and is not in"):
        plan_of(data, small(data, [step]), fermitools=install)


def test_shell_syntax_gt_command_without_fermitools(data: Path) -> None:
    step = {
        "name": "select",
        "command": "gtselect infile={input} outfile={s} emin=100 && gtexpcube2 x=1",
        "outputs": ["s"],
    }
    with pytest.raises(ConfigError, match="the shell command runs gtselect"):
        plan_of(data, small(data, [step]))


def test_plain_program_is_shell(data: Path) -> None:
    step = {"name": "copy", "command": "cp {input} {c}", "outputs": ["c"]}
    inv = plan_of(data, small(data, [step])).files[0].chain[0]
    assert inv.engine == "shell" and inv.tool is None
    assert shlex.split(inv.shell or "") == ["cp", str(inv.inputs["input"]), str(inv.outputs["c"])]


def test_positional_ftools_command_runs_through_shell(data: Path, tmp_path: Path) -> None:
    install = fermitools_layout(tmp_path / "env", ("gtselect", "fcopy"))
    step = {"name": "copy", "command": "fcopy {input} {c}", "outputs": ["c"]}
    inv = plan_of(data, small(data, [step]), fermitools=install).files[0].chain[0]
    assert inv.engine == "shell" and inv.tool == "fcopy"


def test_bad_key_value_for_native_tool(data: Path) -> None:
    step = {"name": "s", "command": "gtselect {input} outfile={o}", "outputs": ["o"]}
    with pytest.raises(ConfigError, match=r"steps\[0\].command: argument .* is not of the form"):
        plan_of(data, small(data, [step]))


# ------------------------------------------------------------------------- placement


def test_workdir_outdir_cleanup_and_keep(data: Path, tmp_path: Path) -> None:
    steps = [
        dict(SELECT_CMD, cleanup=True),
        {
            "name": "ccube",
            "command": "gtbin evfile={chunk_sel} scfile={scfile} outfile={cc} algorithm=CCUBE",
            "outputs": {"cc": "{stem}_cc_w{week}.fits"},
            "cleanup": True,
        },
        {
            "name": "lt",
            "command": "gtltcube evfile={chunk_sel} scfile={scfile} outfile={lt}",
            "outputs": {"lt": "{stem}_lt.fits"},
            "keep": ["{lt}"],
        },
    ]
    merging = [
        {
            "name": "ccube",
            "input_pattern": "{cc}",
            "output_file": "cc.fits",
            "strategy": "image_sum",
        },
        {
            "name": "ltcube",
            "input_pattern": "{lt}",
            "output_file": "lt.fits",
            "strategy": "hierarchical",
            "tool": "gtltsum",
        },
    ]
    post = [{"name": "ls", "command": "ls -l {ccube} {ltcube} {scfile} > {output_dir}/ls.txt"}]
    work = tmp_path / "ram"
    plan = plan_of(data, small(data, steps, merging=merging, post_processing=post), workdir=work)
    assert plan.workdir == work and plan.outdir == data / "products"
    fp = plan.files[1]
    fid = fp.file_id
    assert fp.week == "011"
    sel, cc, lt = (
        inv.outputs[k] for inv, k in zip(fp.chain, ("chunk_sel", "cc", "lt"), strict=True)
    )
    assert sel == work / fid / f"{fid}_chunk_sel.fits"
    assert cc == work / fid / f"{fid}_cc_w011.fits"
    assert lt == work / fid / f"{fid}_lt.fits"
    assert fp.cleanup == (sel,)  # cc is merged: deleted after the merges instead
    assert cc in plan.cleanup and sel not in plan.cleanup
    assert fp.keep == ((lt, data / "products" / lt.name),)
    ccube, ltcube = plan.merges
    assert ccube.strategy == "image_sum" and ccube.output == data / "products" / "cc.fits"
    assert ccube.inputs == tuple(f.chain[1].outputs["cc"] for f in plan.files)
    assert ltcube.tool == "gtltsum" and ltcube.engine == "native"
    (ls,) = plan.post
    assert ls.engine == "shell" and ls.file_id == "post"
    assert shlex.split((ls.shell or "").split(">")[0])[2:] == [
        str(data / "products" / "cc.fits"),
        str(data / "products" / "lt.fits"),
        str(data / "ft2.fits"),
    ]


def test_week_placeholder_needs_week_in_name(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ft1.fits").write_bytes(FITS_STUB)
    step = {
        "name": "s",
        "command": "gtselect infile={input} outfile={o}",
        "outputs": {"o": "w{week}.fits"},
    }
    raw = {"input": {"directory": str(tmp_path / "in")}, "steps": [step]}
    with pytest.raises(ConfigError, match=r"steps\[0\].outputs.o: \{week\} is not defined for ft1"):
        build_plan(parse_config(raw, tmp_path, root=tmp_path))


def test_kept_outputs_without_stem_collide(data: Path) -> None:
    step = {
        "name": "s",
        "command": "gtselect infile={input} outfile={o}",
        "outputs": {"o": "sel.fits"},
    }
    plan_of(data, small(data, [step]))  # in the work area, one folder per input: no clash
    step["keep"] = True
    with pytest.raises(ConfigError, match="is the same for inputs"):
        plan_of(data, small(data, [step]))


def test_glob_matching_nothing_at_plan_time(data: Path) -> None:
    cfg = parse_config(small(data, [SELECT_CMD]), data, root=data)
    cfg.input.pattern = "*.none"
    with pytest.raises(ConfigError, match=r"input.pattern: no file matches '\*.none'"):
        build_plan(cfg)


def test_only_steps(data: Path) -> None:
    steps = [SELECT_CMD, {"name": "cp", "command": "cp {chunk_sel} {c}", "outputs": ["c"]}]
    plan = plan_of(data, small(data, steps), only_steps=["cp"])
    assert [inv.step for inv in plan.files[0].chain] == ["cp"]
    with pytest.raises(
        ConfigError,
        match=r"no step, merge or post-processing step named 'cpp' \(did you mean 'cp'\?\)",
    ):
        plan_of(data, small(data, steps), only_steps=["cpp"])


def test_params_digest_is_path_independent(data: Path, tmp_path: Path) -> None:
    a = plan_of(data, small(data, [SELECT_CMD]))
    b = plan_of(data, small(data, [SELECT_CMD]), workdir=tmp_path / "elsewhere")
    digests = {fp.chain[0].params_digest for fp in (*a.files, *b.files)}
    assert len(digests) == 1
    other = dict(SELECT_CMD, command=SELECT_CMD["command"].replace("zmax=90", "zmax=100"))
    assert plan_of(data, small(data, [other])).files[0].chain[0].params_digest not in digests


# ------------------------------------------------------------------------- mission dry runs


def mission(data: Path, name: str) -> dict[str, Any]:
    """configs/<name> pointed at the stand-in weekly files (as a user would edit it)."""
    raw = yaml.safe_load((REPO / "configs" / name).read_text())
    raw["input"]["directory"] = str(data / "weekly")
    raw["common_files"]["scfile"] = str(data / "ft2.fits")
    return raw


EXPECTED = {
    "gtselect": {
        "emin": "100",
        "emax": "1000000",
        "zmax": "90",
        "evclass": "128",
        "evtype": "3",
        "ra": "INDEF",
        "dec": "INDEF",
        "rad": "INDEF",
    },
    "gtmktime": {"filter": "(DATA_QUAL>0)&&(LAT_CONFIG==1)", "roicut": "no"},
    "gtbin": {
        "algorithm": "CCUBE",
        "ebinalg": "LOG",
        "emin": "100",
        "emax": "1000000",
        "enumbins": "24",
        "nxpix": "3600",
        "nypix": "1800",
        "binsz": "0.1",
        "coordsys": "GAL",
        "proj": "AIT",
    },
    "gtltcube": {"dcostheta": "0.025", "binsz": "1", "zmax": "90"},
}
FILE_PARAMS = {
    "gtselect": ("infile", "outfile"),
    "gtmktime": ("scfile", "evfile", "outfile"),
    "gtbin": ("evfile", "scfile", "outfile"),
    "gtltcube": ("evfile", "scfile", "outfile"),
}


@pytest.mark.parametrize("name", ["mission.yaml", "mission-structured.yaml"])
def test_mission_dry_run_every_week_fermitools(data: Path, tmp_path: Path, name: str) -> None:
    install = fermitools_layout(tmp_path / "env", ALL_TOOLS)
    plan = build_plan(parse_config(mission(data, name), data, root=data), fermitools=install)
    text = render_dry_run(plan)
    assert not plan.warnings
    lines = [
        shlex.split(line.split("] ", 1)[1])
        for line in text.splitlines()
        if line.startswith("[fermitools] gt")
    ]
    for week in WEEKS:
        infile = str(data / "weekly" / f"lat_photon_weekly_w{week}_p305_v001.fits")
        stem = f"lat_photon_weekly_w{week}_p305_v001"
        for tool, expected in EXPECTED.items():
            matches = [w for w in lines if w[0] == tool and any(stem in x for x in w)]
            assert len(matches) == 1, (tool, week)
            words = matches[0]
            assert words[-2:] == ["mode=h", "clobber=yes"]
            params = dict(w.split("=", 1) for w in words[1:])
            assert set(FILE_PARAMS[tool]) <= set(params)
            for key, value in expected.items():
                assert params[key] == value, (tool, key)
        select = next(w for w in lines if w[0] == "gtselect" and f"infile={infile}" in w)
        assert select  # the week's own file is gtselect's input
    post = [
        shlex.split(line.split("] ", 1)[1])
        for line in text.splitlines()
        if line.startswith("[fermitools] ") and "products" in line and "gtexpcube2" in line
    ]
    assert len(post) == 2
    exp = dict(w.split("=", 1) for w in post[0][1:])
    assert exp["infile"] == str(data / "products" / "mission_ltcube.fits")
    assert exp["cmap"] == str(data / "products" / "mission_ccube.fits")
    assert exp["irfs"] == "P8R3_SOURCE_V3" and exp["bincalc"] == "EDGE"
    assert "[fermitools] farith infil1=" in text


@pytest.mark.parametrize("name", ["mission.yaml", "mission-structured.yaml"])
def test_mission_dry_run_without_fermitools(data: Path, name: str, shared_data: Path) -> None:
    cfg = parse_config(mission(data, name), data, root=data)
    # gtexpcube2 and farith are native now: the whole mission chain plans without Fermitools,
    # given a CALDB for the exposure's IRFs (checked now, not after the merges).
    with pytest.raises(ConfigError, match=r"post_processing\[0\].*no LAT CALDB found"):
        build_plan(cfg)
    cfg.caldb = shared_data.parent / "caldb"
    plan = build_plan(cfg)
    text = render_dry_run(plan)
    for week in WEEKS:
        for tool in ("gtselect", "gtmktime", "gtbin", "gtltcube"):
            assert (
                sum(
                    1
                    for line in text.splitlines()
                    if line.startswith(f"[native] {tool} ") and f"_w{week}_" in line
                )
                == 1
            ), (tool, week)
    assert "# WARNING:" not in text and "image_sum" in text and "hierarchical with gtltsum" in text
    for tool in ("gtexpcube2", "farith"):
        assert any(line.startswith(f"[native] {tool} ") for line in text.splitlines()), tool


@pytest.mark.parametrize("name", ["mission.yaml", "mission-structured.yaml"])
def test_weekly_counts_maps_only_a_sum_reads_are_written_compact(
    data: Path, name: str, shared_data: Path
) -> None:
    raw = mission(data, name)
    raw["caldb"] = str(shared_data.parent / "caldb")

    def gtbin_params(config: dict[str, Any]) -> list[dict[str, str]]:
        plan = build_plan(parse_config(config, data, root=data))
        return [inv.params for fp in plan.files for inv in fp.chain if inv.tool == "gtbin"]

    # Native gtbin, its cube read only by the image_sum: compact (outform is native-only).
    assert [p.get("outform") for p in gtbin_params(raw)] == ["compact"] * len(WEEKS)
    # Kept for the user, it stays a plain FITS cube.
    kept = yaml.safe_load(yaml.safe_dump(raw))
    next(s for s in kept["steps"] if s["name"] == "ccube")["keep"] = True
    assert all("outform" not in p for p in gtbin_params(kept))
    # Read by another step, likewise.
    read = yaml.safe_load(yaml.safe_dump(raw))
    read["steps"].append(
        {"name": "peek", "command": "cp {chunk_ccube} {peek}", "outputs": {"peek": "{stem}_p.fits"}}
    )
    assert all("outform" not in p for p in gtbin_params(read))


def test_both_mission_configs_plan_the_same_commands(data: Path, tmp_path: Path) -> None:
    install = fermitools_layout(tmp_path / "env", ALL_TOOLS)
    a = build_plan(parse_config(mission(data, "mission.yaml"), data, root=data), fermitools=install)
    b = build_plan(
        parse_config(mission(data, "mission-structured.yaml"), data, root=data), fermitools=install
    )
    for fa, fb in zip(a.files, b.files, strict=True):
        for ia, ib in zip(fa.chain, fb.chain, strict=True):
            assert ia.tool == ib.tool and ia.params == ib.params and ia.outputs == ib.outputs
        assert fa.cleanup == fb.cleanup and fa.keep == fb.keep
    assert [(m.name, m.output, m.inputs) for m in a.merges] == [
        (m.name, m.output, m.inputs) for m in b.merges
    ]
    assert [p.params for p in a.post] == [p.params for p in b.post]
    assert a.files[0].chain[3].max_parallel == 4


def test_tool_invocation_for_merges(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a b.fits", tmp_path / "b.fits", tmp_path / "c.fits"
    inv = tool_invocation(
        "ltcube", "merge", "fermitools", "gtltsum", {"infile1": a, "infile2": b, "outfile": c}
    )
    assert inv.argv == (
        "gtltsum",
        f"infile1={a}",
        f"infile2={b}",
        f"outfile={c}",
        "mode=h",
        "clobber=yes",
    )
    native = tool_invocation("ltcube", "merge", "native", "gtltsum", {"infile1": a, "chatter": 2})
    assert native.argv is None and native.params == {"infile1": str(a), "chatter": "2"}


def test_prepare_loads_locates_and_plans(data: Path, tmp_path: Path, shared_data: Path) -> None:
    raw = mission(data, "mission.yaml")
    raw["caldb"] = str(shared_data.parent / "caldb")  # the native exposure's IRFs
    path = data / "mission.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg, install, plan, _choices = prepare(path, environ={})  # all native: no Fermitools needed
    assert install is None and len(plan.files) == len(WEEKS) and not plan.warnings
    env_prefix = tmp_path / "env"
    fermitools_layout(env_prefix, ALL_TOOLS)
    cfg, install, plan, _choices = prepare(path, environ={"CONDA_PREFIX": str(env_prefix)})
    assert install is not None and install.prefix == env_prefix
    assert {inv.engine for fp in plan.files for inv in fp.chain} == {"fermitools"}
    raw["fermitools"] = {"prefix": "no-such-env"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"mission.yaml: fermitools.prefix: no Fermitools"):
        prepare(path, environ={})


def test_only_steps_skips_checks_and_cleanup_of_steps_not_run(data: Path) -> None:
    steps = [
        dict(SELECT_CMD, cleanup=True),
        {"name": "exp", "command": "gtsrcmaps scfile={chunk_sel} outfile={e}", "outputs": ["e"]},
    ]
    with pytest.raises(ConfigError, match="gtsrcmaps has no native version"):
        plan_of(data, small(data, steps))
    plan = plan_of(data, small(data, steps), only_steps=["select"])
    assert not plan.warnings and all(fp.cleanup for fp in plan.files)
    with pytest.raises(ConfigError, match="gtsrcmaps has no native version"):
        plan_of(data, small(data, steps), only_steps=["exp"])
    plan = plan_of(data, small(data, steps), only_steps=["exp"], allow_missing_tools=True)
    assert all(not fp.cleanup for fp in plan.files)  # select's file is not ours to delete


def test_directory_placeholders(data: Path) -> None:
    steps = [
        {
            "name": "note",
            "command": "cp {config_dir}/ft2.fits {output_dir}/{stem}.copy {c}",
            "outputs": ["c"],
        }
    ]
    inv = plan_of(data, small(data, steps)).files[0].chain[0]
    words = shlex.split(inv.shell or "")
    assert words[1] == str(data / "ft2.fits")
    assert words[2] == str(data / "products" / "lat_photon_weekly_w010_p305_v001.copy")


def test_parameter_names_checked_against_par_file(data: Path, tmp_path: Path) -> None:
    install = fermitools_layout(tmp_path / "env", ALL_TOOLS)
    # A system parameter file in APE format (name,type,mode,default,min,max,prompt).
    (install.syspfiles / "gtselect.par").write_text(
        "# comment\n"
        'infile,f,a,"",,,"Input FT1 file"\n'
        'outfile,f,a,"",,,"Output FT1 file"\n'
        'emin,r,a,30,0,,"Lower energy (MeV)"\n'
        'emax,r,a,300000,0,,"Upper energy (MeV)"\n'
        'zmax,r,a,180,0,180,"Maximum zenith angle value (degrees)"\n'
        'evclass,i,h,INDEF,0,31,"Event class selection"\n'
        'mode,s,h,"ql",,,"Mode of automatic parameters"\n'
    )
    assert install.par_names("gtselect") == [
        "infile", "outfile", "emin", "emax", "zmax", "evclass", "mode",
    ]  # fmt: skip
    assert install.par_names("gtbin") is None
    plan = plan_of(data, small(data, [SELECT_CMD]), fermitools=install)
    assert plan.engines == {"select": "fermitools"}
    bad = dict(SELECT_CMD, command=SELECT_CMD["command"].replace("emin=", "emn="))
    with pytest.raises(
        ConfigError,
        match=r"steps\[0\].command: gtselect has no parameter 'emn' \(did you mean 'emin'\?\)",
    ):
        plan_of(data, small(data, [bad]), fermitools=install)
    structured = {
        "name": "select",
        "tool": "gtselect",
        "inputs": {"infile": "{input}"},
        "params": {"zmx": 90},
        "outputs": {"s": "{stem}_s.fits"},
    }
    with pytest.raises(
        ConfigError,
        match=r"steps\[0\].params.zmx: gtselect has no parameter 'zmx' \(did you mean 'zmax'\?\)",
    ):
        plan_of(data, small(data, [structured]), fermitools=install)


def test_ftmerge_strategy_engine(data: Path, tmp_path: Path) -> None:
    steps = [SELECT_CMD]
    merge = {
        "name": "events",
        "input_pattern": "{chunk_sel}",
        "output_file": "ev.fits",
        "strategy": "ftmerge",
    }
    plan = plan_of(data, small(data, steps, merging=[merge]))
    assert plan.merges[0].engine == "native"  # GTI union by default (spec §8)
    install = fermitools_layout(tmp_path / "env", ("gtselect", "ftmerge"))
    plan = plan_of(
        data, small(data, steps, merging=[dict(merge, engine="fermitools")]), fermitools=install
    )
    assert plan.merges[0].engine == "fermitools"
    assert plan.merges[0].inputs == tuple(fp.chain[0].outputs["chunk_sel"] for fp in plan.files)


def test_rebase_moves_every_work_folder_path_and_nothing_else() -> None:
    from fermipipe.plan import Invocation, rebase

    old, new = Path("/shm/run-1"), Path("/node/chain-7")
    inv = Invocation(
        step="bin",
        file_id="w1",
        engine="fermitools",
        tool="gtbin",
        params={"evfile": "/shm/run-1/w1/sel.fits", "scfile": "/data/ft2.fits", "nxpix": "10"},
        argv=("gtbin", "evfile=/shm/run-1/w1/sel.fits", "scfile=/data/ft2.fits", "/shm/run-1/x"),
        inputs={"evfile": Path("/shm/run-1/w1/sel.fits"), "scfile": Path("/data/ft2.fits")},
        outputs={"outfile": Path("/shm/run-1/w1/cc.fits"), "kept": Path("/out/cc.fits")},
    )
    moved = rebase(inv, old, new)
    assert moved is not None
    assert moved.params == {
        "evfile": "/node/chain-7/w1/sel.fits",
        "scfile": "/data/ft2.fits",
        "nxpix": "10",
    }
    assert moved.argv == (
        "gtbin",
        "evfile=/node/chain-7/w1/sel.fits",
        "scfile=/data/ft2.fits",
        "/node/chain-7/x",
    )
    assert moved.inputs["evfile"] == Path("/node/chain-7/w1/sel.fits")
    assert moved.inputs["scfile"] == Path("/data/ft2.fits")
    assert moved.outputs == {
        "outfile": Path("/node/chain-7/w1/cc.fits"),
        "kept": Path("/out/cc.fits"),  # a product outside the work folder stays put
    }
    # A folder name that is only a prefix of another is not a parent.
    lookalike = Invocation(step="s", file_id="w1", engine="native", params={"a": "/shm/run-10/f"})
    assert rebase(lookalike, old, new).params == {"a": "/shm/run-10/f"}  # type: ignore[union-attr]
    shell = Invocation(step="s", file_id="w1", engine="shell", shell="cp /shm/run-1/a /shm/run-1/b")
    assert rebase(shell, old, new).shell == "cp /node/chain-7/a /node/chain-7/b"  # type: ignore[union-attr]
    assert rebase(shell, old, Path("/node/my chain")) is None  # would need quoting

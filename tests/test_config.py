"""Config loading and validation: both forms, defaults, paths, one-line errors."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from shared_inputs import FITS_STUB

from fermipipe.config import PipelineConfig, load_config, parse_config, placeholders
from fermipipe.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def base_config() -> dict[str, Any]:
    """A small valid existing-form config (paths relative to the config file)."""
    return {
        "resources": {"cores": 2},
        "input": {"directory": "weekly", "pattern": "*.fits"},
        "common_files": {"scfile": "ft2.fits"},
        "steps": [
            {
                "name": "select",
                "command": "gtselect infile={input} outfile={chunk_sel} emin=100 zmax=90",
                "outputs": {"chunk_sel": "{stem}_sel.fits"},
                "cleanup": True,
            },
            {
                "name": "ccube",
                "command": "gtbin evfile={chunk_sel} scfile={scfile} outfile={chunk_ccube} "
                "algorithm=CCUBE",
                "outputs": ["chunk_ccube"],
            },
        ],
        "merging": [
            {
                "name": "ccube",
                "input_pattern": "{chunk_ccube}",
                "output_file": "ccube.fits",
                "strategy": "image_sum",
            }
        ],
        "post_processing": [{"name": "show", "command": "ls -l {ccube}"}],
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with stand-in input files and an FT2 (contents irrelevant to config)."""
    (tmp_path / "weekly").mkdir()
    for week in ("010", "011"):
        (tmp_path / "weekly" / f"lat_photon_weekly_w{week}_p305_v001.fits").write_bytes(FITS_STUB)
    (tmp_path / "ft2.fits").write_bytes(FITS_STUB)
    return tmp_path


def write(project: Path, data: dict[str, Any], name: str = "pipe.yaml") -> Path:
    path = project / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(project: Path, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(project, data))
    problems = info.value.problems
    assert problems, "a config error names at least one problem"
    for line in problems:
        assert "\n" not in line, "each config problem must be one line"
        assert line.startswith(str(project / "pipe.yaml") + ": ")
    return str(info.value)


# ------------------------------------------------------------------------------- valid


def test_existing_form_loads_with_defaults(project: Path) -> None:
    cfg = load_config(write(project, base_config()))
    assert isinstance(cfg, PipelineConfig)
    assert cfg.resources.max_workers == 2
    assert cfg.on_failure == "stop"
    assert cfg.engine == "auto"
    assert cfg.runner.kind == "threads"
    assert cfg.resources.ram_disk.enabled is False
    assert cfg.input.grouping == "one_to_one"
    # Relative paths are resolved against the config file's directory.
    assert cfg.input.directory == project / "weekly"
    assert cfg.common_files["scfile"] == project / "ft2.fits"
    # Products and work area default to the run root (the current directory), never next
    # to the config (which may be read-only, or kept with the data).
    assert cfg.root == Path.cwd()
    assert cfg.output.directory == Path.cwd() / "products"
    assert cfg.output.workdir == Path.cwd() / "work"
    assert cfg.base_dir == project
    # A plain list of outputs derives the file name from the stem.
    assert cfg.steps[1].outputs == {"chunk_ccube": "{stem}_chunk_ccube.fits"}
    assert cfg.steps[0].cleanup_outputs == ["chunk_sel"]
    assert cfg.steps[1].cleanup_outputs == []
    assert cfg.merging[0].output_name == "chunk_ccube"


def test_relative_paths_do_not_depend_on_cwd(project: Path, tmp_path_factory: Any) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    data = base_config()
    data["output"] = {"directory": "products"}
    path = write(project, data)
    old = Path.cwd()
    os.chdir(elsewhere)
    try:
        cfg = load_config(os.path.relpath(path, elsewhere))
    finally:
        os.chdir(old)
    assert cfg.input.directory == project / "weekly"
    assert cfg.output.directory == project / "products"


def test_cores_auto_resolves_to_available_cpus(project: Path) -> None:
    data = base_config()
    data["resources"]["cores"] = "auto"
    cfg = load_config(write(project, data))
    assert cfg.resources.max_workers == len(os.sched_getaffinity(0))


def test_structured_form_loads(project: Path) -> None:
    data = base_config()
    data["steps"][0] = {
        "name": "select",
        "tool": "gtselect",
        "inputs": {"infile": "{input}"},
        "params": {"emin": 1000, "zmax": 90, "evclass": 128, "ra": None},
        "outputs": {"chunk_sel": "{stem}_sel.fits"},
        "engine": "native",
        "timeout": 60,
        "max_parallel": 1,
    }
    cfg = load_config(write(project, data))
    step = cfg.steps[0]
    assert step.structured and not cfg.steps[1].structured
    assert step.params == {"emin": 1000, "zmax": 90, "evclass": 128, "ra": None}
    assert step.engine == "native" and step.timeout == 60 and step.max_parallel == 1


def test_mixed_forms_and_optional_sections(project: Path) -> None:
    data = base_config()
    data["steps"].append(
        {
            "name": "ltcube",
            "tool": "gtltcube",
            "inputs": {"evfile": "{chunk_sel}", "scfile": "{scfile}"},
            "params": {"dcostheta": 0.025, "binsz": 1},
            "outputs": {"chunk_ltcube": "{stem}_lt.fits"},
            "max_parallel": 4,
        }
    )
    data["merging"].append(
        {
            "name": "ltcube",
            "input_pattern": "{chunk_ltcube}",
            "output_file": "lt.fits",
            "strategy": "hierarchical",
            "tool": "gtltsum",
        }
    )
    data["runner"] = {"kind": "dask", "address": "tcp://scheduler:8786"}
    data["cache"] = {"enabled": False, "directory": "cache"}
    data["fermitools"] = {"prefix": "envs/fermi"}
    # An installation's directory layout (an empty, never executed gtselect).
    (project / "envs" / "fermi" / "share" / "fermitools" / "syspfiles").mkdir(parents=True)
    (project / "envs" / "fermi" / "bin").mkdir()
    (project / "envs" / "fermi" / "bin" / "gtselect").write_bytes(b"")
    (project / "envs" / "fermi" / "bin" / "gtselect").chmod(0o755)
    data["output"] = {"directory": "out"}
    data["on_failure"] = "skip"
    cfg = load_config(write(project, data))
    assert [s.name for s in cfg.steps] == ["select", "ccube", "ltcube"]
    assert cfg.runner.kind == "dask" and cfg.runner.address == "tcp://scheduler:8786"
    assert cfg.cache.enabled is False and cfg.cache.directory == project / "cache"
    assert cfg.fermitools.prefix == project / "envs" / "fermi"
    assert cfg.output.directory == project / "out"
    assert cfg.on_failure == "skip"


def test_structured_input_path_resolved_against_config_dir(project: Path) -> None:
    data = base_config()
    data["steps"][1] = {
        "name": "ccube",
        "tool": "gtbin",
        "inputs": {"evfile": "{chunk_sel}", "scfile": "ft2.fits"},
        "params": {"algorithm": "CCUBE"},
        "outputs": {"chunk_ccube": "{stem}_ccube.fits"},
    }
    cfg = load_config(write(project, data))
    assert cfg.steps[1].inputs["scfile"] == str(project / "ft2.fits")


def test_placeholders_helper() -> None:
    assert placeholders("a {x} {{literal}} {y_2} {print $1}") == ["x", "y_2"]


def test_check_files_false_skips_filesystem(tmp_path: Path) -> None:
    cfg = parse_config(base_config(), tmp_path, check_files=False)
    assert cfg.input.directory == tmp_path / "weekly"


def test_mission_configs_validate_structurally() -> None:
    for name in ("mission.yaml", "mission-structured.yaml"):
        cfg = load_config(REPO / "configs" / name, check_files=False)
        assert [s.name for s in cfg.steps] == ["select", "mktime", "ccube", "ltcube"]
        assert [m.strategy for m in cfg.merging] == ["image_sum", "hierarchical"]
        assert cfg.step("ltcube").max_parallel == 4


# ------------------------------------------------------------------------------- errors


def test_unknown_top_level_key_suggests(project: Path) -> None:
    data = base_config()
    data["merge"] = data.pop("merging")
    assert error_of(project, data).endswith("merge: unknown key (did you mean 'merging'?)")


def test_unknown_step_key_names_path(project: Path) -> None:
    data = base_config()
    data["steps"][1]["comand"] = data["steps"][1].pop("command")
    assert "steps[1].comand: unknown key (did you mean 'command'?)" in error_of(project, data)


def test_unknown_nested_key(project: Path) -> None:
    data = base_config()
    data["resources"]["ram_disk"] = {"enabled": True, "min_ram": 4}
    assert "resources.ram_disk.min_ram: unknown key (did you mean 'min_ram_gb'?)" in error_of(
        project, data
    )


def test_unknown_key_without_close_match_lists_allowed(project: Path) -> None:
    data = base_config()
    data["input"]["zzz"] = 1
    assert "input.zzz: unknown key (allowed: directory, grouping, pattern)" in error_of(
        project, data
    )


def test_bad_cores_value(project: Path) -> None:
    data = base_config()
    data["resources"]["cores"] = "many"
    assert "resources.cores: must be a positive integer or 'auto' (got 'many')" in error_of(
        project, data
    )


def test_bad_strategy(project: Path) -> None:
    data = base_config()
    data["merging"][0]["strategy"] = "sum"
    message = error_of(project, data)
    assert "merging[0].strategy:" in message and "'image_sum'" in message


def test_missing_required_key(project: Path) -> None:
    data = base_config()
    del data["input"]
    assert error_of(project, data).endswith("input: required key is missing")


def test_step_needs_one_form(project: Path) -> None:
    data = base_config()
    data["steps"][0]["tool"] = "gtselect"
    assert "needs exactly one of 'command'" in error_of(project, data)


def test_unknown_placeholder(project: Path) -> None:
    data = base_config()
    data["steps"][1]["command"] = "gtbin evfile={chunk_sle} outfile={chunk_ccube}"
    message = error_of(project, data)
    assert "steps[1].command: unknown placeholder {chunk_sle} (did you mean {chunk_sel}?)" in (
        message
    )


def test_placeholder_of_later_step(project: Path) -> None:
    data = base_config()
    data["steps"][0]["command"] = "gtselect infile={chunk_ccube} outfile={chunk_sel}"
    assert (
        "steps[0].command: placeholder {chunk_ccube} is an output of the later step 'ccube'"
        in error_of(project, data)
    )


def test_placeholder_in_structured_params(project: Path) -> None:
    data = base_config()
    data["steps"][0] = {
        "name": "select",
        "tool": "gtselect",
        "inputs": {"infile": "{inptu}"},
        "outputs": {"chunk_sel": "{stem}_sel.fits"},
    }
    assert "steps[0].inputs.infile: unknown placeholder {inptu} (did you mean {input}?)" in (
        error_of(project, data)
    )


def test_input_glob_matches_nothing(project: Path) -> None:
    data = base_config()
    data["input"]["pattern"] = "*.evt"
    assert f"input.pattern: no file matches '*.evt' in {project / 'weekly'}" in error_of(
        project, data
    )


def test_input_directory_missing(project: Path) -> None:
    data = base_config()
    data["input"]["directory"] = "nowhere"
    assert f"input.directory: directory not found: {project / 'nowhere'}" in error_of(project, data)


def test_missing_common_file(project: Path) -> None:
    data = base_config()
    data["common_files"]["scfile"] = "missing_ft2.fits"
    assert f"common_files.scfile: file not found: {project / 'missing_ft2.fits'}" in error_of(
        project, data
    )


def test_two_steps_write_same_output_name(project: Path) -> None:
    data = base_config()
    data["steps"][1]["outputs"] = {"chunk_sel": "{stem}_other.fits"}
    data["steps"][1]["command"] = "gtbin evfile={input} outfile={chunk_sel}"
    data["merging"] = []
    data["post_processing"] = []
    assert "steps[1].outputs.chunk_sel: output 'chunk_sel' is also written by step 'select'" in (
        error_of(project, data)
    )


def test_two_steps_write_same_file_name(project: Path) -> None:
    data = base_config()
    data["steps"][1]["outputs"] = {"chunk_ccube": "{stem}_sel.fits"}
    assert (
        "steps[1].outputs.chunk_ccube: file name '{stem}_sel.fits' is also written by step "
        "'select'" in error_of(project, data)
    )


def test_merge_reads_output_no_step_makes(project: Path) -> None:
    data = base_config()
    data["merging"][0]["input_pattern"] = "{chunk_cube}"
    assert (
        "merging[0].input_pattern: {chunk_cube} is not an output of any step "
        "(did you mean {chunk_ccube}?)" in error_of(project, data)
    )


def test_merge_pattern_must_be_one_placeholder(project: Path) -> None:
    data = base_config()
    data["merging"][0]["input_pattern"] = "*_ccube.fits"
    assert "merging[0].input_pattern: '*_ccube.fits' must be one step-output placeholder" in (
        error_of(project, data)
    )


def test_hierarchical_merge_needs_tool(project: Path) -> None:
    data = base_config()
    data["merging"][0]["strategy"] = "hierarchical"
    assert "merging[0]: merge 'ccube': strategy 'hierarchical' needs a pairwise 'tool'" in (
        error_of(project, data)
    )


def test_post_processing_unknown_placeholder(project: Path) -> None:
    data = base_config()
    data["post_processing"][0]["command"] = "ls {ccub}"
    assert "post_processing[0].command: unknown placeholder {ccub} (did you mean {ccube}?)" in (
        error_of(project, data)
    )


def test_post_processing_cannot_use_per_file_placeholders(project: Path) -> None:
    data = base_config()
    data["post_processing"][0]["command"] = "ls {input}"
    assert "post_processing[0].command: unknown placeholder {input}" in error_of(project, data)


def test_cleanup_names_unknown_output(project: Path) -> None:
    data = base_config()
    data["steps"][0]["cleanup"] = ["chunk_sl"]
    assert (
        "steps[0].cleanup[0]: 'chunk_sl' is not an output of this or an earlier step "
        "(did you mean 'chunk_sel'?)" in error_of(project, data)
    )


def test_duplicate_step_names(project: Path) -> None:
    data = base_config()
    data["steps"][1]["name"] = "select"
    assert "steps[1].name: step name 'select' is used twice" in error_of(project, data)


def test_output_template_may_only_use_stem_and_week(project: Path) -> None:
    data = base_config()
    data["steps"][0]["outputs"] = {"chunk_sel": "{input}_sel.fits"}
    assert "steps[0].outputs.chunk_sel: unknown placeholder {input}" in error_of(project, data)


def test_output_file_name_must_be_plain(project: Path) -> None:
    data = base_config()
    data["steps"][0]["outputs"] = {"chunk_sel": "sub/{stem}.fits"}
    assert "steps[0].outputs: chunk_sel: output file name 'sub/{stem}.fits' must be a plain" in (
        error_of(project, data)
    )


def test_params_in_command_step_rejected(project: Path) -> None:
    data = base_config()
    data["steps"][0]["params"] = {"emin": 100}
    assert "'params'/'inputs' belong to structured steps" in error_of(project, data)


def test_structured_step_with_two_unassigned_outputs(project: Path) -> None:
    data = base_config()
    data["steps"][0] = {
        "name": "select",
        "tool": "gtselect",
        "inputs": {"infile": "{input}"},
        "outputs": {"chunk_sel": "{stem}_sel.fits", "extra": "{stem}_x.fits"},
    }
    assert "steps[0].outputs: step 'select' has several outputs" in error_of(project, data)


def test_param_value_must_be_scalar(project: Path) -> None:
    data = base_config()
    data["steps"][0] = {
        "name": "select",
        "tool": "gtselect",
        "inputs": {"infile": "{input}"},
        "params": {"emin": [1, 2]},
        "outputs": {"chunk_sel": "{stem}_sel.fits"},
    }
    assert "steps[0].params: params.emin: must be a string, number or boolean (got list)" in (
        error_of(project, data)
    )


def test_bad_engine_value(project: Path) -> None:
    data = base_config()
    data["engine"] = "fast"
    message = error_of(project, data)
    assert "engine: Input should be 'auto', 'fermitools' or 'native'" in message


def test_bad_runner_kind(project: Path) -> None:
    data = base_config()
    data["runner"] = {"kind": "slurm"}
    assert "runner.kind: Input should be 'threads' or 'dask'" in error_of(project, data)


def test_merge_name_clashes_with_output(project: Path) -> None:
    data = base_config()
    data["merging"][0]["name"] = "chunk_sel"
    assert "merging[0].name: merge name 'chunk_sel' clashes" in error_of(project, data)


def test_week_placeholder_reserved_for_common_files(project: Path) -> None:
    data = base_config()
    data["common_files"]["week"] = "ft2.fits"
    assert "common_files: 'week' is a reserved placeholder name" in error_of(project, data)


def test_missing_structured_input_file(project: Path) -> None:
    data = base_config()
    data["steps"][1] = {
        "name": "ccube",
        "tool": "gtbin",
        "inputs": {"evfile": "{chunk_sel}", "scfile": "nope.fits"},
        "outputs": {"chunk_ccube": "{stem}_ccube.fits"},
    }
    assert f"steps[1].inputs.scfile: file not found: {project / 'nope.fits'}" in error_of(
        project, data
    )


def test_invalid_yaml_is_one_line(project: Path) -> None:
    path = project / "pipe.yaml"
    path.write_text("steps: [\n  - name: a\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "invalid YAML" in str(info.value) and "\n" not in str(info.value)


def test_config_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_config_not_a_mapping(project: Path) -> None:
    path = project / "pipe.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(path)


def test_models_are_not_shared_between_loads(project: Path) -> None:
    data = base_config()
    first = load_config(write(project, copy.deepcopy(data)))
    second = load_config(write(project, copy.deepcopy(data), "other.yaml"))
    first.steps[0].outputs["x"] = "y"
    assert "x" not in second.steps[0].outputs


def test_command_must_use_its_outputs(project: Path) -> None:
    data = base_config()
    data["steps"][0]["command"] = "gtselect infile={input} outfile=fixed.fits"
    assert (
        "steps[0].outputs.chunk_sel: output {chunk_sel} is not used in the command of step "
        "'select'" in error_of(project, data)
    )


def test_union_type_error_is_one_line(project: Path) -> None:
    data = base_config()
    data["steps"][0]["cleanup"] = {"a": 1}
    message = error_of(project, data)
    assert "steps[0].cleanup: Input should be a valid boolean or input should be a valid list" in (
        message
    )


def test_fermitools_prefix_must_be_an_installation(project: Path) -> None:
    data = base_config()
    data["fermitools"] = {"prefix": "envs/none"}
    assert (
        f"fermitools.prefix: no Fermitools installation at {project / 'envs' / 'none'}"
        in error_of(project, data)
    )


def test_step_and_merge_names_are_safe(project: Path) -> None:
    data = base_config()
    data["steps"][0]["name"] = "../select"
    assert "steps[0].name: '../select': use letters, digits" in error_of(project, data)
    data = base_config()
    data["merging"][0]["name"] = "ccube-all"
    assert "merging[0].name: 'ccube-all': a merge name is a placeholder" in error_of(project, data)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("/data/*.fits", "must be relative to input.directory"),
        ("**a", "'**' can only be an entire path component"),
        ("", "empty glob pattern"),
    ],
)
def test_bad_glob_pattern(project: Path, pattern: str, why: str) -> None:
    data = base_config()
    data["input"]["pattern"] = pattern
    message = error_of(project, data)
    assert f"input.pattern: {pattern!r}: " in message and why in message


def test_recursive_glob(project: Path) -> None:
    (project / "weekly" / "sub").mkdir()
    (project / "weekly" / "sub" / "deep_w099_.fits").write_bytes(FITS_STUB)
    data = base_config()
    data["input"]["pattern"] = "**/*.fits"
    cfg = load_config(write(project, data))
    from fermipipe.plan import discover_inputs

    assert [p.name for p in discover_inputs(cfg)[0]] == [
        "lat_photon_weekly_w010_p305_v001.fits",
        "lat_photon_weekly_w011_p305_v001.fits",
        "deep_w099_.fits",
    ]

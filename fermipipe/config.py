"""Pipeline configuration: pydantic models, YAML loading, whole-config validation.

Public API (the contract for flows/ and tasks/)
------------------------------------------------
``load_config(path, *, check_files=True, root=None, overrides=(), collect=None)``
    Read a YAML file, resolve ``${...}`` with OmegaConf (``vars:``, ``${root:a/b}`` relative
    to the run root ``root``, default the current directory; ``overrides`` are ``key=value``
    settings applied first), validate everything, resolve relative paths against the config
    file's directory. Problems raise :class:`fermipipe.errors.ConfigError` carrying every
    problem found, one line each ``<file>: <key path>: <what is wrong>``, e.g.
    ``mission.yaml: steps[2].comand: unknown key (did you mean 'command'?)``.
    The flow prints them and exits with code 2. ``check_files=False`` skips the file-system
    checks (input directory, glob, common files) — for tests and tooling only.
``parse_config(data, base_dir, *, source="<config>", check_files=True) -> PipelineConfig``
    The same from an already-parsed mapping.
``placeholders(template) -> list[str]``
    The ``{name}`` placeholders of a template, in order (``{{``/``}}`` are literal braces).
``glob_files(directory, pattern) -> list[Path]``
    The sorted matches of a relative glob, whatever they are (ValueError for an
    empty/absolute/malformed pattern); the planner reports those it cannot use.
``structured_output_params(step) -> dict[str, str]``
    Output placeholder → the tool parameter receiving it, for a structured step.

``PipelineConfig`` (all models forbid unknown keys, with a "did you mean" hint):
    ``name``             optional pipeline name (flow-run names, reports).
    ``resources``        :class:`Resources`: ``cores`` (int or "auto"), ``max_workers``
                         (property: cores resolved to an int), ``ram_disk`` (:class:`RamDisk`),
                         ``timeout`` (default per-invocation timeout, seconds, None = none).
    ``input``            :class:`InputConfig`: ``directory`` (absolute after loading),
                         ``pattern`` (glob relative to it), ``grouping`` ("one_to_one").
    ``common_files``     dict name → absolute Path (each name is a template placeholder).
    ``steps``            list of :class:`StepConfig` (both forms, mixed freely).
    ``merging``          list of :class:`MergeConfig`.
    ``post_processing``  list of :class:`PostStepConfig`.
    ``output``           :class:`OutputConfig`: ``directory`` (merged products; default
                         ``products/`` next to the config), ``workdir`` (per-file intermediates
                         when no RAM disk is used; default ``work/`` next to the config).
    ``engine``           "auto" | "fermitools" | "native" (global default; steps may override).
    ``fermitools``       :class:`FermitoolsConfig`: ``prefix`` (a conda env) or None.
    ``on_failure``       "stop" (default: merging does not run when any file failed) | "skip"
                         (failed files are left out of merges and reported).
    ``runner``           :class:`RunnerConfig`: ``kind`` "threads" | "dask", ``address``,
                         ``cluster`` (validated only; extended by the runner helper).
    ``cache``            :class:`CacheConfig`: ``enabled``, ``directory`` (validated only).
    ``fermi_base``       the existing runner's Fermitools prefix (= ``fermitools.prefix``).
    ``caldb``            the LAT CALDB for native gtexpcube2/gtpsf (else $CALDB, Fermitools').
    ``run``              :class:`RunOptions`: ``steps``, ``skip_merge``, ``skip_post``.
    ``vars``             values for ``${vars.x}`` (resolved at load).
    ``science_models``   references carried into the run summary and manifests.
    ``base_dir``         (property) directory of the config file; ``source`` its path;
                         ``root`` the run root.

Relative paths (``input.directory``, ``common_files``, ``output.*``, ``fermitools.prefix``,
``cache.directory``, path values of structured ``inputs``) are resolved against the directory
that holds the config file, never against the current directory. ``output.directory`` and
``output.workdir`` default to ``products/`` and ``work/`` in the run root; a merge
``output_file`` with a folder is relative to the run root (:meth:`PipelineConfig.merge_output`).
Nothing in a path is expanded (``$HOME``, ``~`` are part of the name); use
``${oc.env:HOME}`` for an environment value.

Templates
---------
Per-file step templates (``command``, structured ``params``/``inputs`` values) may use
``{input}`` (the input file), ``{stem}`` (its name without .fits/.fits.gz), ``{week}`` (the
``NNN`` of a ``_wNNN_`` in the name, e.g. ``010``), every ``common_files`` name, every output
placeholder of an EARLIER step and the step's own outputs, ``{output_dir}`` and
``{config_dir}``. Output file-name templates may use ``{stem}`` and ``{week}``. Merge
``input_pattern`` is one placeholder some step outputs, e.g. ``"{chunk_ccube}"``.
Post-processing templates may use common files, merge names (the merged file: ``{ccube}``
for a merge named ``ccube``), ``{output_dir}``, ``{config_dir}``, and outputs of earlier (and
their own) post steps. Write ``{{``/``}}`` for literal braces.

Existing-form commands run from the run root (each with its own private PFILES), as the
existing runner's do from its repository root: a relative path written literally inside a
``command`` is relative to the root. Placeholders (``{config_dir}/x.fits``, ``{output_dir}``)
or common files name other places.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fermipipe.errors import ConfigError, FermipipeError
from fermipipe.fits.sniff import looks_like_fits_name, not_a_fits_file

__all__ = [
    "CacheConfig",
    "EngineChoice",
    "FermitoolsConfig",
    "InputConfig",
    "MergeConfig",
    "OutputConfig",
    "PER_FILE_PLACEHOLDERS",
    "PipelineConfig",
    "PostStepConfig",
    "RamDisk",
    "Resources",
    "RunChoices",
    "RunnerConfig",
    "StepConfig",
    "glob_files",
    "load_config",
    "parse_config",
    "placeholders",
    "structured_output_params",
]

EngineChoice = Literal["auto", "fermitools", "native"]
ParamValue = str | int | float | bool | None

#: The cache's folder name inside ``output.directory`` (when ``cache.directory`` is not set).
CACHE_DIRNAME = ".fermipipe-cache"
#: Placeholders every per-file template may use besides common files and step outputs.
PER_FILE_PLACEHOLDERS: tuple[str, ...] = ("input", "stem", "week")
#: Directories every template (per-file and post-processing) may use.
GLOBAL_PLACEHOLDERS: tuple[str, ...] = ("output_dir", "config_dir")
#: Placeholders an output file-name template may use.
OUTPUT_NAME_PLACEHOLDERS: tuple[str, ...] = ("stem", "week")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `{{` / `}}` are literal braces (str.format convention); `{ident}` is a placeholder; any other
# brace text (e.g. awk's `{print $1}`) is left alone.
PLACEHOLDER_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
# Step names appear in log file and scratch directory names: keep them path-safe.
_STEP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def placeholders(template: str) -> list[str]:
    """Return the ``{name}`` placeholders used by ``template``, in order of appearance.

    ``${...}`` is not one: it is interpolation, resolved (or reported) at load time."""
    return [
        m.group(1)
        for m in PLACEHOLDER_FIELD.finditer(template)
        if m.group(1) and not template[: m.start()].endswith("$")
    ]


def bare_placeholder(name: str) -> str:
    """``temp_select`` for ``"{temp_select}"``: the existing format writes placeholder names
    in braces in ``outputs:`` and ``cleanup:`` lists; either spelling means the same."""
    text = name.strip()
    match = PLACEHOLDER_FIELD.fullmatch(text)
    return match.group(1) if match and match.group(1) else text


def _error(error_type: str, template: str, /, **values: Any) -> PydanticCustomError:
    """A validation error whose message is ``template.format(**values)`` (pydantic's own
    templates do not support ``!r``)."""
    return PydanticCustomError(error_type, "{message}", {"message": template.format(**values)})


def _did_you_mean(word: str, candidates: Iterable[str], fmt: str = "'{}'") -> str:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(close[0])}?)" if close else ""


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Base model: unknown keys are an error with our own "did you mean" hint."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = set(cls.model_fields) | {
                f.alias for f in cls.model_fields.values() if f.alias is not None
            }
            for key in data:
                if key not in allowed:
                    hint = _did_you_mean(str(key), allowed)
                    if not hint:
                        hint = f" (allowed: {', '.join(sorted(allowed))})"
                    raise PydanticCustomError(
                        "unknown_key", "unknown key{hint}", {"key": str(key), "hint": hint}
                    )
        return data


class RamDisk(_Strict):
    """``resources.ram_disk``: stage per-file intermediates on a RAM disk when it has room.

    ``path`` (default /dev/shm) is used as is (absolute); ``min_ram_gb`` is the free space
    required before the RAM disk is used (the staging helper falls back to disk otherwise).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: bool = False
    path: Path = Path("/dev/shm")
    min_ram_gb: float = Field(default=0.0, ge=0)
    #: Keep the run's work folder (per-file intermediates) after the run, like
    #: ``--keep-intermediate`` (the existing runner's ``keep``).
    keep_intermediate: bool = Field(default=False, alias="keep")


class LtcubeCache(_Strict):
    """``resources.ltcube_cache``: reuse weekly livetime cubes across runs whose gtltcube
    inputs and parameters are unchanged (the existing runner's key).

    Here the content cache does this for every step; ``enabled: false`` makes gtltcube steps
    always run (never taken from the cache), and ``path`` is where the cache lives when
    ``cache.directory`` is not set (relative to the config file's directory).
    """

    enabled: bool = True
    path: Path | None = None


class Resources(_Strict):
    """``resources``: ``cores`` caps the tools running at once (int ≥ 1 or "auto" = the CPUs
    this process may use); ``timeout`` is the default per-invocation timeout in seconds (a
    step's own ``timeout`` wins; None = no limit)."""

    cores: int | Literal["auto"] = "auto"
    ram_disk: RamDisk = Field(default_factory=RamDisk)
    timeout: float | None = Field(default=None, gt=0)
    ltcube_cache: LtcubeCache = Field(default_factory=LtcubeCache)
    #: Merge while files are processed (the existing runner's key): counts maps folded into
    #: running sums, gtltsum tree nodes launched as their weeks finish (flows/streams.py).
    stream_merge: bool = True
    #: Give each week only its slice of a mission-long spacecraft file (default true).
    slice_scfile: bool = True
    #: Sum image_sum merges in parallel partial sums (default true); false = one pass.
    parallel_accum: bool = True
    #: Run native tools in worker processes of the run, one per tool running at once (the
    #: local runner only — on Dask each worker is a process already); false = threads of the
    #: flow's process, which share one interpreter lock. "auto" (default): processes when
    #: the run has enough native tool runs to repay the workers' start
    #: (fermipipe.native_workers.use_workers).
    native_processes: bool | Literal["auto"] = "auto"

    @field_validator("cores", mode="before")
    @classmethod
    def _check_cores(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _error(
                "cores", "must be a positive integer or 'auto' (got {value!r})", value=value
            )
        return value

    @property
    def max_workers(self) -> int:
        """``cores`` as an int: "auto" → the number of CPUs available to this process."""
        if isinstance(self.cores, int):
            return self.cores
        return available_cpus()


class InputConfig(_Strict):
    """``input``: the files processed one by one. ``pattern`` is a glob relative to
    ``directory`` (sorted; ``**`` allowed). ``grouping`` is ``one_to_one`` (each input file
    gets its own chain) — the only grouping the existing format knows."""

    directory: Path
    pattern: str = "*.fits"
    grouping: Literal["one_to_one"] = "one_to_one"

    @field_validator("pattern")
    @classmethod
    def _relative_glob(cls, value: str) -> str:
        try:
            glob_files(Path("/nonexistent-fermipipe"), value)
        except ValueError as exc:
            raise _error("pattern", "{value!r}: {why}", value=value, why=exc) from None
        return value


def available_cpus() -> int:
    """The CPUs this process may use (its affinity mask; all of them where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def glob_files(directory: Path, pattern: str) -> list[Path]:
    """Everything matching ``pattern`` (relative glob, ``**`` allowed) in ``directory``, sorted.

    Raises ValueError for a pattern that is empty, absolute or malformed.
    """
    if not pattern.strip():
        raise ValueError("empty glob pattern")
    if Path(pattern).is_absolute():
        raise ValueError("the pattern must be relative to input.directory")
    try:
        # Every match, not only regular files: the planner reports the ones it cannot use.
        return sorted(
            p for p in directory.glob(pattern) if p.is_symlink() or p.is_file() or p.exists()
        )
    except NotImplementedError as exc:  # pathlib's wording for absolute patterns
        raise ValueError(str(exc)) from None


class OutputConfig(_Strict):
    """``output``: ``directory`` receives merged products given as bare file names,
    post-processing outputs, kept per-file products, logs and the cache (default
    ``products/`` in the run root); ``workdir`` holds per-file intermediates when no RAM disk
    is used (default ``work/`` in the run root). Paths given here are relative to the config
    file's directory; the defaults are in the run root because a config kept with the data
    (or read-only, like a shared one) should not receive products."""

    directory: Path | None = None
    workdir: Path | None = None


class FermitoolsConfig(_Strict):
    """``fermitools``: ``prefix`` of a conda env holding the Fermitools (else $FERMI_DIR,
    $CONDA_PREFIX, then PATH are searched — see fermipipe.fermitools.locate)."""

    prefix: Path | None = None


class ClusterConfig(_Strict):
    """``runner.cluster``: a Dask cluster the pipeline starts itself.

    ``class`` is an importable class path, e.g. ``dask_jobqueue.SLURMCluster`` (extra
    ``slurm``) or ``distributed.LocalCluster``; ``kwargs`` go to its constructor (queue,
    cores, memory, walltime, job_extra_directives, ``resources`` …); ``adapt`` (``minimum``,
    ``maximum`` workers) makes it scale with the work instead of a fixed size.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_path: str = Field(alias="class", min_length=3)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    adapt: dict[str, int] | None = None


class RunnerConfig(_Strict):
    """``runner``: where the tasks run.

    ``kind: threads`` (default): a thread pool in the flow's process, ``resources.cores``
    tools at once. ``kind: dask``: Prefect's DaskTaskRunner, on an existing scheduler
    (``address: tcp://host:8786``) or on a ``cluster`` started for the run. Dask runs need a
    real Prefect server (``PREFECT_API_URL``): workers cannot share the flow's ephemeral one.
    """

    kind: Literal["threads", "dask"] = "threads"
    address: str | None = None
    cluster: ClusterConfig | None = None
    #: Run each file's whole chain as one task on one worker, its intermediates on that
    #: node's RAM disk. Default (unset): on for Dask workers on other nodes.
    node_local: bool | None = None


class RunOptions(_Strict):
    """``run``: which parts run, as the command-line flags do (the flags win).

    ``steps``: names of steps, merges and post-processing steps to run (``--steps``);
    ``skip_merge`` (``--skip-merge``); ``skip_post`` (``--skip-post``).
    """

    steps: list[str] | None = None
    skip_merge: bool = False
    skip_post: bool = False


class CacheConfig(_Strict):
    """``cache``: skip invocations whose inputs and parameters are unchanged. ``directory``
    None lets the cache helper choose its default."""

    enabled: bool = True
    directory: Path | None = None


def _check_params(value: Any) -> Any:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not _IDENT.match(key):
                raise _error("param_name", "{key!r} is not a valid parameter name", key=key)
            if item is not None and not isinstance(item, str | int | float | bool):
                raise _error(
                    "param_value",
                    "params.{key}: must be a string, number or boolean (got {kind})",
                    key=key,
                    kind=type(item).__name__,
                )
    return value


class _CommandOrTool(_Strict):
    """What existing-form and structured steps share."""

    name: str = Field(min_length=1)
    command: str | None = None
    tool: str | None = None
    params: dict[str, ParamValue] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    engine: EngineChoice | None = None
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("params", mode="before")
    @classmethod
    def _params_scalar(cls, value: Any) -> Any:
        return _check_params(value)

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_list(cls, value: Any) -> Any:
        # Existing format: a plain list of placeholder names → file `{stem}_{name}.fits`.
        if isinstance(value, list):
            out: dict[str, Any] = {}
            for item in value:
                if not isinstance(item, str):
                    raise _error(
                        "outputs", "list items must be placeholder names (got {item!r})", item=item
                    )
                name = bare_placeholder(item)
                out[name] = f"{{stem}}_{name}.fits"
            return out
        return value

    @field_validator("outputs")
    @classmethod
    def _output_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, template in value.items():
            if not _IDENT.match(key):
                raise _error("outputs", "{key!r} is not a valid placeholder name", key=key)
            if not template or "/" in template or template in (".", ".."):
                raise _error(
                    "outputs",
                    "{key}: output file name {template!r} must be a plain file name",
                    key=key,
                    template=template,
                )
        return value

    @field_validator("name")
    @classmethod
    def _step_name(cls, value: str) -> str:
        if not _STEP_NAME.match(value):
            raise _error(
                "name", "{value!r}: use letters, digits, '_', '.' and '-' only", value=value
            )
        return value

    @field_validator("tool")
    @classmethod
    def _tool_name(cls, value: str | None) -> str | None:
        if value is not None and not _TOOL_NAME.match(value):
            raise _error("tool", "{value!r} is not a tool name", value=value)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> _CommandOrTool:
        if (self.command is None) == (self.tool is None):
            raise _error(
                "form",
                "step {name!r} needs exactly one of 'command' (existing form) or 'tool' + "
                "'params' (structured form)",
                name=self.name,
            )
        if self.command is not None and (self.params or self.inputs):
            raise _error(
                "form",
                "step {name!r}: 'params'/'inputs' belong to structured steps (with 'tool'), "
                "not to a 'command' step",
                name=self.name,
            )
        if self.command is not None and not self.command.strip():
            raise _error("form", "step {name!r}: empty command", name=self.name)
        both = sorted(set(self.params) & set(self.inputs))
        if both:
            raise _error(
                "form",
                "step {name!r}: parameter {p!r} is given in both 'params' and 'inputs'",
                name=self.name,
                p=both[0],
            )
        return self

    @property
    def structured(self) -> bool:
        """True for the structured form (``tool`` + ``params``)."""
        return self.tool is not None


class StepConfig(_CommandOrTool):
    """One per-file step, in either form.

    Existing form: ``command`` — a shell template (see module docstring for placeholders);
    ``outputs`` a mapping placeholder → file-name template or a list of placeholder names
    (file name ``{stem}_{name}.fits``).
    Structured form: ``tool`` (gtselect, …) with ``params`` (name → value; strings may be
    templates), ``inputs`` (file parameters: name → ``{input}``/``{scfile}``/``{earlier
    output}``/a path) and ``outputs`` (placeholder → file-name template). An output is passed
    to the parameter whose value names it (``params: {outfile: "{chunk_sel}"}``); otherwise a
    single output goes to the tool's output parameter (``outfile``; ``outfil`` for farith).
    Both forms: ``cleanup`` (true = all this step's outputs, or a list of them) are deleted
    once the file's chain (or, for merged outputs, the merges) succeeded, unless
    --keep-intermediate; ``engine`` overrides the global engine; ``timeout`` in seconds;
    ``max_parallel`` caps how many invocations of this step run at once (below
    ``resources.cores``, e.g. 4 for gtltcube); ``worker_resources`` (Dask runs only): the
    abstract resources one invocation holds on a Dask worker, e.g. ``{memory: 4}``, so that a
    worker started with ``--resources memory=16`` never runs more than four at once.
    """

    cleanup: bool | list[str] = False
    keep: bool | list[str] = False
    max_parallel: int | None = Field(default=None, ge=1)
    worker_resources: dict[str, float] = Field(default_factory=dict)

    @field_validator("cleanup", "keep", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [bare_placeholder(v) if isinstance(v, str) else v for v in value]
        return value

    @property
    def cleanup_outputs(self) -> list[str]:
        """The output placeholders deleted after use: this step's own (``cleanup: true``) or
        the listed outputs of this or earlier steps."""
        if self.cleanup is True:
            return list(self.outputs)
        if self.cleanup is False:
            return []
        return list(self.cleanup)

    @property
    def keep_outputs(self) -> list[str]:
        """The output placeholders copied to ``output.directory`` (``keep``)."""
        if self.keep is True:
            return list(self.outputs)
        if self.keep is False:
            return []
        return list(self.keep)


class MergeConfig(_Strict):
    """One merge of a per-file output into one product.

    ``input_pattern`` names the output being merged (``"{chunk_ccube}"``); ``output_file`` is
    a file name or path relative to ``output.directory``; ``strategy``: ``image_sum`` (pixel
    sum of count maps/cubes), ``hierarchical`` (pairwise ``tool``, e.g. gtltsum, in a tree),
    ``ftmerge`` (event lists concatenated with a GTI union); ``engine`` overrides the global
    engine for a ``tool``; ``timeout`` in seconds.
    """

    name: str = Field(min_length=1)
    input_pattern: str
    output_file: str = Field(min_length=1)
    strategy: Literal["image_sum", "hierarchical", "ftmerge"]
    tool: str | None = None
    engine: EngineChoice | None = None
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _merge_name(cls, value: str) -> str:
        # Post-processing refers to the merged file as {name}: it must be a placeholder name.
        if not _IDENT.match(value):
            raise _error(
                "name",
                "{value!r}: a merge name is a placeholder: letters, digits and '_' only",
                value=value,
            )
        return value

    @model_validator(mode="after")
    def _tool_fits_strategy(self) -> MergeConfig:
        if self.strategy == "hierarchical" and self.tool is None:
            raise _error(
                "merge_tool",
                "merge {name!r}: strategy 'hierarchical' needs a pairwise 'tool' (e.g. gtltsum)",
                name=self.name,
            )
        if self.strategy != "hierarchical" and self.tool is not None:
            raise _error(
                "merge_tool",
                "merge {name!r}: 'tool' is only used by strategy 'hierarchical'",
                name=self.name,
            )
        return self

    @property
    def output_name(self) -> str:
        """The step-output placeholder being merged (valid after whole-config validation)."""
        fields = placeholders(self.input_pattern)
        return fields[0] if fields else ""


class PostStepConfig(_CommandOrTool):
    """One post-processing command run once after the merges, in either form.

    Its ``outputs`` (placeholder → file name) are written in ``output.directory`` and can be
    used by later post steps. See the module docstring for the placeholders available.
    """


def parse_steps(text: str | None) -> list[str] | None:
    """The names in a ``--steps a,b`` value (empty parts dropped); None when not given."""
    return [s for s in text.split(",") if s] if text else None


@dataclass(frozen=True)
class RunChoices:
    """What one run does: the command-line flags over the config's ``run:`` section (and
    ``resources.ram_disk.keep_intermediate``); a flag given on the command line wins."""

    steps: list[str] | None = None
    skip_merge: bool = False
    skip_post: bool = False
    keep_intermediate: bool = False
    #: Re-hash every cache-store object before use (``--verify-cache``).
    verify_cache: bool = False


class PipelineConfig(_Strict):
    """The whole pipeline configuration (see the module docstring for every key)."""

    name: str | None = None
    resources: Resources = Field(default_factory=Resources)
    input: InputConfig
    common_files: dict[str, Path] = Field(default_factory=dict)
    steps: list[StepConfig] = Field(min_length=1)
    merging: list[MergeConfig] = Field(default_factory=list)
    post_processing: list[PostStepConfig] = Field(default_factory=list)
    output: OutputConfig = Field(default_factory=OutputConfig)
    engine: EngineChoice = "auto"
    fermitools: FermitoolsConfig = Field(default_factory=FermitoolsConfig)
    on_failure: Literal["stop", "skip"] = "stop"
    #: A native tool's data-quality warning (FT2 not covering the GTI, NaN values, an empty
    #: event table): "warn" logs it and puts it in the summary; "fail" fails that file's step.
    on_data_warning: Literal["warn", "fail"] = "warn"
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    #: The existing format's keys (``../shared/seed``): ``fermi_base`` is the Fermitools
    #: prefix (= ``fermitools.prefix``); ``run`` selects what runs; ``vars`` holds values
    #: used by ``${vars.x}`` (resolved at load); ``science_models`` is carried into the run
    #: summary and the manifests (it drives nothing yet).
    fermi_base: Path | None = None
    #: The LAT calibration database (IRFs) for the native gtexpcube2/gtpsf; else $CALDB or
    #: the Fermitools installation's. Relative to the config file's directory.
    caldb: Path | None = None
    run: RunOptions = Field(default_factory=RunOptions)
    vars: dict[str, Any] = Field(default_factory=dict)
    science_models: dict[str, Any] = Field(default_factory=dict)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="<config>")
    _root: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("common_files")
    @classmethod
    def _common_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for key in value:
            if not _IDENT.match(key):
                raise _error("common", "{key!r} is not a valid placeholder name", key=key)
            if key in PER_FILE_PLACEHOLDERS or key in GLOBAL_PLACEHOLDERS:
                raise _error("common", "{key!r} is a reserved placeholder name", key=key)
        return value

    @property
    def base_dir(self) -> Path:
        """Directory of the config file: relative paths are resolved against it."""
        return self._base_dir

    @property
    def source(self) -> str:
        """The config file's path (or ``<config>``), used in error messages."""
        return self._source

    @property
    def root(self) -> Path:
        """The run root: ``${root:...}`` and root-relative paths (merge ``output_file`` with a
        folder, what commands read and write relatively) are relative to it. The directory the
        run is started from, or ``--root``."""
        return self._root

    @property
    def cache_root(self) -> Path:
        """Where the content cache lives: ``cache.directory``, else
        ``<output.directory>/.fermipipe-cache``."""
        return Path(self.cache.directory or Path(self.output.directory or "") / CACHE_DIRNAME)

    def merge_output(self, output_file: str) -> Path:
        """Where a merge writes ``output_file``: a bare file name goes to
        ``output.directory``; a relative path with a folder (``./data/x.fits``) is relative to
        the run root, as the existing runner's users write it; absolute paths stay."""
        path = Path(output_file)
        if path.is_absolute():
            return path
        if len(path.parts) == 1 and not output_file.startswith("./"):
            return self.output.directory / path
        return Path(os.path.normpath(self._root / path))

    def choices(
        self,
        steps: list[str] | None = None,
        skip_merge: bool = False,
        skip_post: bool = False,
        keep_intermediate: bool = False,
        verify_cache: bool = False,
    ) -> RunChoices:
        """The run's choices: command-line values (``steps``, flags) over ``run:``."""
        return RunChoices(
            steps if steps else self.run.steps,
            skip_merge or self.run.skip_merge,
            skip_post or self.run.skip_post,
            keep_intermediate or self.resources.ram_disk.keep_intermediate,
            verify_cache,
        )

    def step(self, name: str) -> StepConfig:
        """The step called ``name`` (KeyError if none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _fail(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _loc_text(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and (
            "[" in part or part in ("int", "str", "bool", "float", "none", "function-after")
        ):
            # pydantic appends union-member tags to the location: not a key of the user's.
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def _pydantic_problems(exc: ValidationError, problems: _Problems) -> None:
    """One line per key the models rejected (union members at one key joined with "or")."""
    errors = exc.errors(include_url=False)
    by_where: dict[str, list[dict[str, Any]]] = {}
    for err in errors:
        loc = list(err["loc"])
        if err["type"] == "unknown_key":
            loc.append((err.get("ctx") or {})["key"])
        by_where.setdefault(_loc_text(loc), []).append(dict(err))
    for where, group in by_where.items():
        err = group[0]
        if err["type"] == "unknown_key":
            message = err["msg"]
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = err["msg"]
            # A union (e.g. cleanup: bool | list) reports one error per member at the same
            # key: say "X or Y" in one line rather than only the first.
            for other in group[1:]:
                if other["msg"] not in message:
                    message += f" or {other['msg'][0].lower()}{other['msg'][1:]}"
            value = err.get("input")
            if (
                err["type"] != "value_error"
                and isinstance(value, str | int | float | bool)
                and repr(value) not in message
            ):
                message += f" (got {value!r})"
        problems.add(where, message)


def _resolve(base: Path, path: Path | str) -> Path:
    """``path`` made absolute relative to ``base``. Names are data: nothing in them is
    expanded (``$HOME``, ``~``); environment values come in with ``${oc.env:NAME}``."""
    given = Path(path)
    return given if given.is_absolute() else base / given


def _is_template(value: str) -> bool:
    return bool(placeholders(value))


def _check_template(
    problems: _Problems,
    where: str,
    template: str,
    scope: Iterable[str],
    later: Mapping[str, str],
) -> None:
    """Every placeholder of ``template`` must be in ``scope`` (``later``: name → the later
    step that makes it, for a precise message)."""
    allowed = set(scope)
    for name in placeholders(template):
        if name in allowed:
            continue
        if name in later:
            problems.add(
                where,
                f"placeholder {{{name}}} is an output of the later step {later[name]!r}; "
                "a step can only use outputs of earlier steps",
            )
            continue
        hint = _did_you_mean(name, allowed, "{{{}}}")
        problems.add(
            where,
            f"unknown placeholder {{{name}}}{hint}; available: "
            + ", ".join(f"{{{n}}}" for n in sorted(allowed)),
        )


def _check_outputs_used(problems: _Problems, where: str, step: _CommandOrTool) -> None:
    """A command step must name each of its outputs, or the tool cannot know where to write."""
    assert step.command is not None
    used = set(placeholders(step.command))
    for out in step.outputs:
        if out not in used:
            problems.add(
                f"{where}.outputs.{out}",
                f"output {{{out}}} is not used in the command of step {step.name!r}, so the "
                "command cannot write it",
            )


def _check_cross(cfg: PipelineConfig, problems: _Problems) -> None:
    """Whole-config checks the models cannot do one by one."""
    common = set(cfg.common_files)
    per_file = set(PER_FILE_PLACEHOLDERS)
    globals_ = set(GLOBAL_PLACEHOLDERS)

    # Step names and outputs.
    seen_steps: dict[str, int] = {}
    writer: dict[str, str] = {}  # placeholder → step name
    file_writer: dict[str, str] = {}  # file-name template → step name
    all_outputs = {out: step.name for step in cfg.steps for out in step.outputs}
    for i, step in enumerate(cfg.steps):
        where = f"steps[{i}]"
        if step.name in seen_steps:
            problems.add(
                f"{where}.name",
                f"step name {step.name!r} is used twice (steps[{seen_steps[step.name]}])",
            )
        seen_steps[step.name] = i
        for out, template in step.outputs.items():
            if out in per_file or out in common or out in GLOBAL_PLACEHOLDERS:
                problems.add(
                    f"{where}.outputs.{out}",
                    f"output name {out!r} is already a common file or reserved placeholder",
                )
            if out in writer:
                problems.add(
                    f"{where}.outputs.{out}",
                    f"output {out!r} is also written by step {writer[out]!r}",
                )
            if template in file_writer:
                problems.add(
                    f"{where}.outputs.{out}",
                    f"file name {template!r} is also written by step {file_writer[template]!r}",
                )
            _check_template(
                problems, f"{where}.outputs.{out}", template, OUTPUT_NAME_PLACEHOLDERS, {}
            )
        later = {o: s for o, s in all_outputs.items() if o not in writer and o not in step.outputs}
        scope = per_file | globals_ | common | set(writer) | set(step.outputs)
        if step.command is not None:
            _check_template(problems, f"{where}.command", step.command, scope, later)
            _check_outputs_used(problems, where, step)
        for key, value in step.params.items():
            if isinstance(value, str):
                _check_template(problems, f"{where}.params.{key}", value, scope, later)
        for key, value in step.inputs.items():
            _check_template(problems, f"{where}.inputs.{key}", value, scope, later)
        if step.tool is not None:
            _structured_outputs(problems, step, where)
        mine_or_earlier = set(writer) | set(step.outputs)
        for key, names in (("cleanup", step.cleanup), ("keep", step.keep)):
            if not isinstance(names, list):
                continue
            allowed = mine_or_earlier if key == "cleanup" else set(step.outputs)
            whose = "this or an earlier step" if key == "cleanup" else f"step {step.name!r}"
            for j, name in enumerate(names):
                if name in allowed:
                    continue
                if name in all_outputs:
                    why = f" (it is made by the later step {all_outputs[name]!r})"
                else:
                    why = _did_you_mean(name, allowed)
                problems.add(f"{where}.{key}[{j}]", f"{name!r} is not an output of {whose}{why}")
        for out, template in step.outputs.items():
            writer[out] = step.name
            file_writer[template] = step.name

    # Merges.
    merge_names: dict[str, int] = {}
    merge_files: dict[str, str] = {}
    for i, merge in enumerate(cfg.merging):
        where = f"merging[{i}]"
        if merge.name in merge_names:
            problems.add(f"{where}.name", f"merge name {merge.name!r} is used twice")
        if (
            merge.name in common
            or merge.name in writer
            or merge.name in per_file
            or merge.name in GLOBAL_PLACEHOLDERS
        ):
            problems.add(
                f"{where}.name",
                f"merge name {merge.name!r} clashes with a common file, step output or reserved "
                "placeholder (post-processing refers to merged files by merge name)",
            )
        merge_names[merge.name] = i
        fields = placeholders(merge.input_pattern)
        if len(fields) != 1 or merge.input_pattern.strip() != f"{{{fields[0]}}}":
            problems.add(
                f"{where}.input_pattern",
                f"{merge.input_pattern!r} must be one step-output placeholder, e.g. "
                '"{chunk_ccube}"',
            )
        elif fields[0] not in writer:
            hint = _did_you_mean(fields[0], writer, "{{{}}}")
            problems.add(
                f"{where}.input_pattern",
                f"{{{fields[0]}}} is not an output of any step{hint}",
            )
        if merge.output_file in merge_files:
            problems.add(
                f"{where}.output_file",
                f"{merge.output_file!r} is also written by merge {merge_files[merge.output_file]!r}",
            )
        merge_files[merge.output_file] = merge.name

    # Post-processing.
    post_scope = common | set(merge_names) | set(GLOBAL_PLACEHOLDERS)
    post_names: set[str] = set()
    post_files = {Path(f) for f in merge_files}
    for i, post in enumerate(cfg.post_processing):
        where = f"post_processing[{i}]"
        if post.name in post_names:
            problems.add(f"{where}.name", f"post-processing name {post.name!r} is used twice")
        post_names.add(post.name)
        for out, template in post.outputs.items():
            if out in post_scope:
                problems.add(
                    f"{where}.outputs.{out}",
                    f"output name {out!r} is already a common file, merge or earlier output",
                )
            _check_template(problems, f"{where}.outputs.{out}", template, (), {})
            if Path(template) in post_files:
                problems.add(f"{where}.outputs.{out}", f"file {template!r} is written twice")
            post_files.add(Path(template))
        scope = post_scope | set(post.outputs)
        if post.command is not None:
            _check_template(problems, f"{where}.command", post.command, scope, {})
            _check_outputs_used(problems, where, post)
        for key, value in post.params.items():
            if isinstance(value, str):
                _check_template(problems, f"{where}.params.{key}", value, scope, {})
        for key, value in post.inputs.items():
            _check_template(problems, f"{where}.inputs.{key}", value, scope, {})
        if post.tool is not None:
            _structured_outputs(problems, post, where)
        post_scope |= set(post.outputs)


#: The output-file parameter of tools whose name is not ``outfile``.
OUTPUT_PARAM: dict[str, str] = {"farith": "outfil", "fcarith": "outfil", "ftmerge": "outfile"}


def structured_output_params(
    step: _CommandOrTool, *, where: str = "", source: str = "<config>"
) -> dict[str, str]:
    """Map each output placeholder of a structured step to the tool parameter receiving it.

    A parameter whose value is exactly ``{placeholder}`` names it explicitly; one remaining
    output goes to the tool's output parameter (``OUTPUT_PARAM``, default ``outfile``).
    """
    assert step.tool is not None
    result: dict[str, str] = {}
    for key, value in step.params.items():
        if isinstance(value, str):
            fields = placeholders(value)
            if len(fields) == 1 and value == f"{{{fields[0]}}}" and fields[0] in step.outputs:
                result[fields[0]] = key
    rest = [out for out in step.outputs if out not in result]
    default = OUTPUT_PARAM.get(step.tool, "outfile")
    if len(rest) > 1:
        raise _fail(
            source,
            f"{where}.outputs",
            f"step {step.name!r} has several outputs; pass each to its parameter in params, "
            f"e.g. params: {{{default}: '{{{rest[0]}}}'}}",
        )
    if rest:
        if default in step.params or default in step.inputs:
            raise _fail(
                source,
                f"{where}.params.{default}",
                f"step {step.name!r}: {default} is set but output {rest[0]!r} is not passed to "
                f"any parameter; write {default}: '{{{rest[0]}}}'",
            )
        result[rest[0]] = default
    return result


def _structured_outputs(problems: _Problems, step: _CommandOrTool, where: str) -> None:
    try:
        structured_output_params(step, where=where, source=problems.source)
    except ConfigError as exc:
        problems.lines.append(str(exc))


def _resolve_paths(cfg: PipelineConfig, base: Path) -> None:
    cfg.input.directory = _resolve(base, cfg.input.directory)
    cfg.common_files = {k: _resolve(base, v) for k, v in cfg.common_files.items()}
    root = cfg.root
    out = cfg.output
    out.directory = _resolve(base, out.directory) if out.directory else root / "products"
    out.workdir = _resolve(base, out.workdir) if out.workdir else root / "work"
    if cfg.fermi_base is not None:
        cfg.fermi_base = _resolve(base, cfg.fermi_base)
        if cfg.fermitools.prefix is None:
            cfg.fermitools.prefix = cfg.fermi_base
    if cfg.fermitools.prefix is not None:
        cfg.fermitools.prefix = _resolve(base, cfg.fermitools.prefix)
    lt_path = cfg.resources.ltcube_cache.path
    if lt_path is not None:
        cfg.resources.ltcube_cache.path = _resolve(base, lt_path)
        if cfg.cache.directory is None:
            cfg.cache.directory = cfg.resources.ltcube_cache.path
    if cfg.cache.directory is not None:
        cfg.cache.directory = _resolve(base, cfg.cache.directory)
    if cfg.caldb is not None:
        cfg.caldb = _resolve(base, cfg.caldb)
    for step in (*cfg.steps, *cfg.post_processing):
        step.inputs = {
            k: (v if _is_template(v) else str(_resolve(base, v))) for k, v in step.inputs.items()
        }


def _check_files(cfg: PipelineConfig, problems: _Problems) -> None:
    if cfg.fermitools.prefix is not None:
        from fermipipe.fermitools import locate

        key = "fermi_base" if cfg.fermi_base == cfg.fermitools.prefix else "fermitools.prefix"
        try:
            locate(cfg.fermitools.prefix, {})
        except ConfigError as exc:
            text = str(exc).removeprefix("fermitools.prefix: ")
            problems.add(key, text)
    if cfg.caldb is not None:
        from fermipipe.irf.caldb import find_caldb

        try:
            find_caldb(cfg.caldb)
        except FermipipeError as exc:
            problems.add("caldb", str(exc))
    for name, path in cfg.common_files.items():
        if not path.exists():
            problems.add(f"common_files.{name}", f"file not found: {path}")
        elif looks_like_fits_name(path) and (why := not_a_fits_file(path)) is not None:
            # A common file may be a helper (a script, a list); one named as FITS must be
            # FITS: a text file named .fits would otherwise be read as a file list.
            problems.add(f"common_files.{name}", f"{path}: {why}")
    for steps, key in ((cfg.steps, "steps"), (cfg.post_processing, "post_processing")):
        for i, step in enumerate(steps):
            for param, value in step.inputs.items():
                if not _is_template(value) and not Path(value).exists():
                    problems.add(f"{key}[{i}].inputs.{param}", f"file not found: {value}")
    for key, folder in (
        ("output.directory", cfg.output.directory),
        ("output.workdir", cfg.output.workdir),
    ):
        existing = Path(folder)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            problems.add(key, f"{folder}: {existing} is a file, not a folder")
        elif not os.access(existing, os.W_OK):
            problems.add(key, f"{folder}: {existing} is not writable")
    directory = cfg.input.directory
    if not directory.is_dir():
        problems.add("input.directory", f"directory not found: {directory}")
    elif not glob_files(directory, cfg.input.pattern):
        problems.add("input.pattern", f"no file matches {cfg.input.pattern!r} in {directory}")


class _Problems:
    """Every problem found in a config, one line each, raised together at the end."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        line = f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}"
        if line not in self.lines:
            self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(*self.lines)


def parse_config(
    data: Any,
    base_dir: Path,
    *,
    source: str = "<config>",
    check_files: bool = True,
    root: Path | None = None,
    overrides: Iterable[str] = (),
    collect: list[str] | None = None,
) -> PipelineConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    from fermipipe.interpolation import interpolate

    problems = _Problems(source)
    if not isinstance(data, Mapping):
        problems.add("", "the config must be a YAML mapping of keys")
        problems.raise_if_any()
    run_root = Path(os.path.abspath(root if root is not None else Path.cwd()))
    data, unresolved = interpolate(data, run_root, overrides)
    for line in unresolved:
        problems.add("", line)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        _pydantic_problems(exc, problems)
        problems.raise_if_any()
        raise AssertionError("unreachable") from None
    base = Path(os.path.abspath(base_dir))
    cfg._base_dir = base
    cfg._source = source
    cfg._root = run_root
    _check_cross(cfg, problems)
    if cfg.fermi_base is not None and cfg.fermitools.prefix not in (None, cfg.fermi_base):
        problems.add("fermi_base", "differs from fermitools.prefix: give one of them")
    problems.raise_if_any()
    _resolve_paths(cfg, base)
    if check_files:
        _check_files(cfg, problems)
    if collect is not None:  # the caller goes on checking and reports everything at once
        collect.extend(problems.lines)
        return cfg
    problems.raise_if_any()
    return cfg


def load_config(
    path: str | os.PathLike[str],
    *,
    check_files: bool = True,
    root: Path | None = None,
    overrides: Iterable[str] = (),
    collect: list[str] | None = None,
) -> PipelineConfig:
    """Load and fully validate a pipeline config file (both forms, mixed freely).

    ``root`` is the run root (default: the current directory) and ``overrides`` are
    ``key=value`` assignments applied before ``${...}`` interpolation (``--set``). Raises
    ConfigError carrying every problem found (one line each: the file, the key path and
    what is wrong), before any work is done. With ``collect``, problems that leave the
    config usable (missing files, a bad Fermitools prefix) are appended to it instead, so
    that the caller can check the plan too and report everything in one pass.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {where}invalid YAML: {problem}") from None
    return parse_config(
        data,
        path.resolve().parent,
        source=source,
        check_files=check_files,
        root=root,
        overrides=overrides,
        collect=collect,
    )

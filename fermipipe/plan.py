"""The execution plan: config × input files → concrete invocations.

This module's dataclasses are the contract between the config/plan layer and the runner and
Prefect layers (``tasks/``, ``flows/``). Data flows one way: config → plan → tasks → products.
Nothing here runs anything.

Public API
----------
``build_plan(cfg, *, only_steps=None, workdir=None, fermitools=None,
allow_missing_tools=False, skip_merge=False, skip_post=False) -> Plan``
    Discover the input files (sorted glob of ``input.pattern`` in ``input.directory``; none →
    ConfigError naming both), render every step for every file, the merges and the
    post-processing steps. ``fermitools`` is the located installation
    (``fermipipe.fermitools.locate(...)``) or None. Engine per step = the step's ``engine``,
    else the config's: ``auto`` → Fermitools when installed, else native. A step whose tool
    has no native version while no Fermitools are installed (or ``engine: native``) is a
    ConfigError naming the step — raised here, before anything runs. ``allow_missing_tools``
    (for ``--dry-run`` on a machine without Fermitools) turns that error into a
    ``Plan.warnings`` entry and plans the step for the Fermitools engine.
    ``only_steps``: names of steps, merges and post-processing steps to keep (others are left
    out of the plan; unknown name → ConfigError). ``workdir``: where per-file intermediates
    go (``<workdir>/<file_id>/``); default ``cfg.output.workdir``.
``render_dry_run(plan) -> str``
    Every command for every file, then merges and post-processing, as text.
``prepare(config_path, *, dry_run=False, only_steps=None, skip_merge=False, skip_post=False,
keep_intermediate=False, workdir=None, root=None, overrides=()) -> (cfg, install, plan, choices)``
    load_config + fermitools.locate(cfg.fermitools.prefix) + the run's choices + build_plan:
    all validation in one call, before any work (ConfigError → its lines, exit code 2).
``tool_invocation(step, file_id, engine, tool, params, *, inputs, outputs, timeout)``
    An Invocation built like the planner's (e.g. a pairwise gtltsum for a merge).
``discover_inputs(cfg) -> (files, rejected)``, ``stem_of(path)``, ``week_of(name)``,
``format_param(value)``, ``resolve_engine(...)``, ``expand_command(template, values)``.

Engines of per-file and post-processing invocations:
- structured steps (``tool`` + ``params``): ``native`` (params) or ``fermitools`` (argv =
  ``[tool, "k=v", …, "mode=h", "clobber=yes"]``, no shell);
- existing-form ``command`` templates: if the command is one tool with ``key=value`` words
  and no shell syntax, it becomes ``native`` (tool with a native version, engine resolved to
  native) or ``fermitools`` (argv, ``mode=h`` forced, ``clobber=yes`` unless given); else
  ``shell``: the template with every substituted value shell-quoted for its position (bare,
  inside '…' or "…"), so a file called ``a b;c'd.fits`` is one word.

File placement (as the existing runner does it): every per-file output is
``<workdir>/<file_id>/<name>`` — the run's work area, which goes with the run. Only merged
products, post-processing outputs and what a step ``keep``s land in output folders: merged
products at ``cfg.merge_output(output_file)`` (``output.directory`` for a bare file name, the
run root for a relative path with a folder), kept per-file outputs in ``output.directory``.
``FilePlan.cleanup`` lists files to delete once that file's chain succeeded; ``Plan.cleanup``
files to delete once the merges succeeded (cleaned-up merge inputs); ``FilePlan.keep``
(source, destination) pairs of kept outputs, copied from the work area to the output directory
after the merges. With ``only_steps``, only outputs of the steps that run are ever cleaned up
or kept. Existing-form commands run from the run root (``Invocation.cwd``); a native tool run
in-process gets its relative file parameters made absolute against it.

Fields added to the original contract (none renamed or removed): ``Invocation.params_digest``
(property: sha256 of tool + parameters with paths replaced by their roles, for cache keys),
``FilePlan.keep``, ``FilePlan.week``, ``MergePlan.inputs`` (per-file paths, file order),
``MergePlan.timeout``, ``Plan.cleanup``, ``Plan.warnings``, ``Plan.engines`` (step → engine).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from fermipipe.config import PLACEHOLDER_FIELD as _FIELD
from fermipipe.config import (
    EngineChoice,
    PipelineConfig,
    PostStepConfig,
    RunChoices,
    StepConfig,
    glob_files,
    placeholders,
    structured_output_params,
)
from fermipipe.errors import ConfigError, ToolError
from fermipipe.fermitools_argv import fermitools_argv as _fermitools_argv
from fermipipe.fits.sniff import looks_like_fits_name, not_a_fits_file
from fermipipe.native import NATIVE_TOOLS, overwrites_by_default
from fermipipe.native.param_checks import check_params
from fermipipe.step_graph import step_needs
from fermipipe.work_area import WorkArea, choose_work_area

if TYPE_CHECKING:
    from fermipipe.fermitools import FermitoolsInstall

Engine = Literal["native", "fermitools", "shell"]

#: Tools with a native implementation (the registry imports no numerical code).
NATIVE_TOOL_NAMES: frozenset[str] = frozenset(NATIVE_TOOLS)

#: HEASoft ftools a Fermitools chain commonly calls (Fermitools names all start with "gt").
HEASOFT_TOOLS: frozenset[str] = frozenset(
    {
        "farith", "fcarith", "fimgtrim", "fimgmerge", "ftmerge", "fmerge", "fselect",
        "ftselect", "fcopy", "ftcopy", "fthedit", "fparkey", "fkeypar", "fverify", "ftverify",
        "ftlist", "fdump", "fstruct", "ftpixcalc", "ftmgtime", "fappend", "fextract", "fcalc",
        "ftcalc", "fsumrows", "ftimgcalc", "fmodhead", "ftdiff",
    }
)  # fmt: skip
_FERMI_TOOL = re.compile(r"^gt[a-z0-9]+$")
_WEEK = re.compile(r"_w(\d{3,4})_")


def is_fermitools_tool(name: str) -> bool:
    """True if ``name`` is a Fermitools (gt*) or HEASoft ftools program."""
    return bool(_FERMI_TOOL.match(name)) or name in HEASOFT_TOOLS


@dataclass(frozen=True)
class Invocation:
    """One step applied to one input file (or one merge/post-processing command).

    ``engine`` says how the runner executes it:
    - ``native``: ``fermipipe.native.run_tool(tool, params)`` in-process.
    - ``fermitools``: ``argv`` (a list, never a shell string) in a subprocess with a private
      PFILES and working directory.
    - ``shell``: ``shell`` is a templated command whose substituted values are already
      shell-quoted; run with ``/bin/sh -c`` in its own process group.
    """

    step: str
    file_id: str
    engine: Engine
    tool: str | None = None  # Fermitools tool name when known (gtselect, gtbin, ...)
    params: dict[str, str] = field(default_factory=dict)  # key=value, for native and argv
    argv: tuple[str, ...] | None = None
    shell: str | None = None
    inputs: dict[str, Path] = field(default_factory=dict)  # name → file read
    outputs: dict[str, Path] = field(default_factory=dict)  # name → file written
    timeout: float | None = None  # seconds
    max_parallel: int | None = None  # per-step cap below resources.cores
    #: Working directory of a subprocess (None: a private one). Existing-form commands run
    #: from the run root, so relative paths in them mean what the existing runner's users
    #: expect (it chdirs to its repository root).
    cwd: Path | None = None
    #: ``on_data_warning`` of the config: "fail" makes a native tool's data-quality warning
    #: fail the step (decided in fermipipe.runner.run_invocation).
    on_data_warning: str = "warn"

    def render(self) -> str:
        """The command line a user would type (for --dry-run and logs)."""
        if self.shell is not None:
            return self.shell
        import shlex

        if self.argv is not None:
            return shlex.join(self.argv)
        return shlex.join([self.tool or self.step, *(f"{k}={v}" for k, v in self.params.items())])

    @property
    def params_digest(self) -> str:
        """sha256 of what the step does, independent of where its files are.

        Covers the engine-independent description: tool, parameters (or the shell command),
        with every input/output path replaced by its role (``<in:name>``/``<out:name>``), so
        the digest is the same in any workdir; the cache adds the inputs' content hashes.
        """
        swaps = sorted(
            [(str(p), f"<in:{n}>") for n, p in self.inputs.items()]
            + [(str(p), f"<out:{n}>") for n, p in self.outputs.items()],
            key=lambda item: -len(item[0]),
        )

        def neutral(text: str) -> str:
            for path, token in swaps:
                text = text.replace(path, token)
                text = text.replace(shlex.quote(path), token)
            return text

        if self.engine == "shell" and self.shell is not None:
            body: object = neutral(self.shell)
        else:
            body = sorted((k, neutral(v)) for k, v in self.params.items())
        what: dict[str, object] = {"step": self.step, "tool": self.tool, "body": body}
        if self.on_data_warning != "warn":  # it changes the outcome; "warn" keeps old keys
            what["on_data_warning"] = self.on_data_warning
        blob = json.dumps(what, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class FilePlan:
    """The chain of invocations for one input file, in step order."""

    file_id: str
    input: Path
    chain: tuple[Invocation, ...]
    cleanup: tuple[Path, ...] = ()  # intermediates removed after the chain (unless kept)
    #: (workdir file, destination) pairs: merge inputs the user keeps (no cleanup), copied
    #: to the output directory after the merges (the workdir may be a RAM disk).
    keep: tuple[tuple[Path, Path], ...] = ()
    week: str | None = None  # the NNN of a `_wNNN_` in the input name

    @cached_property
    def needs(self) -> tuple[tuple[int, ...], ...]:
        """Per step, the earlier steps it waits for (:func:`fermipipe.step_graph.step_needs`),
        computed once per plan."""
        return step_needs(self.chain)


@dataclass(frozen=True)
class MergePlan:
    """One merge: per-file outputs named ``output_name`` → one merged product."""

    name: str
    output_name: str  # the step output placeholder being merged, e.g. chunk_ccube
    output: Path
    strategy: Literal["image_sum", "hierarchical", "ftmerge"]
    tool: str | None = None  # pairwise tool for hierarchical, e.g. gtltsum
    engine: Engine = "native"
    #: Per-file paths of ``output_name`` in file order (the flow leaves out failed/empty files).
    inputs: tuple[Path, ...] = ()
    timeout: float | None = None
    #: image_sum in parallel partial sums (``resources.parallel_accum``); False: one pass.
    parallel: bool = True


@dataclass(frozen=True)
class Plan:
    files: tuple[FilePlan, ...]
    merges: tuple[MergePlan, ...]
    post: tuple[Invocation, ...]
    workdir: Path  # intermediates (RAM disk or disk)
    outdir: Path  # merged products and kept per-file products
    #: Files to delete once the merges succeeded (merge inputs whose step asked for cleanup).
    cleanup: tuple[Path, ...] = ()
    #: Problems tolerated by ``allow_missing_tools`` (dry run without Fermitools).
    warnings: tuple[str, ...] = ()
    #: Step name → its engine, for reports.
    engines: dict[str, Engine] = field(default_factory=dict)
    #: Matches of the input pattern that cannot be used (file name → why): reported and
    #: listed as left out of every merge, never dropped silently.
    rejected: dict[str, str] = field(default_factory=dict)
    #: Things the run does differently from what the config says, and why (one line each).
    notes: tuple[str, ...] = ()
    #: The run's work area (RAM disk or disk) when the plan was made for a run (``workdir``
    #: is its folder, created by the run); None for a dry run.
    work_area: WorkArea | None = None


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def stem_of(path: PurePath | str) -> str:
    """File name without ``.fits``/``.fits.gz``/``.fit``/``.fts`` (any case) or its suffix."""
    name = PurePath(path).name
    lower = name.lower()
    for ext in (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts", ".gz"):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return PurePath(name).stem or name


def week_of(name: str) -> str | None:
    """The ``NNN`` of ``_wNNN_`` in a file name (FSSC weekly files: ``..._w010_p305_...``)."""
    match = _WEEK.search(PurePath(name).name)
    return match.group(1) if match else None


def format_param(value: object) -> str:
    """A parameter value as the Fermitools read it: yes/no, INDEF, plain numbers."""
    if value is None:
        return "INDEF"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # 1e6 → "1000000" (what a user types), 0.025 → "0.025"; repr keeps full precision.
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    return str(value)


def _substitute_raw(template: str, values: Mapping[str, str]) -> str:
    """Plain substitution (argv words, file names): no quoting."""

    def repl(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        return values[m.group(1)]

    return _FIELD.sub(repl, template)


def _quote_in(state: str | None, value: str) -> str:
    """``value`` written so the shell reads it back verbatim in quote state ``state``."""
    if state is None:
        return shlex.quote(value)
    if state == "'":
        return value.replace("'", "'\\''")
    return re.sub(r'([\\"$`])', r"\\\1", value)  # inside "…"


_SHELL_SPECIAL = set("|&;<>()$`*?[")


def expand_command(template: str, values: Mapping[str, str]) -> tuple[str, list[str] | None]:
    """Substitute placeholders in a shell command template.

    Returns ``(shell, words)``: ``shell`` is the command with every value quoted for the
    place it stands in (bare, '…' or "…"); ``words`` is the argv the shell would build when
    the command is one plain command (no pipes, redirections, ``;``, ``&&``, ``$``, globs,
    comments), else None. Raises ValueError on an unterminated quote.
    """
    shell: list[str] = []
    words: list[str] = []
    cur: list[str] | None = None
    simple = True
    state: str | None = None
    i, n = 0, len(template)
    while i < n:
        m = _FIELD.match(template, i)
        if m:
            if m.group(1) is None:  # {{ or }}: a literal brace
                text = m.group(0)[0]
                shell.append(text)
                cur = (cur or []) + [text]
            else:
                value = values[m.group(1)]
                shell.append(_quote_in(state, value))
                cur = [value] if cur is None else cur + [value]
            i = m.end()
            continue
        c = template[i]
        nxt = template[i + 1] if i + 1 < n else ""
        if state is None:
            if c in " \t\n":
                if cur is not None:
                    words.append("".join(cur))
                    cur = None
                shell.append(c)
            elif c in "'\"":
                state = c
                cur = cur or []
                shell.append(c)
            elif c == "\\":
                shell.append(c + nxt)
                if nxt == "\n":  # line continuation
                    if cur is not None:
                        words.append("".join(cur))
                        cur = None
                else:
                    cur = (cur or []) + [nxt]
                i += 2
                continue
            else:
                if c in _SHELL_SPECIAL or (cur is None and c in "#~"):
                    simple = False
                cur = (cur or []) + [c]
                shell.append(c)
        elif state == "'":
            shell.append(c)
            if c == "'":
                state = None
            else:
                cur = (cur or []) + [c]
        else:  # inside "…"
            if c == "\\" and nxt in '\\"$`\n':
                shell.append(c + nxt)
                if nxt != "\n":
                    cur = (cur or []) + [nxt]
                i += 2
                continue
            shell.append(c)
            if c == '"':
                state = None
            else:
                if c in "$`":
                    simple = False
                cur = (cur or []) + [c]
        i += 1
    if state is not None:
        raise ValueError(f"unterminated {state} quote")
    if cur is not None:
        words.append("".join(cur))
    return "".join(shell), (words if simple and words else None)


def discover_inputs(cfg: PipelineConfig) -> tuple[list[Path], dict[str, str]]:
    """The input files (sorted glob of ``input.pattern`` in ``input.directory``) and the
    matches that cannot be used (name → why: a folder, a dangling link, not a FITS file…)."""
    directory = cfg.input.directory
    where = f"{cfg.source}: input"
    if not directory.is_dir():
        raise ConfigError(f"{where}.directory: directory not found: {directory}")
    try:
        matches = glob_files(directory, cfg.input.pattern)
    except ValueError as exc:
        raise ConfigError(f"{where}.pattern: {exc}") from None
    files: list[Path] = []
    rejected: dict[str, str] = {}
    for path in matches:
        why = not_a_fits_file(path)
        if why is None:
            files.append(path)
        else:
            rejected[str(path.relative_to(directory))] = why
    if not files:
        found = (
            f" ({len(rejected)} match(es), none usable: "
            + "; ".join(f"{name}: {why}" for name, why in list(rejected.items())[:3])
            + ")"
            if rejected
            else ""
        )
        raise ConfigError(
            f"{where}.pattern: no file matches {cfg.input.pattern!r} in {directory}{found}"
        )
    return files, rejected


def _file_ids(files: Iterable[Path]) -> list[str]:
    ids: list[str] = []
    seen: dict[str, int] = {}
    for path in files:
        base = stem_of(path)
        count = seen.get(base, 0) + 1
        seen[base] = count
        ids.append(base if count == 1 else f"{base}-{count}")
    return ids


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    cfg: PipelineConfig
    install: FermitoolsInstall | None
    allow_missing: bool
    warnings: list[str]

    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, where: str, message: str) -> None:
        text = f"{where}: {message}"
        if text not in self.notes:
            self.notes.append(text)

    def fail(self, where: str, message: str) -> None:
        """Record a problem: an error (all raised together by build_plan), or a warning
        when tools that cannot run here are tolerated (dry run, a part that is skipped)."""
        text = f"{self.cfg.source}: {where}: {message}"
        found = self.warnings if self.allow_missing else self.errors
        if text not in found:
            found.append(text)


def _install_has(install: FermitoolsInstall | None, tool: str) -> bool:
    return install is not None and install.has_tool(tool)


def resolve_engine(
    requested: EngineChoice,
    tool: str,
    install: FermitoolsInstall | None,
) -> tuple[Literal["native", "fermitools"], str | None]:
    """Pick native or Fermitools for ``tool``; return (engine, problem or None).

    ``auto`` → Fermitools when the installation has the tool, else native when there is a
    native version. A problem (no native version and no Fermitools, ``native`` for a tool
    without one, ``fermitools`` without an installation) is returned as text; the caller
    decides whether it is an error.
    """
    native_ok = tool in NATIVE_TOOL_NAMES
    # HEASoft ftools often come from a separate HEASoft install on PATH, not the Fermitools.
    have = _install_has(install, tool) or (tool in HEASOFT_TOOLS and shutil.which(tool) is not None)
    if requested == "native":
        if native_ok:
            return "native", None
        return "fermitools", f"{tool} has no native version (engine: native)"
    if requested == "fermitools":
        if have:
            return "fermitools", None
        where = f"in the Fermitools at {install.prefix}" if install is not None else ""
        return "fermitools", (
            f"engine fermitools but {tool} was not found {where}".rstrip()
            if install is not None
            else "engine fermitools but no Fermitools installation was found (set "
            "fermitools.prefix, $FERMI_DIR or $CONDA_PREFIX, or put the tools on PATH)"
        )
    if have:
        return "fermitools", None
    if native_ok:
        return "native", None
    if install is None:
        return "fermitools", (
            f"{tool} has no native version and no Fermitools installation was found (set "
            "fermitools.prefix, $FERMI_DIR or $CONDA_PREFIX, or put the tools on PATH)"
        )
    return (
        "fermitools",
        f"{tool} has no native version and is not in the Fermitools at {install.prefix}",
    )


def _check_par_names(
    ctx: _Ctx, where: str, tool: str, params: Mapping[str, str], *, per_key: bool
) -> None:
    """Parameter names a Fermitools run would reject, caught before anything runs: checked
    against the installation's ``<tool>.par`` when it has one (APE names, any case)."""
    if ctx.install is None:
        return
    names = ctx.install.par_names(tool)
    if not names:
        return
    known = {n.lower(): n for n in names}
    for key in params:
        if key.lower() not in known:
            import difflib

            close = difflib.get_close_matches(key.lower(), sorted(known), n=1)
            hint = f" (did you mean {known[close[0]]!r}?)" if close else ""
            location = f"{where}.params.{key}" if per_key else where
            ctx.fail(location, f"{tool} has no parameter {key!r}{hint}")


def _shell_tools(shell: str) -> list[str]:
    """Program names that look like Fermitools/ftools anywhere in a shell command."""
    try:
        lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = shell.split()
    return [PurePath(t).name for t in tokens if is_fermitools_tool(PurePath(t).name)]


# --------------------------------------------------------------------------------------------
# Rendering one step
# --------------------------------------------------------------------------------------------


def _render_step(
    ctx: _Ctx,
    where: str,
    step_cfg: StepConfig | PostStepConfig,
    *,
    file_id: str,
    values: Mapping[str, str],
    file_roles: Mapping[str, Path],
    outputs: dict[str, Path],
    timeout: float | None,
    max_parallel: int | None,
) -> Invocation:
    """One Invocation from a step (or post step) config and the placeholder values.

    ``values``: placeholder → text; ``file_roles``: placeholder → Path for those naming files
    (becoming Invocation.inputs when used); ``outputs``: this step's output paths.
    """
    name = step_cfg.name
    requested: EngineChoice = step_cfg.engine or ctx.cfg.engine
    label = f"{where} (step {name!r})"

    def make(
        engine: Engine,
        inputs: dict[str, Path],
        *,
        tool: str | None = None,
        params: dict[str, str] | None = None,
        argv: tuple[str, ...] | None = None,
        shell: str | None = None,
    ) -> Invocation:
        # A rerun replaces its products, as the Fermitools runs do (clobber=yes).
        if (
            engine == "native"
            and tool
            and params is not None
            and "clobber" not in params
            and not overwrites_by_default(tool)
        ):
            params = {**params, "clobber": "yes"}
        return Invocation(
            name, file_id, engine, tool, params or {}, argv, shell, inputs, dict(outputs),
            timeout, max_parallel, on_data_warning=ctx.cfg.on_data_warning,
        )  # fmt: skip

    if step_cfg.tool is not None:
        tool = step_cfg.tool
        out_params = structured_output_params(step_cfg, where=where, source=ctx.cfg.source)
        params: dict[str, str] = {}
        inputs: dict[str, Path] = {}
        for key, raw in step_cfg.inputs.items():
            text = _substitute_raw(raw, values)
            params[key] = text
            inputs[key] = Path(text)
        # Order of a typical command line: input files, output files, then the parameters.
        for out, param in out_params.items():
            if param not in step_cfg.params:
                params[param] = str(outputs[out])
        for key, raw in step_cfg.params.items():
            if isinstance(raw, str):
                params[key] = _substitute_raw(raw, values)
                for used in placeholders(raw):
                    if used in file_roles and used not in outputs:
                        inputs.setdefault(key, file_roles[used])
            else:
                params[key] = format_param(raw)
        engine, problem = resolve_engine(requested, tool, ctx.install)
        if problem:
            ctx.fail(label, problem)
        templated = {
            k for k, v in step_cfg.params.items() if isinstance(v, str) and placeholders(v)
        }
        for line in check_params(tool, params, templated | set(step_cfg.inputs)):
            key, _, message = line.partition(": ")
            ctx.fail(f"{where}.params.{key}", message)
        if engine == "native":
            params = _with_caldb(ctx, tool, params)
            _check_irfs(ctx, where, tool, params)
            return make("native", inputs, tool=tool, params=params)
        _check_par_names(ctx, where, tool, params, per_key=True)
        argv = _fermitools_argv(tool, params)
        return make("fermitools", inputs, tool=tool, params=params, argv=argv)

    # Existing form: a shell command template, run from the run root.
    assert step_cfg.command is not None
    root = ctx.cfg.root

    def make_cmd(engine: Engine, inputs: dict[str, Path], **kw: Any) -> Invocation:
        inv = make(engine, inputs, **kw)
        return inv if engine == "native" else replace(inv, cwd=root)

    try:
        shell, words = expand_command(step_cfg.command, values)
    except ValueError as exc:
        ctx.errors.append(f"{ctx.cfg.source}: {where}.command: {exc}")
        return make("shell", {}, shell=step_cfg.command)
    equivalent = _script_equivalent(ctx, words, root)
    if equivalent is not None:
        why, tool = equivalent
        ctx.note(label, f"{why}: runs as the native {tool} (same parameters and product)")
        try:
            params = _parse_words(tool, (words or [])[2:])
        except ToolError as exc:
            ctx.errors.append(f"{ctx.cfg.source}: {where}.command: {exc.detail}")
            params = {}
        for line in check_params(tool, params, set()):
            ctx.fail(f"{where}.command", line)
        params = _with_caldb(ctx, tool, _rooted_files(tool, params, root))
        _check_irfs(ctx, f"{where}.command", tool, params)
        inputs = {
            used: file_roles[used]
            for used in placeholders(step_cfg.command)
            if used in file_roles and used not in outputs
        }
        return make("native", inputs, tool=tool, params=params)
    _check_scripts(ctx, f"{where}.command", words, root)
    inputs = {
        used: file_roles[used]
        for used in placeholders(step_cfg.command)
        if used in file_roles and used not in outputs
    }
    if words is None:
        # Shell syntax: it runs through /bin/sh. Any Fermitools program in it still needs
        # an installation (native versions only run single plain tool commands).
        for tool in _shell_tools(shell):
            engine, problem = resolve_engine("fermitools", tool, ctx.install)
            if problem:
                ctx.fail(label, f"the shell command runs {tool}: {problem}")
        if step_cfg.engine == "native":
            ctx.fail(label, "engine native, but the command uses shell syntax")
        return make_cmd("shell", inputs, shell=shell)
    first = words[0]
    tool = PurePath(first).name
    if is_fermitools_tool(tool):
        engine, problem = resolve_engine(requested, tool, ctx.install)
        if problem:
            ctx.fail(label, problem)
        try:
            params = _parse_words(tool, words[1:])
        except ToolError as exc:
            if engine == "native":
                ctx.errors.append(f"{ctx.cfg.source}: {where}.command: {exc.detail}")
                return make("native", inputs, tool=tool, params={})
            # Positional arguments (ftools style): run it as written, through the shell.
            return make_cmd("shell", inputs, tool=tool, shell=shell)
        for line in check_params(tool, params, set()):
            ctx.fail(f"{where}.command", line)
        if engine == "native":
            params = _with_caldb(ctx, tool, _rooted_files(tool, params, root))
            _check_irfs(ctx, f"{where}.command", tool, params)
            return make("native", inputs, tool=tool, params=params)
        _check_par_names(ctx, f"{where}.command", tool, params, per_key=False)
        argv = _fermitools_argv(words[0], params)
        return make_cmd("fermitools", inputs, tool=tool, params=params, argv=argv)
    if step_cfg.engine == "native":
        ctx.fail(label, f"engine native, but {first!r} is not a tool with a native version")
    return make_cmd("shell", inputs, shell=shell)


_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")

#: The existing runner's own post-processing scripts (its ``scripts/``) and the native tool
#: that does the same: ``parallel_expcube.py`` runs gtexpcube2 per energy plane and stacks
#: the planes (identical to one gtexpcube2 run, its author verified); ``hpx_divide.py``
#: divides a HEALPix counts map by a HEALPix exposure (positional: counts exposure flux).
SCRIPT_EQUIVALENTS: dict[str, str] = {
    "parallel_expcube.py": "gtexpcube2",
    "hpx_divide.py": "hpx_divide",
}


def _script_equivalent(ctx: _Ctx, words: list[str] | None, root: Path) -> tuple[str, str] | None:
    """(why, native tool) when a command runs one of :data:`SCRIPT_EQUIVALENTS` that is
    absent, or that needs Fermitools this machine does not have; None: run it as written."""
    if not words or len(words) < 2 or not _PYTHON.match(PurePath(words[0]).name):
        return None
    script = PurePath(words[1]).name
    tool = SCRIPT_EQUIVALENTS.get(script)
    if tool is None:
        return None
    path = Path(words[1]) if Path(words[1]).is_absolute() else root / words[1]
    if not path.is_file():
        return f"{path} is not here", tool
    if tool == "gtexpcube2" and not _install_has(ctx.install, "gtexpcube2"):
        return f"{script} needs the Fermitools' gtexpcube2, not installed here", tool
    return None


def _with_caldb(ctx: _Ctx, tool: str, params: dict[str, str]) -> dict[str, str]:
    """The config's ``caldb`` given to a native exposure or PSF tool as its ``caldb``
    parameter (the process environment is left alone: one process may run several
    configs)."""
    if tool in ("gtexpcube2", "gtpsf") and ctx.cfg.caldb is not None and not params.get("caldb"):
        return {**params, "caldb": str(ctx.cfg.caldb)}
    return params


def _check_irfs(ctx: _Ctx, where: str, tool: str, params: Mapping[str, str]) -> None:
    """A native exposure or PSF tool's IRF must be in the CALDB: checked now (one line
    naming the IRF and where it looked), not when the merges are done."""
    if tool not in ("gtexpcube2", "gtpsf"):
        return
    irfs = params.get("irfs", "").strip()
    if not irfs or irfs.upper() == "CALDB":
        return
    from fermipipe.errors import FermipipeError
    from fermipipe.irf.caldb import resolve_irf

    try:
        evtype_text = params.get("evtype", "").strip()
        evtype = int(float(evtype_text)) if evtype_text not in ("", "INDEF") else None
    except ValueError:
        return  # check_params has said what is wrong with it
    try:
        resolve_irf(irfs, evtype, params.get("caldb") or None)
    except FermipipeError as exc:
        ctx.fail(where, str(exc))


def _check_scripts(ctx: _Ctx, where: str, words: list[str] | None, root: Path) -> None:
    """A command running a script (``python3 some/script.py …``) needs that script: a
    missing one is a config error now, not a failure after hours of work."""
    if not words or not _PYTHON.match(PurePath(words[0]).name) or len(words) < 2:
        return
    script = words[1]
    if script.startswith("-") or not script.endswith(".py"):
        return
    path = Path(script) if Path(script).is_absolute() else root / script
    if not path.is_file():
        ctx.fail(where, f"script not found: {path}")


def _rooted_files(tool: str, params: dict[str, str], root: Path) -> dict[str, str]:
    """``params`` with relative file parameters made absolute against the run root: a
    native tool runs in this process, whose working directory may not be the root."""
    from fermipipe.native import file_params

    files = file_params(tool)
    out = dict(params)
    for key, value in params.items():
        text = value.strip()
        bang = "!" if text.startswith("!") else ""  # ftools' "overwrite" prefix
        path = text.removeprefix("!")
        if not path or path.startswith("@") or Path(path).is_absolute():
            continue
        relative = path.startswith(("./", "../"))
        if relative or (key in files and ("/" in path or looks_like_fits_name(Path(path)))):
            out[key] = bang + os.path.normpath(root / path)
    return out


def _parse_words(tool: str, words: list[str]) -> dict[str, str]:
    from fermipipe.native.params import parse_argv

    return parse_argv(words, tool)


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def _compact_counts(inv: Invocation, compactable: set[str]) -> Invocation:
    """A native gtbin counts map (CMAP/CCUBE) that only an image_sum reads is written as a
    compact counts file (gtbin ``outform=compact``, fermipipe.compact_counts): the same
    map, expandable to the same bytes, ~150× smaller than the dense weekly cube and never
    built dense in memory. Kept outputs and maps other steps read stay dense FITS."""
    params = {k.lower(): v for k, v in inv.params.items()}
    if (
        inv.engine != "native"
        or inv.tool != "gtbin"
        or params.get("algorithm", "").upper() not in ("CMAP", "CCUBE")
        or "outform" in params
        or not inv.outputs
        or not set(inv.outputs) <= compactable
    ):
        return inv
    return replace(inv, params={**inv.params, "outform": "compact"})


def _select(cfg: PipelineConfig, only: list[str] | None) -> tuple[set[str], set[str], set[str]]:
    steps = [s.name for s in cfg.steps]
    merges = [m.name for m in cfg.merging]
    posts = [p.name for p in cfg.post_processing]
    if only is None:
        return set(steps), set(merges), set(posts)
    known = set(steps) | set(merges) | set(posts)
    for name in only:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{cfg.source}: --steps (or run.steps): no step, merge or post-processing step "
                f"named {name!r}{hint}"
            )
    chosen = set(only)
    return chosen & set(steps), chosen & set(merges), chosen & set(posts)


def build_plan(
    cfg: PipelineConfig,
    *,
    only_steps: list[str] | None = None,
    workdir: Path | None = None,
    fermitools: FermitoolsInstall | None = None,
    allow_missing_tools: bool = False,
    skip_merge: bool = False,
    skip_post: bool = False,
) -> Plan:
    """Render the whole run (see the module docstring). Raises ConfigError, naming every
    problem found, before any work. Merges (``skip_merge``) and post-processing steps
    (``skip_post``) that will not run are left out and their tools not required."""
    ctx = _Ctx(cfg, fermitools, allow_missing_tools, [])
    work = Path(workdir) if workdir is not None else cfg.output.workdir
    outdir = cfg.output.directory
    files, rejected = discover_inputs(cfg)
    ids = _file_ids(files)
    keep_steps, keep_merges, keep_posts = _select(cfg, only_steps)

    if skip_merge:
        keep_merges = set()
    if skip_post:
        keep_posts = set()
    merged_outputs = {m.output_name for m in cfg.merging}
    cleanup_of = {out for s in cfg.steps for out in s.cleanup_outputs}
    keep_of = {out for s in cfg.steps for out in s.keep_outputs}
    # Counts maps that only an image_sum reads: a native gtbin writes them compact.
    read_by_steps = {
        name
        for s in cfg.steps
        for text in (s.command or "", *s.params.values(), *s.inputs.values())
        if isinstance(text, str)
        for name in placeholders(text)
        if name not in s.outputs  # a step's own output is written, not read
    }
    compactable = (
        {m.output_name for m in cfg.merging if m.strategy == "image_sum"} - keep_of - read_by_steps
    )
    common = {k: str(v) for k, v in cfg.common_files.items()}
    common_roles = dict(cfg.common_files)
    dirs = {"output_dir": str(outdir), "config_dir": str(cfg.base_dir)}

    file_plans: list[FilePlan] = []
    per_output_paths: dict[str, list[Path]] = {}
    after_merge_cleanup: list[Path] = []
    kept_names: dict[Path, str] = {}  # product path in outdir → file that writes it
    engines: dict[str, Engine] = {}

    for path, file_id in zip(files, ids, strict=True):
        week = week_of(path.name)
        name_values = {"stem": stem_of(path)}
        if week is not None:
            name_values["week"] = week
        values: dict[str, str] = {"input": str(path), **name_values, **dirs, **common}
        roles: dict[str, Path] = {"input": path, **common_roles}
        chain: list[Invocation] = []
        cleanup: list[Path] = []
        keep: list[tuple[Path, Path]] = []
        for i, step in enumerate(cfg.steps):
            where = f"steps[{i}]"
            selected = step.name in keep_steps
            outputs: dict[str, Path] = {}
            for out, template in step.outputs.items():
                missing = [p for p in placeholders(template) if p not in name_values]
                if missing:
                    raise ConfigError(
                        f"{cfg.source}: {where}.outputs.{out}: {{{missing[0]}}} is not defined "
                        f"for {path.name} (no _wNNN_ in its name)"
                    )
                fname = _substitute_raw(template, name_values)
                # Per-file outputs live in the run's work area and go with it; what a step
                # keeps is copied to the output folder after the merges.
                target = work / file_id / fname
                if out in keep_of:
                    if selected:
                        keep.append((target, outdir / fname))
                    owner = kept_names.get(outdir / fname)
                    if owner is not None and owner != file_id:
                        raise ConfigError(
                            f"{cfg.source}: {where}.outputs.{out}: file name {template!r} is the "
                            f"same for inputs {owner!r} and {file_id!r}; put {{stem}} in it"
                        )
                    kept_names[outdir / fname] = file_id
                outputs[out] = target
                if out in cleanup_of and selected:  # only what this run writes is deleted
                    (after_merge_cleanup if out in merged_outputs else cleanup).append(target)
                per_output_paths.setdefault(out, []).append(target)
            for used in placeholders(step.command or "") + [
                p
                for v in (*step.params.values(), *step.inputs.values())
                if isinstance(v, str)
                for p in placeholders(v)
            ]:
                if used == "week" and week is None:
                    raise ConfigError(
                        f"{cfg.source}: {where}: {{week}} is not defined for {path.name} "
                        "(no _wNNN_ in its name)"
                    )
            step_values = {**values, **{k: str(v) for k, v in outputs.items()}}
            step_roles = {**roles, **outputs}
            # A step left out by only_steps does not run: its engine cannot be a problem.
            inv = _render_step(
                ctx if selected else _Ctx(cfg, fermitools, True, []),
                where,
                step,
                file_id=file_id,
                values=step_values,
                file_roles=step_roles,
                outputs=outputs,
                timeout=step.timeout or cfg.resources.timeout,
                max_parallel=step.max_parallel,
            )
            inv = _compact_counts(inv, compactable)
            engines[step.name] = inv.engine
            values.update({k: str(v) for k, v in outputs.items()})
            roles.update(outputs)
            if selected:
                chain.append(inv)
        file_plans.append(FilePlan(file_id, path, tuple(chain), tuple(cleanup), tuple(keep), week))

    merges: list[MergePlan] = []
    post_values: dict[str, str] = {**common, **dirs}
    post_roles: dict[str, Path] = dict(common_roles)
    for i, merge in enumerate(cfg.merging):
        target = cfg.merge_output(merge.output_file)
        engine: Engine = "native"
        if merge.strategy == "ftmerge" and merge.engine == "fermitools":
            # Only on explicit request: ftmerge keeps the first file's GTI (spec §8), so the
            # native concatenation with a GTI union is the default.
            engine, problem = resolve_engine("fermitools", "ftmerge", fermitools)
            if problem and merge.name in keep_merges:
                ctx.fail(f"merging[{i}] (merge {merge.name!r})", problem)
        if merge.tool is not None:
            engine, problem = resolve_engine(merge.engine or cfg.engine, merge.tool, fermitools)
            if problem and merge.name in keep_merges:
                ctx.fail(f"merging[{i}] (merge {merge.name!r})", problem)
        post_values[merge.name] = str(target)
        post_roles[merge.name] = target
        if merge.name in keep_merges:
            merges.append(
                MergePlan(
                    merge.name,
                    merge.output_name,
                    target,
                    merge.strategy,
                    merge.tool,
                    engine,
                    tuple(per_output_paths.get(merge.output_name, ())),
                    merge.timeout or cfg.resources.timeout,
                    cfg.resources.parallel_accum,
                )
            )

    posts: list[Invocation] = []
    for i, post in enumerate(cfg.post_processing):
        outputs = {out: outdir / template for out, template in post.outputs.items()}
        values = {**post_values, **{k: str(v) for k, v in outputs.items()}}
        inv = _render_step(
            ctx if post.name in keep_posts else _Ctx(cfg, fermitools, True, []),
            f"post_processing[{i}]",
            post,
            file_id="post",
            values=values,
            file_roles={**post_roles, **outputs},
            outputs=outputs,
            timeout=post.timeout or cfg.resources.timeout,
            max_parallel=None,
        )
        engines[post.name] = inv.engine
        post_values.update({k: str(v) for k, v in outputs.items()})
        post_roles.update(outputs)
        if post.name in keep_posts:
            posts.append(inv)

    _check_products(ctx, files, merges, cfg.post_processing, posts, file_plans)
    if ctx.errors:
        raise ConfigError(*ctx.errors)
    return Plan(
        tuple(file_plans),
        tuple(merges),
        tuple(posts),
        work,
        outdir,
        tuple(after_merge_cleanup),
        tuple(ctx.warnings),
        engines,
        rejected,
        tuple(ctx.notes),
    )


def _real(path: Path) -> Path:
    """``path`` with symlinks and ``..`` resolved, even where it does not exist yet."""
    return Path(os.path.realpath(path))


def _check_products(
    ctx: _Ctx,
    inputs: list[Path],
    merges: list[MergePlan],
    post_cfgs: Iterable[PostStepConfig],
    posts: list[Invocation],
    file_plans: list[FilePlan],
) -> None:
    """No product, kept copy or log may be written onto an input, a common file, a file the
    input pattern would pick up, or into the cache store; a merge's ``output_file`` stays in
    the run root or the output folder. Real paths are compared, so symlinks and ``..`` do not
    get around it. (Files an existing-form post command writes are not declared: they
    cannot be checked.)"""
    cfg = ctx.cfg
    protected = {_real(p): "an input file" for p in inputs}
    protected.update({_real(p): f"common file {k!r}" for k, p in cfg.common_files.items()})
    for step in (*cfg.steps, *cfg.post_processing):
        for key, value in step.inputs.items():
            if not placeholders(value):
                protected[_real(Path(value))] = f"the input {key!r} of step {step.name!r}"
    for fp in file_plans:  # what each step reads that no step makes (e.g. a weekly FT2)
        made = {Path(p) for inv in fp.chain for p in inv.outputs.values()}
        for inv in fp.chain:
            for key, value in inv.inputs.items():
                if Path(value) not in made:
                    protected.setdefault(_real(Path(value)), f"the input {key!r} of {inv.step}")
    input_dir, store = _real(cfg.input.directory), _real(cfg.cache_root)
    root, outdir = _real(cfg.root), _real(cfg.output.directory)

    def check(where: str, path: Path) -> None:
        real = _real(path)
        if real in protected:
            ctx.fail(where, f"{path} would overwrite {protected[real]}")
        elif real.is_relative_to(store):
            ctx.fail(where, f"{path} is inside the cache store {cfg.cache_root}")
        elif real.is_relative_to(input_dir) and fnmatch.fnmatch(
            str(real.relative_to(input_dir)), cfg.input.pattern
        ):
            ctx.fail(where, f"{path} matches input.pattern: the next run would read it")
        elif real.is_dir():
            ctx.fail(where, f"{path} is a folder")

    for i, merge in enumerate(cfg.merging):
        where = f"merging[{i}].output_file"
        target = cfg.merge_output(merge.output_file)
        if not Path(merge.output_file).is_absolute() and not (
            _real(target).is_relative_to(root) or _real(target).is_relative_to(outdir)
        ):
            ctx.fail(where, f"{merge.output_file!r} leads out of the run root and output folder")
        check(where, target)
    for i, post in enumerate(post_cfgs):
        for out, template in post.outputs.items():
            check(f"post_processing[{i}].outputs.{out}", cfg.output.directory / template)
    for fp in file_plans:
        for _src, dest in fp.keep:
            check(f"{fp.file_id}: kept output", dest)
    check("output.directory (logs)", cfg.output.directory / "logs" / "x.log")
    del merges, posts  # the config's own entries are checked (their planned paths agree)


def render_dry_run(plan: Plan) -> str:
    """Human-readable listing of everything the plan would run, in order."""
    lines: list[str] = []
    n_steps = max((len(f.chain) for f in plan.files), default=0)
    lines.append(
        f"# fermipipe plan: {len(plan.files)} input file(s) x {n_steps} step(s), "
        f"{len(plan.merges)} merge(s), {len(plan.post)} post-processing step(s)"
    )
    lines.append(f"# workdir: {plan.workdir}")
    lines.append(f"# products: {plan.outdir}")
    for warning in plan.warnings:
        lines.append(f"# WARNING: {warning}")
    for note in plan.notes:
        lines.append(f"# NOTE: {note}")
    for name, why in plan.rejected.items():
        lines.append(f"# LEFT OUT: {name}: {why}")
    for fp in plan.files:
        lines.append("")
        week = f" week {fp.week}" if fp.week else ""
        lines.append(f"## file {fp.file_id}{week}: {fp.input}")
        for inv in fp.chain:
            lines.append(f"[{inv.engine}] {inv.render()}")
        for src, dst in fp.keep:
            lines.append(
                f"# keep after the merges: {shlex.quote(str(src))} -> {shlex.quote(str(dst))}"
            )
        if fp.cleanup:
            lines.append("# then delete: " + " ".join(shlex.quote(str(p)) for p in fp.cleanup))
    if plan.merges:
        lines.append("")
        lines.append("## merges")
        for merge in plan.merges:
            how = merge.strategy + (f" with {merge.tool}" if merge.tool else "")
            lines.append(
                f"[{merge.engine}] {merge.name}: {how} of {len(merge.inputs)} x "
                f"{{{merge.output_name}}} -> {merge.output}"
            )
            for path in merge.inputs:
                lines.append(f"#   {path}")
    if plan.cleanup:
        lines.append(
            "# after the merges delete: " + " ".join(shlex.quote(str(p)) for p in plan.cleanup)
        )
    if plan.post:
        lines.append("")
        lines.append("## post-processing")
        for inv in plan.post:
            lines.append(f"[{inv.engine}] {inv.render()}")
    return "\n".join(lines) + "\n"


def tool_invocation(
    step: str,
    file_id: str,
    engine: Literal["native", "fermitools"],
    tool: str,
    params: Mapping[str, object],
    *,
    inputs: Mapping[str, Path] | None = None,
    outputs: Mapping[str, Path] | None = None,
    timeout: float | None = None,
    max_parallel: int | None = None,
) -> Invocation:
    """An Invocation of ``tool`` built the way the planner builds them (for merges: e.g. one
    pairwise gtltsum ``infile1=a infile2=b outfile=c``): values formatted Fermitools-style,
    and for the Fermitools engine an argv ending in ``mode=h clobber=yes``."""
    text = {k: format_param(v) for k, v in params.items()}
    argv = _fermitools_argv(tool, text) if engine == "fermitools" else None
    return Invocation(
        step,
        file_id,
        engine,
        tool,
        text,
        argv,
        None,
        dict(inputs or {}),
        dict(outputs or {}),
        timeout,
        max_parallel,
    )


def prepare(
    config_path: str | Path,
    *,
    dry_run: bool = False,
    only_steps: list[str] | None = None,
    skip_merge: bool = False,
    skip_post: bool = False,
    keep_intermediate: bool = False,
    verify_cache: bool = False,
    workdir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
    overrides: Iterable[str] = (),
    workers: int | None = None,
) -> tuple[PipelineConfig, FermitoolsInstall | None, Plan, RunChoices]:
    """Everything a run needs before any work: load and validate the config (``root``:
    the run root, default the current directory; ``overrides``: ``key=value`` settings),
    locate the Fermitools (config prefix, $FERMI_DIR, $CONDA_PREFIX, PATH), combine the
    command-line choices with the config's ``run:`` and build the plan.

    Raises ConfigError (one line per problem, exit code 2). ``dry_run`` tolerates tools
    that cannot run here (reported in ``Plan.warnings``) so the plan can still be shown,
    and renders the work area as ``output.workdir``; otherwise the plan is made for a run:
    its work area is chosen (:mod:`fermipipe.work_area`, for ``workers`` tools at once)
    and every path rendered into it, once.
    """
    from fermipipe.config import load_config
    from fermipipe.fermitools import locate

    problems: list[str] = []
    cfg = load_config(config_path, root=root, overrides=overrides, collect=problems)
    install = None
    try:
        install = locate(cfg.fermitools.prefix, environ)
    except ConfigError as exc:
        if not problems:  # a bad prefix is already among the config's problems
            problems.append(f"{cfg.source}: {exc}")
    choices = cfg.choices(only_steps, skip_merge, skip_post, keep_intermediate, verify_cache)
    area = None
    if not dry_run and workdir is None and not problems:
        try:
            inputs, _rejected = discover_inputs(cfg)
        except ConfigError:
            inputs = []  # build_plan reports it
        depth = len(cfg.steps) if choices.steps is None else len(choices.steps)
        area = choose_work_area(cfg, inputs, depth, workers or cfg.resources.max_workers)
        workdir = area.folder
    try:
        plan = build_plan(
            cfg,
            only_steps=choices.steps,
            workdir=workdir,
            fermitools=install,
            allow_missing_tools=dry_run,
            skip_merge=choices.skip_merge,
            skip_post=choices.skip_post,
        )
    except ConfigError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise ConfigError(*problems)
    return cfg, install, replace(plan, work_area=area), choices


def rebase_path(value: str, old: Path, new: Path) -> str:
    """``value`` moved from under ``old`` to under ``new`` if it is a path below ``old``."""
    o = str(old).rstrip("/") + "/"
    return str(new).rstrip("/") + "/" + value[len(o) :] if value.startswith(o) else value


def rebase(inv: Invocation, old: Path, new: Path) -> Invocation | None:
    """``inv`` with every file below the folder ``old`` moved below ``new`` (a chain run in
    a node's own RAM-disk folder instead of the planned work folder).

    Returns None when a shell command cannot be rewritten safely (a folder name that would
    need quoting there).
    """
    o, n = str(old).rstrip("/") + "/", str(new).rstrip("/") + "/"
    shell = inv.shell
    if shell is not None:
        if shlex.quote(o) != o or shlex.quote(n) != n:
            return None
        shell = shell.replace(o, n)
    argv = None
    if inv.argv is not None:
        argv = tuple(
            (w.split("=", 1)[0] + "=" + rebase_path(w.split("=", 1)[1], old, new))
            if "=" in w and not w.startswith(o)
            else rebase_path(w, old, new)
            for w in inv.argv
        )
    return replace(
        inv,
        params={k: rebase_path(v, old, new) for k, v in inv.params.items()},
        argv=argv,
        shell=shell,
        inputs={k: Path(rebase_path(str(v), old, new)) for k, v in inv.inputs.items()},
        outputs={k: Path(rebase_path(str(v), old, new)) for k, v in inv.outputs.items()},
    )


def relocate(inv: Invocation, old: Path, new: Path) -> Invocation | None:
    """``inv`` reading ``new`` wherever it read ``old`` (a staged copy, an FT2 slice).

    Returns None when the command cannot be rewritten safely: a shell command whose old or
    new path would need quoting (its words were quoted for their place in the template).
    """
    o, n = str(old), str(new)
    shell = inv.shell
    if shell is not None:
        if shlex.quote(o) != o or shlex.quote(n) != n:
            return None
        shell = shell.replace(o, n)
    # Whole values only (a longer path that merely starts with the old one stays as is).
    params = {k: (n if v == o else v) for k, v in inv.params.items()}
    argv = None
    if inv.argv is not None:
        argv = tuple(
            n if w == o else (w[: -len(o)] + n if w.endswith("=" + o) else w) for w in inv.argv
        )
    inputs = {k: (Path(n) if str(v) == o else v) for k, v in inv.inputs.items()}
    return replace(inv, params=params, argv=argv, shell=shell, inputs=inputs)

"""Locating a Fermitools installation, its environment and its version.

Public API
----------
``locate(prefix=None, environ=None) -> FermitoolsInstall | None``
    Search order: ``prefix`` (config ``fermitools.prefix``, a conda env; an invalid one is a
    ConfigError), ``$FERMI_DIR``, ``$CONDA_PREFIX``, then ``gtselect`` on ``PATH``. None when
    nothing is found (the pipeline then uses the native engine where it can).
``FermitoolsInstall``
    ``prefix``, ``bin_dirs``, ``syspfiles``, ``caldb``, ``fermi_dir``, ``version`` (or None);
    ``has_tool(name)``, ``which(name)``, ``par_names(tool)`` (from its syspfiles .par file),
    ``env(base_env=None) -> dict``.
``private_env(base_env, pfiles_dir) -> dict``
    ``base_env`` with ``PFILES="<pfiles_dir>;<system part>"`` and the non-interactive HEADAS
    variables (spec §11).

Layout facts (fermi-lat/Fermitools-conda recipe/activate.sh): the conda package installs
its data under ``<prefix>/share/fermitools`` (= ``$FERMI_DIR``), system parameter files in
``<prefix>/share/fermitools/syspfiles``, the calibration database in
``<prefix>/share/fermitools/data/caldb`` (CALDB, with ``software/tools/caldb.config`` and
``alias_config.fits``), reference data in ``share/fermitools/refdata/fermi`` (EXTFILESSYS,
TIMING_DIR=.../jplephem), and puts ``<prefix>/bin/fermitools`` before ``PATH``; tools are
looked up there and in ``<prefix>/bin`` (conda's own bin directory, always on an activated
env's PATH), in that order. Activation sets
``PFILES=".:$HOME/pfiles;<syspfiles>"`` — a shared user part that parallel runs must not use,
hence :func:`private_env`. Pre-conda tarball installs have ``$FERMI_DIR`` holding ``bin/``,
``syspfiles/`` and ``data/caldb`` directly; both layouts are recognised.

Nothing here runs a Fermitools program: the version comes from conda metadata
(``<prefix>/conda-meta/fermitools-<version>-<build>.json``) and is None when unknown.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fermipipe.errors import ConfigError

__all__ = ["FermitoolsInstall", "locate", "private_env", "read_version"]

#: A program every Fermitools installation has: used to recognise one.
PROBE_TOOL = "gtselect"

_META = re.compile(r"^fermitools-(\d[^-]*)-[^-]+\.json$")


def _is_exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class FermitoolsInstall:
    """One Fermitools installation (paths only; nothing is run)."""

    prefix: Path  # the conda env (or the tarball's FERMI_DIR)
    fermi_dir: Path  # <prefix>/share/fermitools for conda, FERMI_DIR itself otherwise
    bin_dirs: tuple[Path, ...]  # searched first for tools
    syspfiles: Path
    caldb: Path
    version: str | None = None

    def which(self, name: str) -> Path | None:
        """Path of program ``name`` in this installation's bin directories, or None."""
        for directory in self.bin_dirs:
            candidate = directory / name
            if _is_exe(candidate):
                return candidate
        return None

    def has_tool(self, name: str) -> bool:
        """True if this installation provides program ``name``."""
        return self.which(name) is not None

    def par_names(self, tool: str) -> list[str] | None:
        """Parameter names of ``tool`` from its system parameter file ``<syspfiles>/<tool>.par``
        (APE format: ``name,type,mode,default,min,max,prompt``; ``#`` comments), or None when
        there is no such file."""
        try:
            text = (self.syspfiles / f"{tool}.par").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        names = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name = line.split(",", 1)[0].strip()
                if name:
                    names.append(name)
        return names

    def env(self, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment the tools need, derived from this installation (never hard-coded).

        PATH gets the installation's bin directories in front (once). FERMI_DIR, CALDB,
        CALDBCONFIG, CALDBALIAS, EXTFILESSYS, TIMING_DIR, GENERICSOURCESDATAPATH follow
        activate.sh. PFILES keeps a user part given in ``base_env`` (replace it per run with
        :func:`private_env`) and gets this installation's syspfiles as system part. HEADASNOQUERY / HEADASPROMPT make any
        HEASoft-style prompt impossible; HEADAS is kept when the caller has one (the conda
        package does not set it).
        """
        env = dict(os.environ if base_env is None else base_env)
        path_parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
        mine = [str(d) for d in self.bin_dirs]
        env["PATH"] = os.pathsep.join(mine + [p for p in path_parts if p not in mine])
        env["FERMI_DIR"] = str(self.fermi_dir)
        env["FERMI_INST_DIR"] = str(self.fermi_dir)
        env["CALDB"] = str(self.caldb)
        env["CALDBCONFIG"] = str(self.caldb / "software" / "tools" / "caldb.config")
        env["CALDBALIAS"] = str(self.caldb / "software" / "tools" / "alias_config.fits")
        refdata = self.fermi_dir / "refdata" / "fermi"
        env["EXTFILESSYS"] = str(refdata)
        env["TIMING_DIR"] = str(refdata / "jplephem")
        env["GENERICSOURCESDATAPATH"] = str(self.fermi_dir / "data" / "genericSources")
        user = _pfiles_user_part(env.get("PFILES", ""))
        env["PFILES"] = f"{user};{self.syspfiles}"
        env["HEADASNOQUERY"] = "1"
        env["HEADASPROMPT"] = "/dev/null"
        return env


def _pfiles_user_part(pfiles: str) -> str:
    """The read-write part of a PFILES value ("user;system"); a value without ';' is all
    user part, as APE reads it."""
    return pfiles.split(";", 1)[0] if pfiles else ""


def _pfiles_system_part(pfiles: str) -> str:
    return pfiles.split(";", 1)[1] if ";" in pfiles else ""


def private_env(
    base_env: Mapping[str, str] | Path | str | None = None,
    pfiles_dir: Path | str | Mapping[str, str] | None = None,
    *,
    base: Mapping[str, str] | None = None,
    install: FermitoolsInstall | None = None,
) -> dict[str, str]:
    """``base_env`` with a private PFILES user directory and no prompting (spec §11).

    ``PFILES = "<pfiles_dir>;<system part>"``: the system part is the one already in
    ``base_env`` (e.g. from :meth:`FermitoolsInstall.env`), else ``install``'s syspfiles,
    else ``$FERMI_DIR``/``$CONDA_PREFIX`` ``share/fermitools/syspfiles`` when it exists. The
    user part of the caller is dropped on purpose: it is shared ("." and ``~/pfiles``) and
    every run rewrites its ``<tool>.par`` there, so parallel runs would collide.

    Accepts ``private_env(env, pfiles_dir)`` and, for the runner's call style,
    ``private_env(pfiles_dir, base=env)``.
    """
    if isinstance(base_env, Path | str) and (pfiles_dir is None or isinstance(pfiles_dir, Mapping)):
        base_env, pfiles_dir = pfiles_dir, base_env
    if base is not None:
        base_env = base
    if pfiles_dir is None or isinstance(pfiles_dir, Mapping):
        raise TypeError("private_env needs a pfiles_dir")
    env = dict(os.environ if base_env is None else base_env)  # type: ignore[arg-type]
    system = _pfiles_system_part(env.get("PFILES", ""))
    if not system and install is not None:
        system = str(install.syspfiles)
    if not system:
        for var in ("FERMI_DIR", "CONDA_PREFIX"):
            root = env.get(var)
            if not root:
                continue
            for candidate in (
                Path(root) / "syspfiles",
                Path(root) / "share" / "fermitools" / "syspfiles",
            ):
                if candidate.is_dir():
                    system = str(candidate)
                    break
            if system:
                break
    env["PFILES"] = f"{pfiles_dir};{system}"
    env["HEADASNOQUERY"] = "1"
    env["HEADASPROMPT"] = "/dev/null"
    return env


def read_version(prefix: Path) -> str | None:
    """Fermitools version from ``<prefix>/conda-meta/fermitools-*.json``, or None."""
    meta = prefix / "conda-meta"
    try:
        names = sorted(os.listdir(meta))
    except OSError:
        return None
    for name in names:
        match = _META.match(name)
        if not match:
            continue
        try:
            data = json.loads((meta / name).read_text(encoding="utf-8"))
            version = data.get("version")
            if isinstance(version, str) and version:
                return version
        except (OSError, ValueError):
            pass
        return match.group(1)
    return None


def _from_root(root: Path) -> FermitoolsInstall | None:
    """An installation rooted at ``root`` (conda prefix or tarball FERMI_DIR), or None."""
    root = root.expanduser()
    conda_fermi = root / "share" / "fermitools"
    if (conda_fermi / "syspfiles").is_dir():
        bins = tuple(d for d in (root / "bin" / "fermitools", root / "bin") if d.is_dir())
        install = FermitoolsInstall(
            root,
            conda_fermi,
            bins,
            conda_fermi / "syspfiles",
            conda_fermi / "data" / "caldb",
            read_version(root),
        )
    elif (root / "syspfiles").is_dir():
        install = FermitoolsInstall(
            root,
            root,
            tuple(d for d in (root / "bin",) if d.is_dir()),
            root / "syspfiles",
            root / "data" / "caldb",
            None,
        )
    else:
        return None
    return install if install.has_tool(PROBE_TOOL) else None


def _conda_root_of_fermi_dir(fermi_dir: Path) -> Path:
    """``$FERMI_DIR`` is ``<prefix>/share/fermitools`` for conda installs: return the prefix."""
    if fermi_dir.name == "fermitools" and fermi_dir.parent.name == "share":
        return fermi_dir.parent.parent
    return fermi_dir


def _which(name: str, path: str) -> Path | None:
    for directory in path.split(os.pathsep):
        if directory and _is_exe(Path(directory) / name):
            return Path(directory) / name
    return None


def locate(
    prefix: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> FermitoolsInstall | None:
    """Find a Fermitools installation (see the module docstring for the order).

    ``prefix`` given but not an installation → ConfigError naming ``fermitools.prefix`` (the
    user asked for that one; silently using another would be wrong).
    """
    env = os.environ if environ is None else environ
    if prefix is not None:
        found = _from_root(Path(prefix))
        if found is None:
            raise ConfigError(
                f"fermitools.prefix: no Fermitools installation at {prefix} (expected "
                f"share/fermitools/syspfiles and bin/{PROBE_TOOL})"
            )
        return found
    for var in ("FERMI_DIR", "CONDA_PREFIX"):
        value = env.get(var)
        if value:
            found = _from_root(_conda_root_of_fermi_dir(Path(value)))
            if found is not None:
                return found
    exe = _which(PROBE_TOOL, env.get("PATH", ""))
    if exe is not None:
        bin_dir = exe.resolve().parent if exe.is_symlink() else exe.parent
        for root in (bin_dir.parent, bin_dir.parent.parent):  # <prefix>/bin or bin/fermitools
            found = _from_root(root)
            if found is not None:
                return found
    return None

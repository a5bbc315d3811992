"""Locating a Fermitools installation and deriving its environment.

No Fermitools are installed here: these tests build installation *directory layouts* in
tmp_path (empty files named like the tools, never executed) to check the path logic.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fermipipe.errors import ConfigError
from fermipipe.fermitools import locate, private_env, read_version


def conda_layout(prefix: Path, tools: tuple[str, ...] = ("gtselect", "gtltcube")) -> Path:
    fermi = prefix / "share" / "fermitools"
    (fermi / "syspfiles").mkdir(parents=True)
    (fermi / "data" / "caldb").mkdir(parents=True)
    (prefix / "bin").mkdir(parents=True)
    for tool in tools:
        exe = prefix / "bin" / tool
        exe.write_bytes(b"")
        exe.chmod(0o755)
    return prefix


def test_nothing_found_returns_none(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    assert locate(environ={"PATH": str(empty)}) is None
    assert locate(environ={}) is None
    # Variables pointing at non-installations are ignored, not errors.
    assert locate(environ={"FERMI_DIR": str(tmp_path), "CONDA_PREFIX": str(tmp_path)}) is None


def test_config_prefix_conda_layout(tmp_path: Path) -> None:
    prefix = conda_layout(tmp_path / "envs" / "fermi")
    meta = prefix / "conda-meta"
    meta.mkdir()
    (meta / "fermitools-2.4.0-py311_0.json").write_text(json.dumps({"version": "2.4.0"}))
    install = locate(prefix)
    assert install is not None
    assert install.prefix == prefix
    assert install.fermi_dir == prefix / "share" / "fermitools"
    assert install.syspfiles == prefix / "share" / "fermitools" / "syspfiles"
    assert install.caldb == prefix / "share" / "fermitools" / "data" / "caldb"
    assert install.version == "2.4.0"
    assert install.has_tool("gtltcube") and not install.has_tool("gtexpcube2")
    assert install.which("gtselect") == prefix / "bin" / "gtselect"


def test_version_from_file_name_or_unknown(tmp_path: Path) -> None:
    (tmp_path / "conda-meta").mkdir()
    assert read_version(tmp_path) is None
    (tmp_path / "conda-meta" / "fermitools-2.2.0-broken.json").write_text("{not json")
    assert read_version(tmp_path) == "2.2.0"
    assert read_version(tmp_path / "missing") is None


def test_bad_config_prefix_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^fermitools.prefix: no Fermitools installation at"):
        locate(tmp_path / "nothing")


def test_non_executable_tool_is_not_a_tool(tmp_path: Path) -> None:
    prefix = conda_layout(tmp_path / "env")
    (prefix / "bin" / "gtbin").write_bytes(b"")  # no exec bit
    install = locate(prefix)
    assert install is not None and not install.has_tool("gtbin")


def test_search_order_fermi_dir_conda_prefix_path(tmp_path: Path) -> None:
    a = conda_layout(tmp_path / "a")
    b = conda_layout(tmp_path / "b")
    c = conda_layout(tmp_path / "c")
    env = {
        "FERMI_DIR": str(a / "share" / "fermitools"),  # conda's FERMI_DIR → its prefix
        "CONDA_PREFIX": str(b),
        "PATH": str(c / "bin"),
    }
    found = locate(environ=env)
    assert found is not None and found.prefix == a
    found = locate(environ={k: v for k, v in env.items() if k != "FERMI_DIR"})
    assert found is not None and found.prefix == b
    found = locate(environ={"PATH": f"/nonexistent{os.pathsep}{c / 'bin'}"})
    assert found is not None and found.prefix == c
    # The config prefix wins over everything.
    found = locate(c, environ=env)
    assert found is not None and found.prefix == c


def test_tarball_layout(tmp_path: Path) -> None:
    root = tmp_path / "fermi"
    (root / "syspfiles").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "gtselect").write_bytes(b"")
    (root / "bin" / "gtselect").chmod(0o755)
    install = locate(environ={"FERMI_DIR": str(root)})
    assert install is not None
    assert install.syspfiles == root / "syspfiles" and install.caldb == root / "data" / "caldb"
    assert install.version is None


def test_env_derivation(tmp_path: Path) -> None:
    prefix = conda_layout(tmp_path / "env")
    (prefix / "bin" / "fermitools").mkdir()
    install = locate(prefix)
    assert install is not None
    assert install.bin_dirs == (prefix / "bin" / "fermitools", prefix / "bin")
    base = {
        "PATH": f"/usr/bin{os.pathsep}{prefix / 'bin'}",
        "PFILES": ".:/home/u/pfiles",
        "HOME": "/h",
    }
    env = install.env(base)
    path = env["PATH"].split(os.pathsep)
    assert path == [str(prefix / "bin" / "fermitools"), str(prefix / "bin"), "/usr/bin"]
    fermi = prefix / "share" / "fermitools"
    assert env["CALDB"] == str(fermi / "data" / "caldb")
    assert env["CALDBCONFIG"] == str(
        fermi / "data" / "caldb" / "software" / "tools" / "caldb.config"
    )
    assert env["CALDBALIAS"] == str(
        fermi / "data" / "caldb" / "software" / "tools" / "alias_config.fits"
    )
    assert env["FERMI_DIR"] == str(fermi)
    assert env["TIMING_DIR"] == str(fermi / "refdata" / "fermi" / "jplephem")
    assert env["EXTFILESSYS"] == str(fermi / "refdata" / "fermi")
    assert env["GENERICSOURCESDATAPATH"] == str(fermi / "data" / "genericSources")
    assert env["PFILES"] == f".:/home/u/pfiles;{fermi / 'syspfiles'}"
    assert env["HEADASNOQUERY"] == "1" and env["HEADASPROMPT"] == "/dev/null"
    assert env["HOME"] == "/h"
    assert base["PFILES"] == ".:/home/u/pfiles"  # the caller's mapping is not modified


def test_private_env_pfiles(tmp_path: Path) -> None:
    prefix = conda_layout(tmp_path / "env")
    install = locate(prefix)
    assert install is not None
    sys_part = str(prefix / "share" / "fermitools" / "syspfiles")
    private = tmp_path / "run1" / "pfiles"
    env = private_env(install.env({"PATH": "/usr/bin"}), private)
    assert env["PFILES"] == f"{private};{sys_part}"
    assert env["HEADASNOQUERY"] == "1" and env["HEADASPROMPT"] == "/dev/null"
    # The runner's call style gives the same result.
    assert private_env(private, base=install.env({"PATH": "/usr/bin"})) == env
    # No system part in the base environment: taken from the install, else $CONDA_PREFIX.
    assert private_env({}, private, install=install)["PFILES"] == f"{private};{sys_part}"
    assert private_env({"CONDA_PREFIX": str(prefix)}, private)["PFILES"] == f"{private};{sys_part}"
    assert private_env({}, private)["PFILES"] == f"{private};"


def test_private_env_reaches_a_child_process(tmp_path: Path) -> None:
    prefix = conda_layout(tmp_path / "env")
    install = locate(prefix)
    assert install is not None
    private = tmp_path / "p files;x"  # an odd name must survive intact
    env = private_env(install.env({"PATH": "/usr/bin:/bin"}), private)
    out = subprocess.run(
        ["/bin/sh", "-c", 'printf "%s|%s" "$PFILES" "$CALDB"'],
        env=env,
        capture_output=True,
        check=True,
        timeout=10,
    )
    assert out.stdout.decode() == f"{private};{install.syspfiles}|{install.caldb}"

"""Cache keys of a plan: one key per (file, step), computed before anything runs.

A step's key covers the content of the files it reads that no earlier step makes (the input
file, the spacecraft file or its slice, …), the keys of the earlier steps whose outputs it
reads, what it does (``Invocation.params_digest``: tool and parameters with paths replaced by
their roles), the tool version, and the names of its outputs. So a changed byte in one weekly
file changes exactly that file's chain; a changed gtbin parameter changes gtbin's key and the
keys of steps reading its output, not gtselect's or gtmktime's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fermipipe.cache import HashIndex, step_key
from fermipipe.native import ENGINE_VERSION
from fermipipe.plan import FilePlan, Invocation


def tool_version(inv: Invocation, fermitools_version: str | None) -> str:
    """The version string that goes into ``inv``'s key."""
    if inv.engine == "native":
        return f"native-{ENGINE_VERSION}"
    if inv.engine == "fermitools":
        return f"fermitools-{fermitools_version or 'unknown'}"
    return "shell"


def chain_keys(
    fp: FilePlan,
    hashes: HashIndex,
    version_of: Callable[[Invocation], str],
) -> list[str]:
    """The key of every invocation of one file's chain, in chain order."""
    made_by: dict[Path, str] = {}  # output path → "<key>:<placeholder>"
    keys: list[str] = []
    for inv in fp.chain:
        upstream: dict[str, str] = {}
        contents: dict[str, str] = {}
        for name, path in inv.inputs.items():
            path = Path(path)
            if path in made_by:
                upstream[name] = made_by[path]
            else:
                contents[name] = hashes.hash(path)
        key = step_key(
            tool=inv.tool or inv.step,
            tool_version=version_of(inv),
            params={"digest": inv.params_digest},
            input_hashes=contents,
            upstream_keys=upstream,
            output_names={name: Path(p).name for name, p in inv.outputs.items()},
        )
        for name, path in inv.outputs.items():
            made_by[Path(path)] = f"{key}:{name}"
        keys.append(key)
    return keys

"""The command line of a Fermitools (or HEASoft ftools) run: one builder for the planner's
steps, the merges' pairwise tools and ftmerge."""

from __future__ import annotations

from collections.abc import Mapping


def fermitools_argv(tool: str, params: Mapping[str, str]) -> tuple[str, ...]:
    """argv for a Fermitools run: never prompt (mode=h), overwrite (clobber=yes unless set).

    A user's ``mode`` is replaced: a prompt would hang a pipeline (spec §11, HEASoft
    scripting practice).
    """
    words = [f"{k}={v}" for k, v in params.items() if k not in ("mode", "clobber")]
    return (tool, *words, "mode=h", f"clobber={params.get('clobber', 'yes')}")

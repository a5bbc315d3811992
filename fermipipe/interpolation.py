"""``${...}`` interpolation of a config, exactly as OmegaConf does it.

The existing runner's configs (``../shared/seed``) declare values once under ``vars:`` and use
``${vars.x}`` anywhere; ``${root:a/b}`` is the absolute path ``<run root>/a/b``. OmegaConf
resolves them here, once, at load time; what the pipeline validates afterwards is plain data.

Every value is resolved on its own so that all problems of a config are reported together:
an interpolation that cannot resolve, or a ``${`` still present after resolution (an escaped
``\\${``), is a one-line problem naming the key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["interpolate"]

# OmegaConf resolvers are process-global: one load at a time registers its own root.
_LOCK = threading.Lock()


def _root_resolver(root: Path) -> Any:
    def resolve(relative: str = "") -> str:
        return os.path.normpath(os.path.join(root, str(relative)))

    return resolve


def _key(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _walk(node: DictConfig | ListConfig, where: str, problems: list[str]) -> Any:
    items: Iterable[tuple[Any, Any]]
    if isinstance(node, DictConfig):
        items = ((k, k) for k in node)
        out: Any = {}
    else:
        items = enumerate(range(len(node)))
        out = []
    for key, index in items:
        path = _key(where, key)
        try:
            value = node[index]
        except OmegaConfBaseException as exc:
            value = _raw(node, index)  # kept as written, so the rest is still checked
            problems.append(f"{path}: cannot resolve {value!r}: {_first_line(exc)}")
        else:
            if isinstance(value, str) and "${" in value:
                problems.append(f"{path}: '${{' left after interpolation in {value!r}")
        if isinstance(value, DictConfig | ListConfig):
            value = _walk(value, path, problems)
        if isinstance(out, dict):
            out[key] = value
        else:
            out.append(value)
    return out


def _raw(node: DictConfig | ListConfig, index: Any) -> Any:
    try:
        return node._get_node(index)._value()  # the text as written, e.g. "${vars.x}"
    except Exception:  # noqa: BLE001 - only used to word an error message
        return "?"


def interpolate(
    data: Mapping[str, Any], root: Path, overrides: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Resolve every ``${...}`` in ``data`` (a parsed YAML mapping) with OmegaConf.

    ``root`` is what ``${root:...}`` is relative to; ``overrides`` are OmegaConf dot-list
    assignments (``input.directory=/data``) applied before resolution, so an interpolation
    sees the overridden value. Returns the plain resolved data and the problems found (one
    line each, ``<key>: <what is wrong>``).
    """
    problems: list[str] = []
    try:
        conf = OmegaConf.create(dict(data))
        extra = list(overrides)
        if extra:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(extra))
    except OmegaConfBaseException as exc:
        return dict(data), [_first_line(exc)]
    assert isinstance(conf, DictConfig)
    with _LOCK:
        OmegaConf.register_resolver("root", _root_resolver(root), replace=True)
        try:
            resolved = _walk(conf, "", problems)
        finally:
            OmegaConf.clear_resolver("root")
    return resolved, problems

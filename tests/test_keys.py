"""Per-step cache keys of real plans over the sample data."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from fermipipe.cache import HashIndex
from fermipipe.keys import chain_keys, tool_version
from fermipipe.plan import prepare

REPO = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path, **ccube_params: object) -> Path:
    data = tmp_path / "data" / "sample"
    shutil.copytree(REPO / "data" / "sample", data)
    cfg = yaml.safe_load((REPO / "configs" / "example.yaml").read_text())
    for step in cfg["steps"]:
        if step["name"] == "ccube":
            step["params"].update(ccube_params)
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "example.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _keys(config: Path, index: HashIndex) -> dict[tuple[str, str], str]:
    _cfg, _install, plan, _choices = prepare(config)
    out = {}
    for fp in plan.files:
        for inv, key in zip(
            fp.chain, chain_keys(fp, index, lambda i: tool_version(i, None)), strict=True
        ):
            out[(fp.file_id, inv.step)] = key
    return out


def test_keys_follow_content_and_parameters(tmp_path: Path) -> None:
    config = _project(tmp_path)
    index = HashIndex(tmp_path / "idx.sqlite")
    base = _keys(config, index)
    assert len(set(base.values())) == len(base) == 12  # 3 files × 4 steps, all distinct

    # Touch (mtime only): nothing changes.
    week = sorted((tmp_path / "data" / "sample").glob("lat_photon_*w701*"))[0]
    week.touch()
    assert _keys(config, index) == base

    # One byte of one weekly file: exactly that file's chain changes.
    raw = bytearray(week.read_bytes())
    raw[-10] ^= 1
    week.write_bytes(bytes(raw))
    changed = _keys(config, index)
    diff = {k for k in base if base[k] != changed[k]}
    assert {f for f, _ in diff} == {week.stem} and len(diff) == 4

    # A gtbin parameter: only ccube keys change, not select/mktime/ltcube.
    config2 = _project(tmp_path / "other", enumbins=10)
    moved = _keys(config2, index)
    base2 = _keys(_project(tmp_path / "again"), index)
    steps = {s for (_, s) in base2 if base2[(_, s)] != moved[(_, s)]}
    assert steps == {"ccube"}

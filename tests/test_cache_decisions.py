"""Cache decisions and the cleanup policy, in the core: no Prefect, no server.

A real plan of the example chain (tests/pipeline_project.py) over a sample week, its steps
run for real (native tools) through the one step runner, fermipipe.step_run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

import pytest

from fermipipe import runner
from fermipipe.caching import CacheSetup, open_cache, prefetch_hashes, stored_outputs
from fermipipe.cleanup import Joins, cleanup_policy
from fermipipe.config import PipelineConfig
from fermipipe.native import ENGINE_VERSION
from fermipipe.plan import Plan, prepare
from fermipipe.product_cache import product_cache
from fermipipe.runner import StepResult
from fermipipe.step_run import run_file_step
from tests.pipeline_project import make_project

LOG = logging.getLogger("test")


@pytest.fixture
def project(tmp_path: Path) -> tuple[PipelineConfig, Plan]:
    config = make_project(tmp_path, ("700",))
    cfg, _install, plan, _choices = prepare(config, root=tmp_path, workers=1)
    plan.workdir.mkdir(parents=True)
    return cfg, plan


def run_chain(plan: Plan, cache: CacheSetup, tmp_path: Path) -> list[StepResult]:
    """The file's steps, in order, through fermipipe.step_run (as both execution paths)."""
    ctx = runner.open_run("decisions", workers=1, scratch=tmp_path / "s", log_dir=tmp_path / "l")
    fp = plan.files[0]
    entries = cache.steps[fp.file_id] or []
    results: list[StepResult] = []
    try:
        for k, (inv, (sc, _must)) in enumerate(zip(fp.chain, entries, strict=True)):
            upstream = tuple(results[j] for j in fp.needs[k])
            results.append(
                run_file_step(
                    inv, upstream, run=ctx.name, order=0, step_index=k, logger=LOG, cache=sc
                )
            )
    finally:
        runner.close_run(ctx.name)
    return results


def must_run(cache: CacheSetup, plan: Plan) -> dict[str, bool]:
    fp = plan.files[0]
    entries = cache.steps[fp.file_id] or []
    return {inv.step: must for inv, (_sc, must) in zip(fp.chain, entries, strict=True)}


def test_decisions_follow_the_store(project: tuple[PipelineConfig, Plan], tmp_path: Path) -> None:
    cfg, plan = project
    stored = stored_outputs(cfg)
    steps = [inv.step for inv in plan.files[0].chain]
    assert steps == ["select", "mktime", "ccube", "ltcube"]
    first = open_cache(cfg, plan, None)
    assert first is not None
    # An empty store: the stored steps (merge inputs) must run, and so must the steps
    # making what they read.
    assert must_run(first, plan) == dict.fromkeys(steps, True)
    assert not first.fully_cached(plan.files[0].file_id)
    results = run_chain(plan, first, tmp_path)
    assert [r.status for r in results] == ["ok"] * 4
    assert [r.from_store for r in results] == [False] * 4
    assert {n for inv in plan.files[0].chain for n in inv.outputs} & stored == {
        "chunk_ccube",
        "chunk_ltcube",
    }

    # Everything stored: a new decision runs nothing, the file is one bulk hit.
    again = open_cache(cfg, plan, None)
    assert again is not None
    assert must_run(again, plan) == dict.fromkeys(steps, False)
    assert again.fully_cached(plan.files[0].file_id)
    assert [sc.key for sc, _ in again.steps[plan.files[0].file_id] or []] == [
        sc.key for sc, _ in first.steps[plan.files[0].file_id] or []
    ]

    # A damaged stored object (edited in place): its step must run again, and the
    # intermediates it reads must be made again; the other stored step stays a hit.
    ccube = Path(next(r.outputs["chunk_ccube"] for r in results if "chunk_ccube" in r.outputs))
    assert ccube.is_relative_to(cfg.cache_root)
    os.chmod(ccube, 0o644)
    with ccube.open("r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x01")
    damaged = open_cache(cfg, plan, None)
    assert damaged is not None
    assert must_run(damaged, plan) == {
        "select": True,
        "mktime": True,
        "ccube": True,
        "ltcube": False,
    }
    # The rerun through the step runner: ccube recomputed, ltcube from the store.
    rerun = run_chain(plan, damaged, tmp_path)
    assert [r.from_store for r in rerun] == [False, False, False, True]
    assert open_cache(cfg, plan, None).fully_cached(plan.files[0].file_id)  # type: ignore[union-attr]


def test_merges_record_the_engine_version_like_steps(
    project: tuple[PipelineConfig, Plan],
) -> None:
    cfg, plan = project
    cache = open_cache(cfg, plan, None)
    pc = product_cache(cfg, plan, cache)
    assert pc is not None
    assert pc.versions["merge:ccube"] == f"native-{ENGINE_VERSION}"
    assert pc.versions["ccube"] == f"native-{ENGINE_VERSION}"


def test_cleanup_policy(project: tuple[PipelineConfig, Plan]) -> None:
    cfg, plan = project
    fp = plan.files[0]
    out = {name: str(p) for inv in fp.chain for name, p in inv.outputs.items()}
    select, mktime = out["chunk_sel"], out["chunk_gti"]
    ccube, ltcube = out["chunk_ccube"], out["chunk_ltcube"]
    # Uncached: each intermediate goes once its readers are over: the select output with
    # mktime (its one reader), the mktime output when both ccube and ltcube are over (they
    # run side by side: a join); merge inputs stay for the merges (only in the work area).
    plain = cleanup_policy(plan, keep=False)
    assert plain.drops[fp.file_id] == ((), (select,), (), ())
    assert plain.joins[fp.file_id] == (((mktime,), frozenset({2, 3})),)
    assert plain.needed[fp.file_id] == {ccube, ltcube}
    # A node-local chain runs the steps in chain order: the join goes after ltcube.
    assert plain.in_order(fp.file_id) == ((), (select,), (), (mktime,))
    # Cached: merge inputs are in the store, so their work-area copies go at once.
    cached = cleanup_policy(plan, keep=False, stored=stored_outputs(cfg), cached_files=[fp.file_id])
    assert cached.drops[fp.file_id] == ((), (select,), (ccube,), (ltcube,))
    assert cached.in_order(fp.file_id) == ((), (select,), (ccube,), (ltcube, mktime))
    assert cached.needed[fp.file_id] == frozenset()
    # The flow's join: the mktime output goes when the second of ccube, ltcube is over,
    # whichever order they finish in.
    for first, second in ((2, 3), (3, 2)):
        joins = Joins(plain)
        assert joins.over(fp.file_id, 1) == ()
        assert joins.over(fp.file_id, first) == ()
        assert joins.over(fp.file_id, second) == (mktime,)
    # --keep-intermediate: nothing goes.
    kept = cleanup_policy(plan, keep=True)
    assert kept.after_step(fp.file_id, 1) == () and kept.in_order(fp.file_id) == ()
    assert Joins(kept).over(fp.file_id, 3) == ()
    # A RAM disk: a native first step reads the raw input where it is (once, front to back)…
    assert cleanup_policy(plan, keep=False, stage_inputs=True).stage == {}
    # …a Fermitools one gets it staged into the file's folder.
    tool = dataclasses.replace(fp.chain[0], engine="fermitools")
    fermitools = dataclasses.replace(
        plan, files=[dataclasses.replace(fp, chain=[tool, *fp.chain[1:]])]
    )
    staged = cleanup_policy(fermitools, keep=False, stage_inputs=True)
    assert staged.stage[fp.file_id] == (
        str(fp.input),
        str(plan.workdir / fp.file_id / "input" / fp.input.name),
    )


def test_inputs_are_hashed_in_the_background_before_the_cache_opens(
    project: tuple[PipelineConfig, Plan],
) -> None:
    """prefetch_hashes: every raw input's hash is in the store's index once it is waited
    for (open_cache then reads none of them); with --verify-cache nothing is prefetched."""
    cfg, plan = project
    db = cfg.cache_root / "store" / "hashes.sqlite"
    prefetch_hashes(cfg, plan, verify=True).wait()
    assert not db.exists() or indexed(db) == set()
    prefetch_hashes(cfg, plan).wait()
    inputs = {os.path.realpath(fp.input) for fp in plan.files}
    assert inputs and indexed(db) == inputs


def indexed(db: Path) -> set[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as con:
        return {row[0] for row in con.execute("SELECT path FROM blake3")}

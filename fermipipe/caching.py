"""Per-(file, step) cache decisions, made once from the plan before anything runs.

:func:`open_cache` computes every (file, step) key with :func:`fermipipe.keys.chain_keys`
(content hashes from a stat-keyed index, so a no-op rerun over 1000 files costs 1000 ``stat``
calls) and decides, per file, which steps *must* run:

* a **stored** step (its outputs are merge inputs or products the user keeps) must run when
  its store entry is missing or damaged;
* an **unstored** step (an intermediate, which lives only in this run's staging area) must
  run when a step that must run reads its output.

The flow layer turns "must run" into how it submits a task (Prefect's ``refresh_cache``:
Prefect would otherwise return an old result naming files that are gone); the step itself
checks the store again under the key's lock (:func:`run_cached`), because another run of
the same config may have made the entry meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fermipipe.cache import HashIndex, ProductStore, StoreObjectDamagedError
from fermipipe.config import PipelineConfig
from fermipipe.fermitools import FermitoolsInstall
from fermipipe.keys import chain_keys, tool_version
from fermipipe.plan import FilePlan, Invocation, Plan
from fermipipe.runner import StepResult


@dataclass(frozen=True)
class StepCache:
    """What one (file, step) needs to use the cache. Small and picklable (a task parameter)."""

    key: str  # the step's cache key (fermipipe.keys.chain_keys)
    store: str  # root of the ProductStore
    stored: bool  # this step's outputs are kept in the store (merge inputs, products)
    #: Inputs made by earlier *stored* steps: (planned path, their key, stored file name).
    #: When the path is missing (the earlier step was a cache hit) it is materialised from
    #: the store before the tool runs.
    upstream: tuple[tuple[str, str, str], ...] = ()
    workdir: str = ""  # outputs planned outside it are products the user sees
    #: False for an intermediate whose every consumer is a cache hit: if Prefect has no
    #: record of it (its result storage was deleted), the step returns without running.
    needed: bool = True


_STORES: dict[str, ProductStore] = {}
_STORES_LOCK = threading.Lock()


def get_store(root: str | Path) -> ProductStore:
    """One ProductStore (and SQLite hash index) per store root and process."""
    with _STORES_LOCK:
        store = _STORES.get(str(root))
        if store is None:
            store = _STORES[str(root)] = ProductStore(Path(root))
        return store


@dataclass
class CacheSetup:
    root: Path
    store: ProductStore
    hashes: HashIndex
    fermitools_version: str | None
    #: file_id → [(StepCache, must_run)] in chain order; None: the file is not cached.
    steps: dict[str, list[tuple[StepCache, bool]] | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Tools whose outputs are never reused (``resources.ltcube_cache.enabled: false`` for
    #: gtltcube): their keys carry this run's nonce, so they always run.
    no_reuse: frozenset[str] = frozenset()
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def result_storage(self) -> Path:
        """Prefect's result records (the cache belongs to the project, not $PREFECT_HOME)."""
        return self.root / "prefect-results"

    def fully_cached(self, file_id: str) -> bool:
        """Every stored product of the file is a valid hit and no step needs to run."""
        entries = self.steps.get(file_id)
        return entries is not None and all(
            not must and (sc.stored or not sc.needed) for sc, must in entries
        )

    def version_of(self, inv: Invocation) -> str:
        version = tool_version(inv, self.fermitools_version)
        return f"{version}+run-{self.nonce}" if inv.tool in self.no_reuse else version


def stored_outputs(cfg: PipelineConfig) -> set[str]:
    """Output placeholders kept in the store: merge inputs and outputs a step keeps. Every
    other per-file output is an intermediate of the run's work area."""
    merged = {m.output_name for m in cfg.merging}
    kept = {out for s in cfg.steps for out in s.keep_outputs}
    return merged | kept


class HashPrefetch:
    """Raw inputs hashed into the store's index in the background (:func:`prefetch_hashes`)."""

    def __init__(self, hashes: HashIndex | None, inputs: list[Path]) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[str]] = []
        if hashes is None or not inputs:
            return
        # hashlib releases the GIL: threads share the hashing of GBs of FT1.
        self._pool = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="fermipipe-hash"
        )
        self._futures = [self._pool.submit(hashes.hash, path) for path in inputs]

    def wait(self) -> None:
        """Until every hash is in the index (an unreadable input is open_cache's to report)."""
        for future in self._futures:
            with contextlib.suppress(OSError):
                future.result()
        self.cancel()

    def cancel(self) -> None:
        """Drop the hashes not started (a stopped run must not hash on for minutes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def prefetch_hashes(cfg: PipelineConfig, plan: Plan, verify: bool = False) -> HashPrefetch:
    """Start hashing every file's raw input now, so that a first run's hashing (GBs of FT1)
    overlaps the rest of the run's set-up — the
    spacecraft slices, the native workers' start — rather than following it;
    :func:`open_cache` then finds the hashes in the index. Nothing starts with the cache off
    or with ``verify`` (open_cache reads every file again then)."""
    if not cfg.cache.enabled or verify:
        return HashPrefetch(None, [])
    hashes = get_store(cfg.cache_root / "store").hashes
    return HashPrefetch(hashes, [Path(fp.input) for fp in plan.files])


def open_cache(
    cfg: PipelineConfig,
    plan: Plan,
    install: FermitoolsInstall | None,
    verify: bool = False,
) -> CacheSetup | None:
    """Keys and decisions for every file (None when ``cache.enabled`` is false).

    Temporaries that killed writers left in the store are removed first. ``verify``
    (``--verify-cache``): every stored file is re-hashed now, damaged entries are removed
    (and so recomputed), and every lookup of this run re-hashes what it returns."""
    if not cfg.cache.enabled:
        return None
    root = cfg.cache_root
    store = get_store(root / "store")
    store.remove_dead_temporaries()
    if verify:
        store.verify = True
        store.verify_all()
    setup = CacheSetup(root, store, store.hashes, install.version if install else None)
    if not cfg.resources.ltcube_cache.enabled:
        setup.no_reuse = frozenset({"gtltcube"})
    kept = stored_outputs(cfg)

    def keys_of(fp: FilePlan) -> list[str] | OSError:
        try:
            return chain_keys(fp, setup.hashes, setup.version_of)
        except OSError as exc:  # e.g. --steps leaves out the step making an input
            return exc

    # A first run hashes every input (GBs): hashlib releases the GIL, so threads share it.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        all_keys = list(pool.map(keys_of, plan.files))
    for fp, keys in zip(plan.files, all_keys, strict=True):
        if isinstance(keys, OSError):
            setup.steps[fp.file_id] = None
            setup.problems.append(f"{fp.file_id}: not cached ({keys})")
            continue
        setup.steps[fp.file_id] = decide(fp, keys, kept, setup.store, plan.workdir)
    return setup


def decide(
    fp: FilePlan, keys: list[str], kept: set[str], store: ProductStore, workdir: Path
) -> list[tuple[StepCache, bool]]:
    """Per step of one file: its StepCache and whether it must run (see module docstring)."""
    chain = fp.chain
    stored = [any(name in kept for name in inv.outputs) for inv in chain]
    made_by = {Path(path): k for k, inv in enumerate(chain) for path in inv.outputs.values()}
    must = [False] * len(chain)
    for k in reversed(range(len(chain))):
        inv = chain[k]
        if stored[k]:
            must[k] = result_from_store(inv, store, keys[k]) is None
        else:
            outs = {Path(p) for p in inv.outputs.values()}
            must[k] = any(
                must[j] and outs & {Path(p) for p in chain[j].inputs.values()}
                for j in range(k + 1, len(chain))
            )
    out: list[tuple[StepCache, bool]] = []
    for k, inv in enumerate(chain):
        upstream = tuple(
            (str(path), keys[made_by[Path(path)]], Path(path).name)
            for path in inv.inputs.values()
            if Path(path) in made_by and stored[made_by[Path(path)]]
        )
        sc = StepCache(
            key=keys[k],
            store=str(store.root),
            stored=stored[k],
            upstream=upstream,
            workdir=str(workdir),
            # A step with no stored step after it feeds nothing kept: run it when Prefect has
            # no record of it (its effects may be outside its declared outputs).
            needed=must[k] or stored[k] or not any(stored[k + 1 :]),
        )
        out.append((sc, must[k]))
    return out


# ------------------------------------------------------------------ the store, per step


def stored_name(inv: Invocation, output: str) -> str:
    """The file name a step output is stored under (its planned name)."""
    return Path(inv.outputs[output]).name


def result_from_store(inv: Invocation, store: ProductStore, key: str) -> StepResult | None:
    """The StepResult of a valid store entry (no tool runs), or None when absent/damaged."""
    files = store.lookup(key)
    if files is None:
        return None
    meta = store.meta(key)
    status = meta.get("status", "ok")
    outputs: dict[str, str] = {}
    if status == "ok":
        for name in inv.outputs:
            path = files.get(stored_name(inv, name))
            if path is None:
                return None  # an entry from an older layout: recompute
            outputs[name] = str(path)
    return StepResult(
        inv.step,
        inv.file_id,
        status,
        inv.render(),
        error=meta.get("error"),
        outputs=outputs,
        from_store=True,
        warnings=list(meta.get("warnings") or []),
        upstream_warnings=list(meta.get("upstream_warnings") or []),
    )


def cached_result(inv: Invocation, cache: StepCache) -> StepResult:
    """A step known to be settled without running: its store entry, or (an intermediate
    nobody needs) an ``ok`` result saying no tool ran."""
    hit = result_from_store(inv, get_store(cache.store), cache.key) if cache.stored else None
    return hit or StepResult(inv.step, inv.file_id, "ok", inv.render(), from_store=True)


def remember_skipped(inv: Invocation, cache: StepCache, skipped: StepResult) -> None:
    """A stored step skipped after an empty earlier step is remembered as such, so a rerun
    finds the file settled (failures are never stored)."""
    meta = {
        "status": "skipped",
        "error": skipped.error,
        "step": inv.step,
        "upstream_warnings": skipped.upstream_warnings,
    }
    get_store(cache.store).put(cache.key, {}, meta=meta)


def _place_products(inv: Invocation, result: StepResult, store: ProductStore, workdir: str) -> None:
    """Put stored outputs planned outside the work folder (user products) back if missing."""
    for name, planned in inv.outputs.items():
        stored = result.outputs.get(name)
        if stored is None or (workdir and Path(planned).is_relative_to(workdir)):
            continue
        if not Path(planned).exists():
            store.materialise(Path(stored), Path(planned))


def materialise_inputs(cache: StepCache) -> None:
    """Bring each input made by a stored upstream step to its planned path if it is not
    there (the upstream step was a cache hit and did not run)."""
    store = get_store(cache.store)
    for path, key, name in cache.upstream:
        if Path(path).exists():
            continue
        files = store.lookup(key)
        if files is None or name not in files:
            raise RuntimeError(
                f"upstream product {name} (key {key[:12]}…) vanished from the cache store "
                f"{store.root}; rerun to recompute it"
            )
        store.materialise(files[name], Path(path))


def run_cached(
    inv: Invocation, cache: StepCache, execute: Callable[[], StepResult], logger: Any
) -> StepResult:
    """Under the key's lock: the store's entry if valid, else ``execute()`` and store it.
    The result then names the stored files."""
    store = get_store(cache.store)
    with store.lock(cache.key):  # one run computes an entry; the others wait, then reuse it
        hit = result_from_store(inv, store, cache.key)
        if hit is not None:
            try:
                _place_products(inv, hit, store, cache.workdir)
            except StoreObjectDamagedError as exc:  # edited in place: recomputed, not trusted
                logger.warning("%s: %s; recomputing", inv.step, exc)
                hit = None
        if hit is not None:
            logger.info("%s: taken from the cache store (no tool run)", hit.describe())
            for warning in [*hit.upstream_warnings, *hit.warnings]:
                logger.warning("%s[%s] data warning: %s", hit.step, hit.file_id, warning)
            return hit
        store.forget(cache.key)  # a damaged entry is replaced, never trusted
        materialise_inputs(cache)
        result = execute()
        files = {stored_name(inv, n): Path(p) for n, p in result.outputs.items()}
        if result.status == "empty":  # remembered as empty: nothing to merge from it
            files, result.outputs = {}, {}
        stored = store.put(
            cache.key,
            files,
            link=True,
            meta={
                "status": result.status,
                "error": result.error,
                "step": inv.step,
                "warnings": result.warnings,  # a cache hit reports them again
                "upstream_warnings": result.upstream_warnings,
            },
        )
        result.outputs = {n: str(stored[stored_name(inv, n)]) for n in result.outputs}
    return result

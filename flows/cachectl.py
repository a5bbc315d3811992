"""The flow's side of content-addressed caching: keys, per-(file, step) decisions, options.

At flow start, :func:`open_cache` computes every (file, step) key with
:func:`fermipipe.keys.chain_keys` (content hashes from a stat-keyed index, so a no-op rerun
over 1000 files costs 1000 ``stat`` calls) and decides, per file, which steps *must* run:

* a **stored** step (its outputs are merge inputs or products the user keeps) must run when
  its store entry is missing or damaged — it is then submitted with ``refresh_cache=True``,
  because Prefect would otherwise return its old result naming files that are gone;
* an **unstored** step (``cleanup`` intermediates, which live only in this run's staging
  area) must run when a step that must run reads its output.

Everything else is submitted normally and comes back Cached. Prefect's result records go to
``<cache>/prefect-results`` (not ``$PREFECT_HOME/storage``): the cache belongs to the project.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect.cache_policies import NO_CACHE

from fermipipe.cache import HashIndex, ProductStore, step_key
from fermipipe.config import PipelineConfig
from fermipipe.errors import ToolError
from fermipipe.fermitools import FermitoolsInstall
from fermipipe.keys import chain_keys, tool_version
from fermipipe.manifest import Manifest, ManifestInput, plan_incremental, read_manifest
from fermipipe.plan import FilePlan, Invocation, MergePlan, Plan, relocate
from fermipipe.runner import StepResult
from fermipipe.slices import (
    MARGIN,
    TimeRange,
    event_time_range,
    slice_name,
    spacecraft_time_range,
    wants_slice,
    write_slice,
)
from fermipipe.summary import FileSummary
from tasks.steps import BULK_INPUTS, StepCache, cached_chains, get_store, result_from_store


@dataclass
class CacheSetup:
    root: Path
    store: ProductStore
    hashes: HashIndex
    fermitools_version: str | None
    #: file_id → [(StepCache, must_run)] in chain order; None: the file is not cached.
    steps: dict[str, list[tuple[StepCache, bool]] | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stage_inputs: bool = False  # copy each input to the (RAM-disk) work folder before use
    #: Tools whose outputs are never reused (``resources.ltcube_cache.enabled: false`` for
    #: gtltcube): their keys carry this run's nonce, so they always run.
    no_reuse: frozenset[str] = frozenset()
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def result_storage(self) -> Path:
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


def open_cache(
    cfg: PipelineConfig,
    plan: Plan,
    install: FermitoolsInstall | None,
    keep: bool = False,
    stage_inputs: bool = False,
    verify: bool = False,
) -> CacheSetup | None:
    """Keys and decisions for every file (None when ``cache.enabled`` is false).

    Temporaries that killed writers left in the store are removed first. ``verify``
    (``--verify-cache``): every stored file is re-hashed now, damaged entries are removed
    (and so recomputed), and every lookup of this run re-hashes what it returns."""
    if not cfg.cache.enabled:
        return None
    root = cfg.cache_root
    store = get_store(str(root / "store"))
    store.remove_dead_temporaries()
    if verify:
        store.verify = True
        store.verify_all()
    setup = CacheSetup(root, store, store.hashes, install.version if install else None)
    setup.stage_inputs = stage_inputs
    if not cfg.resources.ltcube_cache.enabled:
        setup.no_reuse = frozenset({"gtltcube"})
    kept = stored_outputs(cfg)
    for fp in plan.files:
        try:
            keys = chain_keys(fp, setup.hashes, setup.version_of)
        except OSError as exc:  # e.g. --steps leaves out the step making an input
            setup.steps[fp.file_id] = None
            setup.problems.append(f"{fp.file_id}: not cached ({exc})")
            continue
        setup.steps[fp.file_id] = decide(fp, keys, kept, setup, plan.workdir, keep)
    return setup


def decide(
    fp: FilePlan,
    keys: list[str],
    kept: set[str],
    setup: CacheSetup,
    workdir: Path,
    keep: bool = False,
) -> list[tuple[StepCache, bool]]:
    """Per step of one file: its StepCache and whether it must run (see module docstring)."""
    chain = fp.chain
    stored = [any(name in kept for name in inv.outputs) for inv in chain]
    made_by: dict[Path, int] = {}
    for k, inv in enumerate(chain):
        for path in inv.outputs.values():
            made_by[Path(path)] = k
    must = [False] * len(chain)
    for k in reversed(range(len(chain))):
        inv = chain[k]
        if stored[k]:
            hit = result_from_store(inv, setup.store, keys[k])
            must[k] = hit is None
        else:
            outs = {Path(p) for p in inv.outputs.values()}
            must[k] = any(
                must[j] and outs & {Path(p) for p in chain[j].inputs.values()}
                for j in range(k + 1, len(chain))
            )
    # Work-folder files are dropped by the last step that reads them (or at once when none
    # does): stored ones are in the store by then, the others are done with.
    drop_at: dict[int, list[str]] = {}
    if not keep:
        for path, k in made_by.items():
            if not path.is_relative_to(workdir):
                continue
            readers = [
                j for j in range(k + 1, len(chain)) if path in map(Path, chain[j].inputs.values())
            ]
            drop_at.setdefault(max(readers, default=k), []).append(str(path))
    # On the RAM disk, the raw input is staged just before the first step runs.
    stage = None
    if setup.stage_inputs and chain and Path(fp.input) in map(Path, chain[0].inputs.values()):
        stage = (str(fp.input), str(workdir / fp.file_id / "input" / Path(fp.input).name))
    out: list[tuple[StepCache, bool]] = []
    for k, inv in enumerate(chain):
        upstream = tuple(
            (str(path), keys[made_by[Path(path)]], Path(path).name)
            for path in inv.inputs.values()
            if Path(path) in made_by and stored[made_by[Path(path)]]
        )
        sc = StepCache(
            key=keys[k],
            store=str(setup.store.root),
            stored=stored[k],
            upstream=upstream,
            workdir=str(workdir),
            # A step with no stored step after it feeds nothing kept: run it when Prefect has
            # no record of it (its effects may be outside its declared outputs).
            needed=must[k] or stored[k] or not any(stored[k + 1 :]),
            drop=tuple(drop_at.get(k, ())),
            stage=stage if k == 0 else None,
        )
        out.append((sc, must[k]))
    return out


def merge_config_hash(merge: MergePlan, version: str) -> str:
    """What a merged product depends on besides its inputs' keys: how it is merged."""
    text = json.dumps(
        {
            "name": merge.name,
            "strategy": merge.strategy,
            "tool": merge.tool,
            "engine": merge.engine,
            "output": merge.output_name,
            "version": version,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------ submitting steps


def map_level(
    pool: Any,
    task: Any,
    files: Sequence[FilePlan],
    k: int,
    previous: list[Any],
    run: Any,
    cache: CacheSetup | None,
) -> list[Any]:
    """Submit step ``k`` of every file; returns the futures in file order.

    Files are grouped by how their step must be submitted — cached (Prefect returns the
    stored result if its key is known), ``refresh_cache`` (must run: product missing or
    damaged, or an intermediate a running step needs) or uncached — one ``map`` per group.
    """
    groups: dict[str, list[int]] = {}
    entries: dict[int, StepCache | None] = {}
    for i, fp in enumerate(files):
        steps = cache.steps.get(fp.file_id) if cache is not None else None
        if steps is None:
            groups.setdefault("uncached", []).append(i)
            entries[i] = None
            continue
        sc, must = steps[k]
        entries[i] = sc
        groups.setdefault("refresh" if must else "cached", []).append(i)
    out: list[Any] = [None] * len(files)
    for kind, idx in groups.items():
        if kind == "uncached":
            variant = task.with_options(cache_policy=NO_CACHE, persist_result=False)
        else:
            assert cache is not None
            variant = task.with_options(
                result_storage=cache.result_storage, refresh_cache=kind == "refresh"
            )
        for i in idx:
            # Named by step and file from the start: Prefect renames a task run (its
            # task_run_name) only once it starts, so a step that never ran (NotReady, after
            # its file's previous step failed) would keep the generic "run-step-08b".
            # A shallow copy with two attributes changed: with_options costs ~1 ms a call
            # (4 s over 1000 files × 4 steps), a copy microseconds; the task key (from the
            # function) and the cache policy are shared, so caching is unchanged.
            named = copy.copy(variant)
            named.name = named.task_run_name = task_label(files[i], k)
            out[i] = pool.submit(
                named,
                {
                    "invocation": files[i].chain[k],
                    "previous": previous[i],
                    "run": run,
                    "order": i,
                    "step_index": k,
                    "cache": entries[i],
                },
            )
    return out


def task_label(fp: FilePlan, k: int) -> str:
    """``select · w712``: the step and the file (its week when the name has one)."""
    return f"{fp.chain[k].step} · {'w' + fp.week if fp.week else fp.file_id}"


# ------------------------------------------------------------------------ products


@dataclass(frozen=True)
class FileFacts:
    """What a merged product's manifest records of one weekly input."""

    source: str
    sha256: str
    tstart: float | None
    tstop: float | None
    keys: dict[str, str]  # output placeholder → cache key of the step that makes it
    week: str | None = None


@dataclass(frozen=True)
class ProductCache:
    """Caching of merges and post-processing (picklable: a subflow parameter)."""

    store: str
    result_storage: str
    files: dict[str, FileFacts]
    versions: dict[str, str]  # step → tool version
    merge_hashes: dict[str, str]  # merge name → config hash
    science_models: dict[str, Any] = field(default_factory=dict)  # carried into manifests


def product_cache(cfg: PipelineConfig, plan: Plan, cache: CacheSetup | None) -> ProductCache | None:
    """Facts for the manifests and merge decisions (None when caching is off)."""
    if cache is None:
        return None
    facts: dict[str, FileFacts] = {}
    versions: dict[str, str] = {}
    for fp in plan.files:
        entries = cache.steps.get(fp.file_id)
        if entries is None:
            continue
        keys: dict[str, str] = {}
        for inv, (sc, _must) in zip(fp.chain, entries, strict=True):
            versions[inv.step] = cache.version_of(inv)
            for name in inv.outputs:
                keys[name] = sc.key
        try:
            span = event_time_range(Path(fp.input))
            t0, t1 = span.start, span.stop
        except ToolError:
            t0 = t1 = None
        facts[fp.file_id] = FileFacts(
            Path(fp.input).name, cache.hashes.hash(Path(fp.input)), t0, t1, keys, fp.week
        )
    hashes = {}
    for merge in plan.merges:
        version = "native" if merge.engine == "native" else f"fermitools-{cache.fermitools_version}"
        hashes[merge.name] = merge_config_hash(merge, version)
        versions[f"merge:{merge.name}"] = version
    versions["fermitools"] = cache.fermitools_version or "unknown"
    return ProductCache(
        str(cache.store.root),
        str(cache.result_storage),
        facts,
        versions,
        hashes,
        dict(cfg.science_models),
    )


#: Merge strategies whose product is a sum of its inputs, so previous + new = all.
ADDITIVE = {"image_sum": True, "hierarchical": True, "ftmerge": False}


@dataclass(frozen=True)
class MergeDecision:
    mode: str  # up_to_date, incremental or full
    manifest: Manifest  # of the product this merge leaves
    add: tuple[str, ...]  # file ids to add to the previous product (incremental)
    reason: str


def merge_decision(
    merge: MergePlan,
    sources: Sequence[tuple[str, Path]],
    left_out: dict[str, str],
    pc: ProductCache,
    hashes: HashIndex,
) -> MergeDecision | None:
    """Up to date, incremental (previous product + new weeks) or full; None: unknown inputs.

    Incremental only for sums (image_sum; gtltsum trees) whose previous product provably
    covers exactly old inputs: its sidecar manifest lists them by key, it was made by the
    same merge configuration, left nothing out, and the file on disk still has the sha256
    the manifest recorded.
    """
    current: list[ManifestInput] = []
    for file_id, _path in sources:
        facts = pc.files.get(file_id)
        if facts is None or merge.output_name not in facts.keys:
            return None
        current.append(
            ManifestInput(
                file_id,
                facts.source,
                facts.sha256,
                facts.keys[merge.output_name],
                facts.tstart,
                facts.tstop,
                facts.week,
            )
        )
    manifest = Manifest(
        product=str(merge.output),
        strategy=merge.strategy + (f":{merge.tool}" if merge.tool else ""),
        config_hash=pc.merge_hashes[merge.name],
        tool_versions=dict(pc.versions),
        inputs=current,
        left_out=dict(left_out),
        science_models=dict(pc.science_models),
    )
    previous = read_manifest(merge.output)
    if previous is not None:
        try:
            intact = previous.product_sha256 == hashes.hash(merge.output)
        except OSError:
            intact = False
        if not intact:
            previous = None
    additive = ADDITIVE.get(merge.strategy, False) and not left_out
    decision = plan_incremental(
        previous,
        current,
        strategy=manifest.strategy,
        config_hash=manifest.config_hash,
        additive=additive,
    )
    mode = decision.mode
    if mode == "up_to_date" and previous is not None and previous.left_out != manifest.left_out:
        mode = "full"
    by_key = {item.key: item.file_id for item in current}
    add = tuple(by_key[item.key] for item in decision.add) if mode == "incremental" else ()
    return MergeDecision(mode, manifest, add, decision.reason)


def post_cache(inv: Invocation, pc: ProductCache) -> tuple[StepCache | None, bool]:
    """The StepCache of a post-processing step and whether its store entry is valid.

    On a hit, its outputs are put back where the plan wants them if they are missing or
    differ (Prefect then returns the Cached result without running anything).
    """
    store = get_store(pc.store)
    try:
        key = step_key(
            tool=inv.tool or inv.step,
            tool_version=tool_version(inv, pc.versions.get("fermitools")),
            params={"digest": inv.params_digest},
            input_hashes={name: store.hashes.hash(Path(p)) for name, p in inv.inputs.items()},
            output_names={name: Path(p).name for name, p in inv.outputs.items()},
        )
    except OSError:
        return None, False
    hit = result_from_store(inv, store, key)
    if hit is not None:
        for name, planned in inv.outputs.items():
            stored = Path(hit.outputs[name])
            if not _same(stored, Path(planned), store):
                store.materialise(stored, Path(planned))
    return StepCache(key=key, store=pc.store, stored=True), hit is not None


def _same(a: Path, b: Path, store: ProductStore) -> bool:
    try:
        return store.hashes.hash(a) == store.hashes.hash(b)
    except OSError:
        return False


def cached_summaries(plan: Plan, cache: CacheSetup | None) -> dict[str, FileSummary]:
    """Summaries of the files whose whole chain is a cache hit, from one bulk task run
    (:func:`tasks.steps.cached_chains`); the flow submits only the other files' steps."""
    if cache is None:
        return {}
    hits = [fp for fp in plan.files if cache.fully_cached(fp.file_id)]
    if not hits:
        return {}
    chains = []
    for fp in hits:
        entries = cache.steps[fp.file_id] or []
        chains.append((fp.chain, tuple(sc for sc, _must in entries)))
    digest = hashlib.sha256("".join(sc.key for _c, scs in chains for sc in scs).encode())
    handle = uuid.uuid4().hex
    BULK_INPUTS[handle] = chains
    try:
        task = cached_chains.with_options(result_storage=cache.result_storage)
        state = task(digest.hexdigest(), len(hits), handle, return_state=True)
        results: list[list[StepResult]] = state.result()
    finally:
        BULK_INPUTS.pop(handle, None)
    out: dict[str, FileSummary] = {}
    for fp, steps in zip(hits, results, strict=True):
        summary = FileSummary(fp.file_id, str(fp.input), "ok")
        for result in steps:
            if result.status == "skipped":
                # A stored step is remembered as skipped only after an empty earlier step
                # (failures are never stored): the file is empty, as when it first ran.
                summary.upstream_warnings += result.upstream_warnings
                if summary.status == "ok":
                    summary.status, summary.error = "empty", result.error
                continue
            summary.steps.append(result)
            summary.cached_steps.append(result.step)
            if result.status == "empty" and summary.status == "ok":
                summary.status, summary.error = "empty", f"{result.step}: {result.error}"
        out[fp.file_id] = summary
    return out


# ------------------------------------------------------------------ spacecraft slices


def apply_slices(plan: Plan, store: ProductStore | None, logger: Any) -> Plan:
    """Give each file's steps a slice of a mission-long spacecraft file (``scfile``).

    When a step's ``scfile`` (a common file, not made by an earlier step) spans much more
    than the file's events (:func:`fermipipe.slices.wants_slice`), the rows of the events'
    time range ± :data:`~fermipipe.slices.MARGIN` are written once to the cache store (keyed
    by the FT2's content and the range) and the step reads the slice. A slice's bytes depend
    only on its rows, so the weekly cache keys survive next week's rows being appended to
    the mission file. Without a store (cache disabled), slices go to the work folder.
    """
    spans: dict[Path, TimeRange | None] = {}
    files: list[FilePlan] = []
    made = 0
    for fp in plan.files:
        produced = {Path(p) for inv in fp.chain for p in inv.outputs.values()}
        wanted = {
            Path(p)
            for inv in fp.chain
            for name, p in inv.inputs.items()
            if name == "scfile" and Path(p) not in produced
        }
        chain = list(fp.chain)
        for ft2 in sorted(wanted):
            if ft2 not in spans:
                try:
                    spans[ft2] = spacecraft_time_range(ft2)
                except ToolError:
                    spans[ft2] = None  # not readable here: the tool will say what is wrong
            try:
                events = event_time_range(Path(fp.input))
            except ToolError:
                continue
            span = spans[ft2]
            if span is None or not wants_slice(events, span):
                continue
            piece = make_slice(ft2, events, store, plan.workdir / fp.file_id)
            made += 1
            moved = [relocate(inv, ft2, piece) for inv in chain]
            if any(inv is None for inv in moved):
                continue
            chain = [inv for inv in moved if inv is not None]
        files.append(replace(fp, chain=tuple(chain)) if chain != list(fp.chain) else fp)
    if made:
        logger.info("spacecraft data: %d per-file slices of mission FT2 file(s)", made)
    return replace(plan, files=tuple(files))


def make_slice(ft2: Path, events: TimeRange, store: ProductStore | None, folder: Path) -> Path:
    """The slice of ``ft2`` for ``events``: from the store, or written once into it."""
    name = slice_name(ft2, events)
    if store is None:
        return write_slice(ft2, events, folder / name)
    key = step_key(
        tool="ft2-slice",
        tool_version=f"margin-{MARGIN}",
        params={"start": events.start, "stop": events.stop},
        input_hashes={"scfile": store.hashes.hash(ft2)},
        output_names={"slice": name},
    )
    with store.lock(key):
        files = store.lookup(key)
        if files is not None and name in files:
            return files[name]
        store.forget(key)
        tmp = store.entry_dir(key) / f".{name}.new"
        write_slice(ft2, events, tmp)
        return store.put(key, {name: tmp}, move=True, meta={"step": "ft2-slice"})[name]


def slice_store(cfg: PipelineConfig) -> ProductStore | None:
    """The store slices are kept in (None when the cache is disabled)."""
    return get_store(str(cfg.cache_root / "store")) if cfg.cache.enabled else None

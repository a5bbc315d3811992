"""Caching of merges and post-processing: manifests' facts, merge decisions, post keys.

A merged product carries a sidecar manifest naming the key of every weekly input; the next
run compares it with the current inputs and merges fully, incrementally (previous product
plus the new weeks, for sums) or not at all (:func:`merge_decision`). A post-processing step
is keyed by the content of what it reads (:func:`post_cache`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fermipipe.cache import HashIndex, ProductStore, step_key
from fermipipe.caching import CacheSetup, StepCache, get_store, result_from_store
from fermipipe.config import PipelineConfig
from fermipipe.errors import ToolError
from fermipipe.keys import tool_version
from fermipipe.manifest import Manifest, ManifestInput, plan_incremental, read_manifest
from fermipipe.native import ENGINE_VERSION
from fermipipe.plan import Invocation, MergePlan, Plan
from fermipipe.slices import event_time_range


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


@dataclass(frozen=True)
class FileFacts:
    """What a merged product's manifest records of one weekly input."""

    source: str
    blake3: str  # content hash of the raw input (fermipipe.cache.content_hash)
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
        # The same version strings as the steps' keys (fermipipe.keys.tool_version).
        version = (
            f"native-{ENGINE_VERSION}"
            if merge.engine == "native"
            else f"fermitools-{cache.fermitools_version or 'unknown'}"
        )
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


@dataclass(frozen=True)
class MergeDecision:
    mode: str  # up_to_date, incremental or full
    manifest: Manifest  # of the product this merge leaves
    add: tuple[str, ...]  # file ids to add to the previous product (incremental)
    reason: str
    #: Inputs of the previous product to take out of it (changed or gone weeks), with the
    #: keys that find their maps in the store.
    remove: tuple[ManifestInput, ...] = ()


def merge_decision(
    merge: MergePlan,
    sources: Sequence[tuple[str, Path]],
    left_out: dict[str, str],
    pc: ProductCache,
    hashes: HashIndex,
) -> MergeDecision | None:
    """Up to date, incremental or full; None: unknown inputs.

    Up to date when the previous product's sidecar manifest lists exactly the current inputs
    by key, with the same merge configuration and the same files left out, and the file on
    disk still has the content hash the manifest recorded. Incremental for an image_sum (counts
    are exact in any order): the previous product + the new weeks' maps − the maps of weeks
    that changed or went away. A gtltsum tree is never incremental here: its nodes are
    reused instead (:mod:`fermipipe.merge_tree`), so its product equals a full merge's.
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
                facts.blake3,
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
            intact = previous.product_blake3 == hashes.hash(merge.output)
        except OSError:
            intact = False
        if not intact:
            previous = None
    summed = merge.strategy == "image_sum"
    decision = plan_incremental(
        previous,
        current,
        strategy=manifest.strategy,
        config_hash=manifest.config_hash,
        additive=summed,
        replace=summed,
    )
    mode = decision.mode
    if mode == "up_to_date" and previous is not None and previous.left_out != manifest.left_out:
        mode = "full"
    by_key = {item.key: item.file_id for item in current}
    if mode != "incremental":
        return MergeDecision(mode, manifest, (), decision.reason)
    add = tuple(by_key[item.key] for item in decision.add)
    return MergeDecision(mode, manifest, add, decision.reason, decision.remove)


def stored_map(pc: ProductCache, item: ManifestInput, name: str | None) -> Path | None:
    """The per-file map a previous product's input ``item`` was made from, if the store
    still has it (``name``: its stored file name when known)."""
    files = get_store(pc.store).lookup(item.key)
    if not files:
        return None
    if name is not None and name in files:
        return files[name]
    return next(iter(files.values())) if len(files) == 1 else None


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

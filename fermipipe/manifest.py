"""Manifests: what went into a merged product.

Every merged product carries its manifest twice: as a JSON sidecar ``<product>.manifest.json``
(complete, for scripts and for incremental merges) and in its FITS header (a summary: counts,
config hash and one HISTORY line per input), so the provenance travels with the file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fermipipe import __version__
from fermipipe.cache import content_hash
from fermipipe.fits.keywords import ascii_text
from fermipipe.fits.writing import temporary_name


@dataclass(frozen=True)
class ManifestInput:
    """One per-file product that went into a merge."""

    file_id: str  # the weekly input it came from, e.g. lat_photon_weekly_w100_p305_v001
    source: str  # the raw input file name
    blake3: str  # content hash of the raw input file (fermipipe.cache.content_hash)
    key: str  # cache key of the per-file product (changes with any upstream change)
    tstart: float | None = None
    tstop: float | None = None
    week: str | None = None  # the NNN of an FSSC weekly file name (``_wNNN_``)


@dataclass
class Manifest:
    product: str
    strategy: str
    config_hash: str
    tool_versions: dict[str, str]
    inputs: list[ManifestInput]
    left_out: dict[str, str] = field(default_factory=dict)  # file_id → "failed: …"/"empty"
    fermipipe_version: str = __version__
    #: Content hash of the finished product (header included): proves the file on disk is
    #: the one this manifest describes before an incremental merge builds on it.
    product_blake3: str | None = None
    #: The config's ``science_models`` (references for a later likelihood stage).
    science_models: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["inputs"] = [ManifestInput(**item) for item in raw["inputs"]]
        return cls(**raw)

    def input_keys(self) -> set[str]:
        return {item.key for item in self.inputs}


def sidecar_path(product: Path) -> Path:
    return product.with_name(product.name + ".manifest.json")


def _previous_sidecar(product: Path) -> Path:
    """The sidecar being replaced, kept (hidden) while a new product is committed: the old
    product stays described until its own rename replaces it."""
    return product.with_name(f".{product.name}.manifest.json.prev")


def read_manifest(product: Path, *, check_product: bool = False) -> Manifest | None:
    """The manifest beside ``product``, or None when absent or unreadable.

    With ``check_product`` also None unless ``product`` exists with the content hash the
    manifest records (a sidecar of an earlier version, which recorded sha256, is unreadable
    here: the product is then merged in full): a sidecar left by a writer killed before its product's rename is stale, and
    the sidecar it replaced (kept as ``.<product>.manifest.json.prev``) describes the
    product still in place.
    """
    candidates = [sidecar_path(product)]
    if check_product:  # a writer killed between the new sidecar and its product's rename
        candidates.append(_previous_sidecar(product))
    digest: str | None = None
    for path in candidates:
        try:
            manifest = Manifest.from_json(path.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if not check_product:
            return manifest
        if digest is None:
            try:
                digest = content_hash(product)
            except OSError:
                return None
        if digest == manifest.product_blake3:
            return manifest
    return None


def write_manifest(product: Path, manifest: Manifest) -> Path:
    """Write the JSON sidecar atomically (temporary name with the writer's PID, renamed)."""
    path = sidecar_path(product)
    tmp = temporary_name(path)
    try:
        tmp.write_text(manifest.to_json())
        if path.exists():  # the old sidecar stays readable (as .prev) for the old product
            prev = temporary_name(_previous_sidecar(product))
            with contextlib.suppress(OSError):  # no hard links there: as before, no .prev
                os.link(path, prev)
                os.replace(prev, _previous_sidecar(product))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def header_cards(manifest: Manifest) -> list[tuple[str, object, str]]:
    """Header cards summarising the manifest (keyword, value, comment); HISTORY as value."""
    cards: list[tuple[str, object, str]] = [
        ("FPVERS", manifest.fermipipe_version, "fermipipe version that made this product"),
        ("FPSTRAT", manifest.strategy, "merge strategy"),
        ("FPCONFIG", manifest.config_hash[:16], "hash of the pipeline config (prefix)"),
        ("FPNINPUT", len(manifest.inputs), "number of merged inputs"),
        ("FPNLEFT", len(manifest.left_out), "inputs left out (failed or empty)"),
        ("FPMANIF", sidecar_path(Path(manifest.product)).name, "JSON manifest sidecar"),
    ]
    for item in manifest.inputs:
        # One 72-character HISTORY card per input: the source name and a hash prefix.
        text = f"fermipipe input {item.blake3[:12]} {ascii_text(item.source)}"
        cards.append(("HISTORY", text[:72], ""))
    for file_id, why in manifest.left_out.items():
        left = ascii_text(f"fermipipe left out {file_id}: {why}")
        cards.append(("HISTORY", left[:400], ""))
    return cards


@dataclass(frozen=True)
class IncrementalPlan:
    """How to bring a merged product up to date.

    ``incremental``: previous product + the maps of ``add`` − the maps of ``remove`` (the
    previous manifest's entries, whose ``key`` finds the old maps in the store); ``remove``
    is empty unless :func:`plan_incremental` was asked to plan replacements.
    """

    mode: str  # "up_to_date", "incremental" or "full"
    add: tuple[ManifestInput, ...]
    reason: str
    remove: tuple[ManifestInput, ...] = ()


def plan_incremental(
    previous: Manifest | None,
    current: Sequence[ManifestInput],
    *,
    strategy: str,
    config_hash: str,
    additive: bool,
    replace: bool = False,
) -> IncrementalPlan:
    """Decide whether a merged product can be updated by adding only the new inputs.

    Allowed only for sums (``additive``) when the previous product provably covers exactly a
    subset of the current inputs: every input it lists is still current (same cache key), it
    was made by the same strategy and config, and it left nothing out.

    With ``replace`` (the caller can still read the old per-file maps, e.g. compact maps in
    the product store) a sum is also updated when inputs changed or went away: the previous
    inputs whose key is no longer current (a changed file_id has a new key; a removed one is
    gone) are planned as ``remove`` and the current inputs not in the product as ``add``,
    for ``image_sum([previous, *add], subtract=remove)``. Still ``full`` when no previous
    input is kept, or when a removed input held the product's first start (last stop) and no
    added one starts (stops) as early (late): the merged time span would be unknown
    (:func:`fermipipe.merge.image_sum` refuses that subtraction).
    """
    if previous is None:
        return IncrementalPlan("full", tuple(current), "no previous manifest")
    if previous.strategy != strategy or previous.config_hash != config_hash:
        return IncrementalPlan("full", tuple(current), "config or strategy changed")
    current_keys = {item.key for item in current}
    old_keys = previous.input_keys()
    if old_keys == current_keys and not previous.left_out:
        return IncrementalPlan("up_to_date", (), "inputs unchanged")
    if not additive:
        return IncrementalPlan("full", tuple(current), "strategy is not a sum")
    if previous.left_out:
        return IncrementalPlan("full", tuple(current), "previous product left inputs out")
    new = tuple(item for item in current if item.key not in old_keys)
    if old_keys <= current_keys:
        return IncrementalPlan("incremental", new, f"adding {len(new)} new input(s)")
    if not replace:
        return IncrementalPlan("full", tuple(current), "an input changed or disappeared")
    gone = tuple(item for item in previous.inputs if item.key not in current_keys)
    if len(gone) == len(previous.inputs):
        return IncrementalPlan("full", tuple(current), "no input of the previous product kept")
    if _span_lost(previous.inputs, gone, new):
        return IncrementalPlan(
            "full", tuple(current), "the first or last input changed: the span is unknown"
        )
    now_ids = {item.file_id for item in current}
    changed = sum(1 for item in gone if item.file_id in now_ids)
    return IncrementalPlan(
        "incremental",
        new,
        f"replacing {changed} changed input(s), removing {len(gone) - changed}, "
        f"adding {len(new) - changed} new",
        remove=gone,
    )


def _span_lost(
    inputs: Sequence[ManifestInput],
    gone: Sequence[ManifestInput],
    new: Sequence[ManifestInput],
) -> bool:
    """True when a removed input held the product's first start (or last stop) and no added
    input starts (stops) at or before (after) it — the rule image_sum applies."""
    starts = [i.tstart for i in inputs if i.tstart is not None]
    stops = [i.tstop for i in inputs if i.tstop is not None]
    for item in gone:
        if (
            item.tstart is not None
            and item.tstart <= min(starts)
            and not any(n.tstart is not None and n.tstart <= item.tstart for n in new)
        ):
            return True
        if (
            item.tstop is not None
            and item.tstop >= max(stops)
            and not any(n.tstop is not None and n.tstop >= item.tstop for n in new)
        ):
            return True
    return False


def merged_manifest(
    previous: Manifest, added: Iterable[ManifestInput], removed: Iterable[ManifestInput] = ()
) -> Manifest:
    """The manifest of ``previous`` + ``added`` − ``removed`` (inputs kept in time order)."""
    gone = {item.key for item in removed}
    kept = [item for item in previous.inputs if item.key not in gone]
    inputs = sorted([*kept, *added], key=lambda i: i.tstart if i.tstart is not None else 0.0)
    return Manifest(
        product=previous.product,
        strategy=previous.strategy,
        config_hash=previous.config_hash,
        tool_versions=dict(previous.tool_versions),
        inputs=inputs,
        left_out={},
    )

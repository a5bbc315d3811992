"""Merged-product manifests and the incremental-merge decision."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fermipipe.cache import content_hash
from fermipipe.manifest import (
    IncrementalPlan,
    Manifest,
    ManifestInput,
    header_cards,
    merged_manifest,
    plan_incremental,
    read_manifest,
    sidecar_path,
    write_manifest,
)


def _inputs(n: int) -> list[ManifestInput]:
    return [
        ManifestInput(
            f"w{i:03d}",
            f"lat_photon_weekly_w{i:03d}.fits",
            f"h{i}" * 8,
            f"k{i}",
            i * 1e3,
            i * 1e3 + 999,
        )
        for i in range(n)
    ]


def _manifest(inputs: list[ManifestInput], **kw: object) -> Manifest:
    base = dict(
        product="merged.fits",
        strategy="image_sum",
        config_hash="c" * 64,
        tool_versions={"gtbin": "native-1"},
        inputs=inputs,
    )
    base.update(kw)
    return Manifest(**base)  # type: ignore[arg-type]


def test_roundtrip_sidecar(tmp_path: Path) -> None:
    product = tmp_path / "merged.fits"
    m = _manifest(_inputs(3), left_out={"w009": "failed: gtselect exit 1"})
    write_manifest(product, m)
    assert read_manifest(product) == m
    assert read_manifest(tmp_path / "other.fits") is None


def test_a_sidecar_that_records_sha256_is_read_as_absent(tmp_path: Path) -> None:
    """Sidecars written while content hashes were sha256 describe nothing current: the
    product is merged in full, not updated from them."""
    product = tmp_path / "merged.fits"
    product.write_bytes(b"x" * 2880)
    m = _manifest(_inputs(2))
    m.product_blake3 = content_hash(product)
    write_manifest(product, m)
    assert read_manifest(product, check_product=True) == m
    old = json.loads(sidecar_path(product).read_text())
    old["product_sha256"] = hashlib.sha256(product.read_bytes()).hexdigest()
    del old["product_blake3"]
    for item in old["inputs"]:
        item["sha256"] = item.pop("blake3")
    sidecar_path(product).write_text(json.dumps(old))
    assert read_manifest(product) is None
    assert read_manifest(product, check_product=True) is None


def test_header_cards_list_every_input_and_left_out() -> None:
    cards = header_cards(_manifest(_inputs(3), left_out={"w009": "empty"}))
    history = [v for k, v, _ in cards if k == "HISTORY"]
    assert len(history) == 4 and "w009" in history[-1]
    assert ("FPNINPUT", 3) in [(k, v) for k, v, _ in cards]


def test_incremental_decisions() -> None:
    old = _manifest(_inputs(3))
    now = _inputs(4)
    plan = plan_incremental(old, now, strategy="image_sum", config_hash="c" * 64, additive=True)
    assert plan.mode == "incremental" and [i.key for i in plan.add] == ["k3"]
    same = plan_incremental(
        old, _inputs(3), strategy="image_sum", config_hash="c" * 64, additive=True
    )
    assert same.mode == "up_to_date"
    changed = [*_inputs(3)[:2], ManifestInput("w002", "x", "y", "k2-new"), _inputs(4)[3]]
    assert (
        plan_incremental(
            old, changed, strategy="image_sum", config_hash="c" * 64, additive=True
        ).mode
        == "full"
    )
    assert (
        plan_incremental(old, now, strategy="image_sum", config_hash="d" * 64, additive=True).mode
        == "full"
    )
    assert (
        plan_incremental(old, now, strategy="ftmerge", config_hash="c" * 64, additive=False).mode
        == "full"
    )
    assert (
        plan_incremental(None, now, strategy="image_sum", config_hash="c" * 64, additive=True).mode
        == "full"
    )
    lossy = _manifest(_inputs(3), left_out={"w005": "empty"})
    assert (
        plan_incremental(lossy, now, strategy="image_sum", config_hash="c" * 64, additive=True).mode
        == "full"
    )


def test_merged_manifest_orders_by_time() -> None:
    ins = _inputs(3)
    m = merged_manifest(_manifest([ins[2], ins[0]]), [ins[1]])
    assert [i.key for i in m.inputs] == ["k0", "k1", "k2"]


def _plan(
    old: Manifest,
    now: list[ManifestInput],
    *,
    replace: bool = False,
    additive: bool = True,
    config_hash: str = "c" * 64,
) -> IncrementalPlan:
    return plan_incremental(
        old, now, strategy="image_sum", config_hash=config_hash, additive=additive, replace=replace
    )


def test_incremental_replace_plans_remove_and_add() -> None:
    old = _manifest(_inputs(4))
    ins = _inputs(5)
    w001 = ManifestInput("w001", "lat_photon_weekly_w001_v2.fits", "z" * 16, "k1-new", 1e3, 1999)
    changed = [ins[0], w001, ins[2], ins[3], ins[4]]
    assert _plan(old, changed).mode == "full"  # without replace: as before
    plan = _plan(old, changed, replace=True)
    assert plan.mode == "incremental"
    assert [i.key for i in plan.remove] == ["k1"]  # the old key: finds the old map
    assert [i.key for i in plan.add] == ["k1-new", "k4"]
    assert "replacing 1 changed" in plan.reason and "adding 1 new" in plan.reason
    gone = _plan(old, [ins[0], ins[1], ins[3]], replace=True)  # w002 removed
    assert gone.mode == "incremental" and [i.key for i in gone.remove] == ["k2"]
    assert gone.add == () and "removing 1" in gone.reason
    merged = merged_manifest(old, plan.add, plan.remove)
    assert [i.key for i in merged.inputs] == ["k0", "k1-new", "k2", "k3", "k4"]
    # the up-to-date, pure-addition and refusal cases do not change with replace
    assert _plan(old, _inputs(4), replace=True).mode == "up_to_date"
    added = _plan(old, ins, replace=True)
    assert added.mode == "incremental" and added.remove == () and len(added.add) == 1
    assert _plan(old, changed, additive=False, replace=True).mode == "full"
    assert _plan(old, changed, config_hash="d" * 64, replace=True).mode == "full"
    lossy = _manifest(_inputs(4), left_out={"w009": "empty"})
    assert _plan(lossy, changed, replace=True).mode == "full"


def test_incremental_replace_needs_a_known_span() -> None:
    """Removing the first or last input without a replacement leaves the merged time span
    unknown (image_sum refuses that subtraction): a full merge."""
    old = _manifest(_inputs(4))
    ins = _inputs(4)
    assert _plan(old, ins[1:], replace=True).mode == "full"  # the first week gone
    assert _plan(old, ins[:3], replace=True).mode == "full"  # the last week gone
    first_v2 = ManifestInput("w000", "v2", "y" * 16, "k0-new", 0.0, 999)
    plan = _plan(old, [first_v2, *ins[1:]], replace=True)  # the first week changed
    assert plan.mode == "incremental" and [i.key for i in plan.remove] == ["k0"]
    assert _plan(old, [], replace=True).mode == "full"

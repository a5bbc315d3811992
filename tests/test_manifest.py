"""Merged-product manifests and the incremental-merge decision."""

from __future__ import annotations

from pathlib import Path

from fermipipe.manifest import (
    Manifest,
    ManifestInput,
    header_cards,
    merged_manifest,
    plan_incremental,
    read_manifest,
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

"""Energy-parallel gtexpcube2: one run per energy plane, stacked into the single-run product.

The real gtexpcube2 is single-threaded, and its mission grid (all-sky 0.1° AIT, 25 planes)
takes 360 s on this machine kind (spec §14.7); the HEALPix nside 128 × 28 planes, 20.4 s.
Every exposure plane depends only on its energy (spec §14.3), so with the real Fermitools
(``engine: fermitools``) the pipeline runs one gtexpcube2 per plane, in parallel, and stacks
the planes — what the existing runner's ``scripts/parallel_expcube.py`` does by hand — which
turns the 360 s mission grid into ~360 s / cores. The native gtexpcube2 needs none of this.

How one run makes exactly one plane at exactly the energy of the full run (spec §14.1):

* the full run's plane energies come first (:func:`full_plane_energies`: parameters, an
  ebinfile or the cmap's EBOUNDS, edisp_bins, EDGE/CENTER — the native tool's own code);
* ``emin=emax`` is refused by the tool, and a one-bin EDGE run gives two planes, so each
  plane is a one-bin **CENTER** run (``ebinalg=LOG enumbins=1 bincalc=CENTER edisp_bins=0``):
  its single plane is √(emin·emin·exp(ln(emax/emin))). ``emin`` is E/1.01 and ``emax`` the
  double, found by stepping one ulp at a time around E·1.01, for which that expression (the
  tool's formula, evaluated by the native code) is **exactly** E; the values are written with
  ``repr`` (shortest round-trip), so the tool reads the same doubles. The cmap (or the grid
  parameters) still gives the sky grid; explicit emin/emax/enumbins override its EBOUNDS.
* :func:`stack_planes` rebuilds the full product from the plane files: plane 0's headers
  with NAXIS3 / CDELT3 (WCS) or the ENERGY1…N columns (HEALPix) and the ENERGIES rows of
  all planes; every other card, the GTI and the DSS keywords come verbatim from plane 0
  (they do not depend on the energies). Data bytes are the planes' bytes, in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.header import Card, Header
from fermipipe.fits.keywords import set_card
from fermipipe.fits.table import FitsFile, write_fits

__all__ = [
    "PlaneRun",
    "full_plane_energies",
    "plane_runs",
    "single_plane_params",
    "stack_planes",
]

TOOL = "gtexpcube2"
#: Parameters that set the energy planes: replaced in every per-plane run.
ENERGY_PARAMS = ("ebinalg", "ebinfile", "emin", "emax", "enumbins", "bincalc", "edisp_bins")
#: How far the per-plane search walks from its first guess: ulps of emax, emins tried.
_MAX_STEPS = 64
_EMIN_SHIFTS = 16


@dataclass(frozen=True)
class PlaneRun:
    """One per-plane gtexpcube2 run: plane ``index`` at ``energy`` MeV, its parameters."""

    index: int
    energy: float
    params: dict[str, str]


def _resolved(params: Mapping[str, str]) -> dict[str, Any]:
    from fermipipe.native.gtexpcube2 import PARAMS
    from fermipipe.native.params import resolve

    # outfile only names where the full product goes; the energies do not need it
    return resolve(PARAMS, {"outfile": "unused", **params}, tool=TOOL)


def _cmap_file(p: Mapping[str, Any]) -> str | None:
    cmap = str(p["cmap"]).strip()
    return None if cmap.lower() in ("none", "hpx") else cmap


def full_plane_energies(params: Mapping[str, str]) -> list[float]:
    """The plane energies (MeV) a single gtexpcube2 run with ``params`` makes (reads the
    ebinfile or the cmap's EBOUNDS when the parameters say so)."""
    from fermipipe.native.gtexpcube2 import plane_energies

    p = _resolved(params)
    return plane_energies(p, _cmap_file(p))


def _one_plane(emin: float, emax: float) -> list[float]:
    from fermipipe.native.gtexpcube2 import plane_energies

    p = {"ebinalg": "LOG", "ebinfile": "NONE", "emin": emin, "emax": emax, "enumbins": 1,
         "edisp_bins": 0, "bincalc": "CENTER"}  # fmt: skip
    return plane_energies(p, None)


def single_plane_params(params: Mapping[str, str], energy: float) -> dict[str, str]:
    """``params`` changed so that gtexpcube2 makes exactly one plane, at exactly ``energy``."""
    for emin, emax in _brackets(energy):
        if emax > emin and _one_plane(emin, emax) == [energy]:
            out = {k: v for k, v in params.items() if k not in ENERGY_PARAMS}
            out.update(
                ebinalg="LOG", emin=repr(emin), emax=repr(emax), enumbins="1",
                bincalc="CENTER", edisp_bins="0",
            )  # fmt: skip
            return out
    raise ToolError(TOOL, f"no one-plane run reproduces the plane at {energy!r} MeV")


def _brackets(energy: float) -> Iterator[tuple[float, float]]:
    """(emin, emax) candidates around E/f, E·f: emax walks ±_MAX_STEPS ulps from E²/emin;
    rounding in exp/log/sqrt can skip E for one emin, so a few neighbouring emin are tried."""
    for factor in (1.01, 1.02, 1.05):
        for shift in range(_EMIN_SHIFTS):
            emin = _ulps(energy / factor, shift)
            guess = energy * energy / emin
            yield emin, guess
            for step in range(1, _MAX_STEPS):
                yield emin, _ulps(guess, step)
                yield emin, _ulps(guess, -step)


def _ulps(x: float, n: int) -> float:
    """x moved by n units in the last place."""
    toward = math.inf if n > 0 else -math.inf
    for _ in range(abs(n)):
        x = math.nextafter(x, toward)
    return x


def plane_runs(params: Mapping[str, str], folder: Path) -> list[PlaneRun]:
    """One run per plane of the full product, each writing ``folder/plane_NNN.fits``."""
    runs = []
    for k, energy in enumerate(full_plane_energies(params)):
        one = single_plane_params(params, energy)
        one["outfile"] = str(folder / f"plane_{k:03d}.fits")
        runs.append(PlaneRun(k, energy, one))
    return runs


# ---------------------------------------------------------------------- stacking


def _plane_energy(ff: FitsFile, path: Path) -> float:
    rows = ff.table("ENERGIES").rows
    if len(rows) != 1:
        raise ToolError(TOOL, f"a per-plane run made {len(rows)} planes, not 1", str(path))
    return float(rows["Energy"][0])


def _energies_table(ff: FitsFile, energies: Sequence[float]) -> tuple[Header, np.ndarray]:
    header = ff.hdu("ENERGIES").header.copy()
    set_card(header, "NAXIS2", len(energies))
    rows = np.empty(len(energies), dtype=[("Energy", ">f8")])
    rows["Energy"] = energies
    return header, rows


def _wcs_primary(first: FitsFile, energies: Sequence[float]) -> Header:
    """Plane 0's primary header for n planes (spec §14.5: CRVAL3 = ln E₀ is plane 0's)."""
    header = first.hdu(0).header.copy()
    n = len(energies)
    set_card(header, "NAXIS3", n)
    set_card(header, "CDELT3", 0 if n == 1 else math.log(energies[-1] / energies[0]) / (n - 1))
    return header


def _hpx_table(first: FitsFile, n: int) -> Header:
    """Plane 0's HPXEXPOSURES header with the columns ENERGY1…n (TFORM and comments of its
    one column), in the place its TTYPE1/TFORM1 cards hold."""
    src = first.hdu("HPXEXPOSURES").header
    if int(src["TFIELDS"]) != 1:
        raise ToolError(TOOL, "a per-plane HEALPix run has more than one column", str(first.path))
    cards: list[Card] = []
    for card in src.cards:
        if card.keyword == "TFORM1":
            cards.append(card)
            ttype, tform = src.cards["TTYPE1"], card
            for k in range(2, n + 1):
                cards.append(Card.from_value(f"TTYPE{k}", f"ENERGY{k}", ttype.comment or None))
                cards.append(Card.from_value(f"TFORM{k}", tform.value, tform.comment or None))
        else:
            cards.append(Card(str(card)))
    header = Header(cards)
    width = int(src["NAXIS1"])
    set_card(header, "NAXIS1", width * n)
    set_card(header, "TFIELDS", n)
    return header


def stack_planes(plane_files: Sequence[Path], out: Path) -> Path:
    """One gtexpcube2 product from per-plane products, equal to a single run (data bytes and
    headers, DATE/CHECKSUM/DATASUM aside), written atomically to ``out``."""
    files = [FitsFile(p) for p in plane_files]
    if not files:
        raise ToolError(TOOL, "no per-plane products to stack")
    try:
        first = files[0]
        energies = [_plane_energy(ff, Path(ff.path)) for ff in files]
        names = [h.extname.upper() for h in first.hdus]
        hdus: list[tuple[Header, Any]] = []
        image = int(first.hdu(0).header.get("NAXIS", 0)) > 0
        for i, name in enumerate(names):
            if i == 0 and image:
                for ff in files[1:]:
                    same = ff.hdu(0).header.get("NAXIS1"), ff.hdu(0).header.get("NAXIS2")
                    if same != (first.hdu(0).header["NAXIS1"], first.hdu(0).header["NAXIS2"]):
                        raise ToolError(TOOL, "per-plane products on different grids", ff.path)
                data = b"".join(ff.data_bytes(0).tobytes() for ff in files)
                hdus.append((_wcs_primary(first, energies), data))
            elif name == "HPXEXPOSURES":
                width = int(first.hdu(i).header["NAXIS1"])
                cols = [np.frombuffer(ff.data_bytes("HPXEXPOSURES"), f"V{width}") for ff in files]
                if len({c.size for c in cols}) != 1:
                    raise ToolError(TOOL, "per-plane HEALPix products of different sizes")
                rows = np.stack(cols, axis=1).tobytes()  # row r: ENERGY1[r], ENERGY2[r], …
                hdus.append((_hpx_table(first, len(files)), rows))
            elif name == "ENERGIES":
                hdus.append(_energies_table(first, energies))
            else:  # the (empty HEALPix) primary, GTI: the same in every plane's product
                hdus.append((first.hdu(i).header.copy(), first.data_bytes(i).tobytes()))
        checksum = all("CHECKSUM" in h.header for h in first.hdus)
        return write_fits(out, hdus, checksum=checksum, add_filename=False)
    finally:
        for ff in files:
            ff.close()

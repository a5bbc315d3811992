"""LAT instrument response functions (IRFs) from a CALDB, without the Fermitools.

* :mod:`fermipipe.irf.caldb` — find the CALDB, resolve an IRF name and event types to the
  FITS files and HDUs of their effective area, PSF and energy dispersion.
* :mod:`fermipipe.irf.aeff` — read and evaluate the effective area (with its phi modulation
  and efficiency factors) exactly as latResponse does (spec §14.3, §14.4).

Pure functions and plain data classes; no Prefect, no process state.
"""

from __future__ import annotations

from fermipipe.irf.aeff import EffectiveArea, EfficiencyFactor, load_effective_area
from fermipipe.irf.caldb import (
    CaldbNotFoundError,
    EventTypeIrf,
    IrfComponent,
    IrfNotFoundError,
    IrfSelection,
    find_caldb,
    resolve_irf,
)

__all__ = [
    "CaldbNotFoundError",
    "EffectiveArea",
    "EfficiencyFactor",
    "EventTypeIrf",
    "IrfComponent",
    "IrfNotFoundError",
    "IrfSelection",
    "find_caldb",
    "load_effective_area",
    "resolve_irf",
]

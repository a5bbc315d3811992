"""Event-list merge: what ``gtselect @list`` / a proper ftmerge give for FT1 files (spec §8).

The output is the first input with:

* EVENTS = the rows of every input concatenated in list order (no row is dropped: this is a
  merge, not a selection — unlike ``gtselect @list``, whose default ENERGY cut and per-file
  ``gtifilter()`` could remove rows);
* GTI = union of the inputs' GTIs (touching intervals merged), ONTIME updated;
* DSS = the inputs' common cuts + ``TIME``/``TABLE``/``:GTI``, built and checked exactly as
  gtselect does for a list (spec 3.2 steps 1–2, then ``mergeRangeCuts``): PASS_VER and the
  non-GTI DSS must agree across inputs, else a one-line ToolError naming both files;
* TSTART/TSTOP = min/max of the inputs' EVENTS TSTART/TSTOP, with DATE, DATE-OBS,
  DATE-END (and TELAPSE where present) in the primary, EVENTS and GTI headers (spec 1.5);
* checksums on every HDU and FILENAME, written atomically.

Rows are streamed chunk by chunk, so memory stays bounded whatever the number and size of
the inputs. ftmerge, by contrast, keeps only the first file's GTI and header (spec §8).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fermipipe.errors import EmptyProductError, ToolError
from fermipipe.native.gtselect import (
    _scan_input,
    input_cuts,
    merged_time_span,
    write_event_product,
)
from fermipipe.native.params import ToolOutcome

TOOL = "evmerge"
EVTABLE = "EVENTS"


def merge_event_files(inputs: Sequence[Path | str], output: Path | str) -> ToolOutcome:
    """Merge FT1 event files into ``output`` (see module docstring); list order is kept.

    Raises ToolError for inconsistent inputs (PASS_VER, DSS, columns) and
    EmptyProductError — after writing a valid file — when the merged GTI is empty.
    """
    paths = [os.fspath(p) for p in inputs]
    if not paths:
        raise ToolError(TOOL, "no input files to merge")
    outfile = os.fspath(output)
    if any(Path(p).resolve() == Path(outfile).resolve() for p in paths if Path(p).exists()):
        raise ToolError(TOOL, "output file is also an input", outfile)
    scanned = [_scan_input(p, EVTABLE, TOOL) for p in paths]
    cuts = input_cuts(scanned, TOOL)
    cuts.merge_range_cuts()  # as gtselect's CutController does after adding its own cuts
    gti = scanned[0].gti.union(*(s.gti for s in scanned[1:]))

    dates = merged_time_span(scanned, gti, None, TOOL)

    n_rows = write_event_product(
        scanned,
        outfile,
        evtable=EVTABLE,
        cuts=cuts,
        out_gti=gti,
        dates=dates,
        cfitsio_history=[],
        history=[f"fermipipe evmerge: rows of {len(paths)} files concatenated, GTIs united"],
        accept=None,
        tool=TOOL,
    )
    if len(gti) == 0:
        raise EmptyProductError(TOOL, "No GTIs found in the input event files", outfile)
    return ToolOutcome(
        outputs=[outfile],
        n_rows=n_rows,
        messages=[
            f"evmerge: {n_rows} events from {len(paths)} files, {len(gti)} GTIs -> {outfile}"
        ],
    )

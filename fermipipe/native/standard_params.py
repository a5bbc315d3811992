"""The parameters every Fermitools .par file ends with: chatter, clobber, debug, gui, mode.

They are declared once here, with the values of the Fermitools' .par files, so that every
native tool accepts a real Fermitools command line unchanged. The native tools act only on
``clobber`` (each one decides when an existing output is refused); chatter, debug, gui and
mode are interface settings of the real tools with no effect on the products.
"""

from __future__ import annotations

from fermipipe.native.params import ParamSpec

__all__ = ["STANDARD_PARAMS"]

STANDARD_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("chatter", "int", 2),
    ParamSpec("clobber", "bool", True),
    ParamSpec("debug", "bool", False),
    ParamSpec("gui", "bool", False),
    ParamSpec("mode", "str", "ql"),
)

"""Command line for the native tools, with Fermitools syntax.

python -m fermipipe.native gtselect infile=a.fits outfile=b.fits emin=100 emax=1e5 zmax=90
"""

from __future__ import annotations

import sys

from fermipipe.errors import FermipipeError
from fermipipe.native import NATIVE_TOOLS, run_tool
from fermipipe.native.params import parse_argv
from fermipipe.native.tool_files import one_line


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # File names are any bytes: a name that is not UTF-8 is printed back as the same bytes
    # (its surrogate escapes) instead of failing with UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="surrogateescape")
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("tools:", ", ".join(NATIVE_TOOLS))
        return 0 if args else 2
    tool, rest = args[0], args[1:]
    if tool not in NATIVE_TOOLS:
        print(f"error: no native tool {tool!r} (have: {', '.join(NATIVE_TOOLS)})", file=sys.stderr)
        return 2
    try:
        outcome = run_tool(tool, parse_argv(rest, tool))
    except FermipipeError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)  # one line, whatever a name holds
        return 1
    for message in outcome.messages:
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())

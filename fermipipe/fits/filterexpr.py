"""Safe parser and numpy evaluator for the cfitsio row-filter subset the Fermitools use.

gtmktime hands its ``filter`` parameter (plus the ROI zenith term) to cfitsio as a row filter
on the FT2 table (spec §1.2, §4.2, §10). This module reproduces that subset without ``eval``:

* column names, case-insensitive (``DATA_QUAL``, ``data_qual``), and vector elements
  ``NAME[i]`` with cfitsio's 1-based index;
* numbers: integers (``LONG``), reals with ``.`` and/or an exponent (``e``/``E``; the Fortran
  ``d``/``D`` exponent is read as ``e``), the logical constants ``T``/``F`` (single letters,
  as in cfitsio's lexer, so a column named ``T`` cannot be referenced);
* unary ``!`` and ``-`` (and ``+``), ``&& || == != < <= > >=``, ``+ - * /``, parentheses,
  with C precedence (cfitsio's grammar gives the same order for this subset:
  ``||`` < ``&&`` < ``== !=`` < ``< <= > >=`` < ``+ -`` < ``* /`` < unary);
* the Fortran spellings ``.and. .or. .not. .eq. .ne. .lt. .le. .gt. .ge.`` (any case) and
  ``=>`` / ``=<``, which cfitsio's lexer also accepts;
* functions ``ABS(x)`` and ``ANGSEP(ra1, dec1, ra2, dec2)`` (case-insensitive names, as
  cfitsio upper-cases function names); angsep is the haversine of spec §1.2, computed by the
  package's single implementation :mod:`fermipipe.fits.sphere`. When an angsep result is
  compared directly, values within a few ulps of the other operand are recomputed with the C
  library (``sphere.refine_near``), so the comparison decides exactly as cfitsio's.

Types follow cfitsio: integer columns/constants are LONG (int64 arithmetic, C truncating
division), float columns/reals are DOUBLE, logical columns and T/F are BOOLEAN. Mixed
arithmetic and every comparison involving a DOUBLE is done in float64 (float32 columns are
promoted first, spec §1.2). ``&&``, ``||`` and ``!`` need BOOLEAN operands and the whole
expression must be BOOLEAN, otherwise a :class:`FilterError` is raised — cfitsio refuses such
expressions as well.

Nulls: cfitsio reads a NaN in a float column as an undefined value and a row whose filter
result is undefined is rejected. We carry a null mask the same way: NaN inputs (and, our
choice, divisions by zero) are null, nulls propagate through arithmetic/comparisons/functions,
``&&``/``||`` use three-valued logic (``F && null`` is F, ``T || null`` is T), and a null final
result rejects the row.

Anything outside the subset (bit strings, strings, ``#keywords``, other functions, ``=``,
``&``/``|``, ``**``) is a :class:`FilterError` naming the expression and the position.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fermipipe.errors import ToolError
from fermipipe.fits.sphere import angsep, refine_near

__all__ = [
    "Binary",
    "Call",
    "Column",
    "CompiledFilter",
    "Const",
    "FilterError",
    "Node",
    "Unary",
    "angsep",
    "compile_filter",
    "evaluate",
    "parse",
]


class FilterError(ToolError):
    """A row-filter expression cannot be parsed or evaluated.

    ``position`` is the 0-based character offset of the offending token (None if unknown).
    """

    def __init__(
        self,
        expr: str,
        message: str,
        position: int | None = None,
        tool: str = "filter",
        file: str | None = None,
    ) -> None:
        self.expr = expr
        self.position = position
        self.reason = message
        where = f" at position {position}" if position is not None else ""
        super().__init__(tool, f"{message}{where} in filter expression {expr!r}", file=file)

    def with_context(self, tool: str, file: str | None = None) -> FilterError:
        """The same error attributed to ``tool`` (and ``file``)."""
        return FilterError(self.expr, self.reason, self.position, tool=tool, file=file)


# --------------------------------------------------------------------------------------------
# Tokens

_REAL = r"(?:\d+\.\d*|\.\d+)(?:[eEdD][+-]?\d+)?|\d+[eEdD][+-]?\d+"
_FORTRAN_OPS = {
    ".and.": "&&",
    ".or.": "||",
    ".not.": "!",
    ".eq.": "==",
    ".ne.": "!=",
    ".lt.": "<",
    ".le.": "<=",
    ".gt.": ">",
    ".ge.": ">=",
}
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<fortran>\.(?:and|or|not|eq|ne|lt|le|gt|ge)\.)
  | (?P<real>"""
    + _REAL
    + r""")
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|=>|=<|[!<>+\-*/(),\[\]])
    """,
    re.VERBOSE | re.IGNORECASE,
)
_OP_ALIASES = {"=>": ">=", "=<": "<="}


@dataclass(frozen=True)
class _Token:
    kind: str  # "int", "real", "name", "op", "end"
    text: str
    pos: int


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise FilterError(expr, f"unsupported character {expr[pos]!r}", pos)
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "fortran":
            tokens.append(_Token("op", _FORTRAN_OPS[text.lower()], pos))
        elif kind == "op":
            tokens.append(_Token("op", _OP_ALIASES.get(text, text), pos))
        elif kind != "ws":
            tokens.append(_Token(kind, text, pos))
        pos = m.end()
    tokens.append(_Token("end", "", len(expr)))
    return tokens


# --------------------------------------------------------------------------------------------
# Syntax tree


class Node:
    """Base class of the expression tree."""

    pos: int

    def columns(self) -> set[str]:
        """Upper-cased base names of the columns the expression reads (no ``[i]``)."""
        out: set[str] = set()
        self._collect(out)
        return out

    def _collect(self, out: set[str]) -> None:
        for child in self.children():
            child._collect(out)

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True)
class Const(Node):
    """A literal: ``kind`` is "i" (LONG), "f" (DOUBLE) or "b" (BOOLEAN)."""

    value: int | float | bool
    kind: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Column(Node):
    """A column reference; ``index`` is the 1-based vector element or None."""

    name: str
    index: int | None
    pos: int = field(default=0, compare=False)

    def _collect(self, out: set[str]) -> None:
        out.add(self.name.upper())


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "!", "-", "+"
    operand: Node
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Call(Node):
    name: str  # upper case
    args: tuple[Node, ...]
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:
        return self.args


_FUNCTIONS: dict[str, int] = {"ABS": 1, "ANGSEP": 4}

# Binary precedence levels, lowest first (C order; identical to cfitsio's for this subset).
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",),
    ("&&",),
    ("==", "!="),
    ("<", "<=", ">", ">="),
    ("+", "-"),
    ("*", "/"),
)


class _Parser:
    """Recursive-descent parser; each level is left-associative like cfitsio's ``%left``."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: _Token) -> FilterError:
        return FilterError(self.expr, message, tok.pos)

    def expect(self, text: str) -> _Token:
        tok = self.peek()
        if tok.kind != "op" or tok.text != text:
            found = "end of expression" if tok.kind == "end" else repr(tok.text)
            raise self.error(f"expected {text!r}, found {found}", tok)
        return self.take()

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise FilterError(self.expr, "empty filter expression", 0)
        node = self.binary(0)
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(f"unexpected token {tok.text!r}", tok)
        return node

    def binary(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in _LEVELS[level]:
                self.take()
                right = self.binary(level + 1)
                node = Binary(tok.text, node, right, tok.pos)
            else:
                return node

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("!", "-", "+"):
            self.take()
            return Unary(tok.text, self.unary(), tok.pos)
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "int":
            return Const(int(tok.text), "i", tok.pos)
        if tok.kind == "real":
            text = tok.text.replace("d", "e").replace("D", "e")
            return Const(float(text), "f", tok.pos)
        if tok.kind == "op" and tok.text == "(":
            node = self.binary(0)
            self.expect(")")
            return node
        if tok.kind == "name":
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text == "(":
                return self.call(tok)
            if tok.text in ("T", "t", "F", "f"):
                return Const(tok.text in ("T", "t"), "b", tok.pos)
            if nxt.kind == "op" and nxt.text == "[":
                self.take()
                idx = self.take()
                if idx.kind != "int" or int(idx.text) < 1:
                    raise self.error(
                        "vector element index must be a positive integer (1-based)", idx
                    )
                self.expect("]")
                return Column(tok.text, int(idx.text), tok.pos)
            return Column(tok.text, None, tok.pos)
        if tok.kind == "end":
            raise self.error("unexpected end of expression", tok)
        raise self.error(f"unexpected token {tok.text!r}", tok)

    def call(self, name_tok: _Token) -> Node:
        name = name_tok.text.upper()
        if name not in _FUNCTIONS:
            raise self.error(
                f"unsupported function {name_tok.text!r} (supported: ABS, ANGSEP)", name_tok
            )
        self.expect("(")
        args: list[Node] = []
        if not (self.peek().kind == "op" and self.peek().text == ")"):
            args.append(self.binary(0))
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                args.append(self.binary(0))
        self.expect(")")
        if len(args) != _FUNCTIONS[name]:
            raise self.error(
                f"{name} takes {_FUNCTIONS[name]} argument(s), got {len(args)}", name_tok
            )
        return Call(name, tuple(args), name_tok.pos)


def parse(expr: str) -> Node:
    """Parse ``expr`` into a syntax tree; syntax errors raise :class:`FilterError`."""
    return _Parser(expr).parse()


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class _Val:
    """An evaluated sub-expression: values (scalar or 1-D array), cfitsio type, null mask."""

    data: Any
    kind: str  # "b", "i", "f"
    null: Any = None  # None (no nulls) or bool array/scalar
    angsep_args: tuple[Any, Any, Any, Any] | None = None  # set on a bare ANGSEP(...) result

    def as_float(self) -> Any:
        return np.asarray(self.data, dtype=np.float64) if self.kind != "f" else self.data


def _or_null(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return np.logical_or(a, b)


_TYPE_NAMES = {"b": "logical", "i": "integer", "f": "real"}


@dataclass
class _Evaluator:
    expr: str
    columns: dict[str, np.ndarray]
    cache: dict[tuple[str, int | None], _Val] = field(default_factory=dict)

    def fail(self, message: str, node: Node) -> FilterError:
        return FilterError(self.expr, message, node.pos)

    def column(self, node: Column) -> _Val:
        key = (node.name.upper(), node.index)
        if key in self.cache:
            return self.cache[key]
        arr = self.columns.get(key[0])
        if arr is None:
            raise self.fail(f"unknown column {node.name!r}", node)
        arr = np.asarray(arr)
        if node.index is not None:
            if arr.ndim != 2:
                raise self.fail(f"column {node.name!r} is not a vector column", node)
            if node.index > arr.shape[1]:
                raise self.fail(
                    f"element {node.index} out of range for column {node.name!r} "
                    f"of {arr.shape[1]} elements",
                    node,
                )
            arr = arr[:, node.index - 1]
        elif arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        elif arr.ndim != 1:
            raise self.fail(
                f"column {node.name!r} is a vector; select an element with {node.name}[i]", node
            )
        kind = arr.dtype.kind
        if kind == "b":
            val = _Val(arr, "b")
        elif kind in "iu":
            val = _Val(arr.astype(np.int64), "i")
        elif kind == "f":
            data = arr.astype(np.float64)
            nan = np.isnan(data)
            val = _Val(data, "f", nan if nan.any() else None)
        else:
            raise self.fail(
                f"column {node.name!r} has type {arr.dtype} which the filter subset does not "
                "support",
                node,
            )
        self.cache[key] = val
        return val

    def eval(self, node: Node) -> _Val:
        if isinstance(node, Const):
            return _Val(node.value, node.kind)
        if isinstance(node, Column):
            return self.column(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Call):
            return self.call(node)
        raise TypeError(f"unknown node {node!r}")  # pragma: no cover

    def numeric(self, val: _Val, node: Node, what: str) -> None:
        if val.kind == "b":
            raise self.fail(f"{what} needs a numeric operand, got a logical value", node)

    def unary(self, node: Unary) -> _Val:
        val = self.eval(node.operand)
        if node.op == "!":
            if val.kind != "b":
                raise self.fail(f"'!' needs a logical operand, got {_TYPE_NAMES[val.kind]}", node)
            return _Val(np.logical_not(val.data), "b", val.null)
        self.numeric(val, node, f"unary {node.op!r}")
        return _Val(np.negative(val.data) if node.op == "-" else val.data, val.kind, val.null)

    def binary(self, node: Binary) -> _Val:
        a = self.eval(node.left)
        b = self.eval(node.right)
        op = node.op
        if op in ("&&", "||"):
            if a.kind != "b" or b.kind != "b":
                bad = a if a.kind != "b" else b
                raise self.fail(f"{op!r} needs logical operands, got {_TYPE_NAMES[bad.kind]}", node)
            return self.logical(op, a, b)
        if op in ("==", "!=") and a.kind == "b" and b.kind == "b":
            data = np.equal(a.data, b.data) if op == "==" else np.not_equal(a.data, b.data)
            return _Val(data, "b", _or_null(a.null, b.null))
        if a.kind == "b" or b.kind == "b":
            raise self.fail(f"{op!r} cannot mix a logical value with a number", node)
        null = _or_null(a.null, b.null)
        if op in _COMPARE:
            a, b = _exact_angsep(a, b), _exact_angsep(b, a)
            if a.kind == "i" and b.kind == "i":
                # cfitsio compares LONGs as integers; exact, unlike float64 beyond 2**53.
                return _Val(_COMPARE[op](a.data, b.data), "b", null)
            return _Val(_COMPARE[op](a.as_float(), b.as_float()), "b", null)
        if a.kind == "i" and b.kind == "i":
            x = np.asarray(a.data, dtype=np.int64)
            y = np.asarray(b.data, dtype=np.int64)
            if op == "/":
                zero = y == 0
                safe = np.where(zero, 1, y)
                q = np.abs(x) // np.abs(safe)  # C truncation toward zero
                q = np.where((x < 0) ^ (safe < 0), -q, q)
                return _Val(q, "i", _or_null(null, zero if zero.any() else None))
            return _Val(_ARITH[op](x, y), "i", null)
        x = a.as_float()
        y = b.as_float()
        if op == "/":
            zero = np.asarray(y) == 0
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.divide(x, np.where(zero, 1.0, y))
            return _Val(q, "f", _or_null(null, zero if zero.any() else None))
        return _Val(_ARITH[op](x, y), "f", null)

    @staticmethod
    def logical(op: str, a: _Val, b: _Val) -> _Val:
        if a.null is None and b.null is None:
            fn = np.logical_and if op == "&&" else np.logical_or
            return _Val(fn(a.data, b.data), "b")
        an = np.zeros_like(a.data, dtype=bool) if a.null is None else a.null
        bn = np.zeros_like(b.data, dtype=bool) if b.null is None else b.null
        av = np.asarray(a.data, dtype=bool)
        bv = np.asarray(b.data, dtype=bool)
        if op == "&&":
            # a definite False on either side decides; otherwise any null makes it null
            false_a = ~an & ~av
            false_b = ~bn & ~bv
            data = av & bv & ~an & ~bn
            null = (an | bn) & ~(false_a | false_b)
        else:
            true_a = ~an & av
            true_b = ~bn & bv
            data = true_a | true_b
            null = (an | bn) & ~data
        return _Val(data, "b", null)

    def call(self, node: Call) -> _Val:
        vals = [self.eval(arg) for arg in node.args]
        for val, arg in zip(vals, node.args, strict=True):
            self.numeric(val, arg, node.name)
        null: Any = None
        for val in vals:
            null = _or_null(null, val.null)
        if node.name == "ABS":
            return _Val(np.abs(vals[0].data), vals[0].kind, null)
        args = tuple(v.as_float() for v in vals)
        return _Val(angsep(*args), "f", null, angsep_args=args)  # type: ignore[arg-type]


def _exact_angsep(val: _Val, other: _Val) -> _Val:
    """``val`` with its angsep values near ``other`` recomputed with libm (module docstring)."""
    if val.angsep_args is None:
        return val
    data = refine_near(val.data, other.as_float(), val.angsep_args)
    return _Val(data, "f", val.null)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
}


def _column_map(columns: Any) -> dict[str, np.ndarray]:
    """Upper-cased name → array, from a Mapping or a numpy structured array / FITS_rec."""
    names = getattr(getattr(columns, "dtype", None), "names", None)
    if names is not None:
        return {name.upper(): columns[name] for name in names}
    return {str(name).upper(): value for name, value in columns.items()}


def _nrows(columns: Mapping[str, np.ndarray]) -> int | None:
    for value in columns.values():
        return len(value)
    return None


def evaluate(
    node: Node,
    columns: Mapping[str, np.ndarray] | Any,
    nrows: int | None = None,
    expr: str | None = None,
) -> np.ndarray:
    """Evaluate a parsed filter on table columns; returns the boolean row mask.

    ``columns`` maps column names (any case) to arrays (vector columns as 2-D arrays), or is
    a numpy structured array. Rows whose result is null (NaN inputs) are rejected. ``nrows``
    is needed only when no column is given (then a constant expression is broadcast).
    """
    text = expr if expr is not None else "<expression>"
    cols = _column_map(columns)
    n = nrows if nrows is not None else _nrows(cols)
    val = _Evaluator(text, cols).eval(node)
    if val.kind != "b":
        raise FilterError(
            text, f"expression is {_TYPE_NAMES[val.kind]}, a row filter must be logical", 0
        )
    result = np.asarray(val.data, dtype=bool)
    if val.null is not None:
        result = result & ~np.asarray(val.null, dtype=bool)
    if result.ndim == 0:
        if n is None:
            raise FilterError(text, "constant expression needs nrows", 0)
        return np.full(n, bool(result))
    return result


@dataclass(frozen=True)
class CompiledFilter:
    """A parsed filter ready to apply to many tables."""

    expr: str
    root: Node
    tool: str = "filter"
    file: str | None = None

    def columns(self) -> set[str]:
        """Upper-cased names of the columns the filter reads."""
        return self.root.columns()

    def __call__(
        self, columns: Mapping[str, np.ndarray] | Any, nrows: int | None = None
    ) -> np.ndarray:
        """Boolean row mask; evaluation errors are attributed to ``tool``/``file``."""
        try:
            return evaluate(self.root, columns, nrows=nrows, expr=self.expr)
        except FilterError as exc:
            raise exc.with_context(self.tool, self.file) from None


def compile_filter(expr: str, tool: str = "filter", file: str | None = None) -> CompiledFilter:
    """Parse ``expr`` once; the result is callable on column mappings.

    Errors (syntax now, unknown columns/types at evaluation) are :class:`FilterError`
    attributed to ``tool`` and ``file``.
    """
    try:
        root = parse(expr)
    except FilterError as exc:
        raise exc.with_context(tool, file) from None
    return CompiledFilter(expr, root, tool, file)

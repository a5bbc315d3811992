"""Tests of the cfitsio row-filter subset (fermipipe.fits.filterexpr)."""

from __future__ import annotations

import numpy as np
import pytest
from sky_samples import points_on_cone_edge

from fermipipe.errors import ToolError
from fermipipe.fits.filterexpr import (
    Binary,
    Column,
    FilterError,
    Unary,
    angsep,
    compile_filter,
    evaluate,
    parse,
)

RNG = np.random.default_rng(20261125)
N = 500


@pytest.fixture(scope="module")
def cols() -> dict[str, np.ndarray]:
    """FT2-like columns with the FITS dtypes (big-endian, as read from a file)."""
    return {
        "DATA_QUAL": RNG.integers(-1, 3, N).astype(">i2"),
        "LAT_CONFIG": RNG.integers(0, 2, N).astype("u1"),
        "ROCK_ANGLE": RNG.uniform(-90, 90, N).astype(">f4"),
        "RA_ZENITH": RNG.uniform(0, 360, N).astype(">f4"),
        "DEC_ZENITH": RNG.uniform(-30, 30, N).astype(">f4"),
        "IN_SAA": RNG.integers(0, 2, N).astype(bool),
        "LIVETIME": RNG.uniform(0, 30, N).astype(">f8"),
        "SC_POSITION": RNG.uniform(-7e6, 7e6, (N, 3)).astype(">f4"),
        "LAT_MODE": RNG.integers(0, 6, N).astype(">i4"),
    }


def run(expr: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    return compile_filter(expr)(cols)


# ------------------------------------------------------------------------- every operator


def test_gtmktime_par_default_filter(cols):
    got = run("DATA_QUAL>0 && LAT_CONFIG==1 && ABS(ROCK_ANGLE)<52", cols)
    rock = cols["ROCK_ANGLE"].astype(np.float64)
    want = (cols["DATA_QUAL"] > 0) & (cols["LAT_CONFIG"] == 1) & (np.abs(rock) < 52)
    np.testing.assert_array_equal(got, want)
    assert 0 < got.sum() < N


@pytest.mark.parametrize(
    ("expr", "fn"),
    [
        ("ROCK_ANGLE < 10.5", lambda r: r < 10.5),
        ("ROCK_ANGLE <= 10.5", lambda r: r <= 10.5),
        ("ROCK_ANGLE > -3e1", lambda r: r > -30.0),
        ("ROCK_ANGLE >= -3E+1", lambda r: r >= -30.0),
        ("ROCK_ANGLE == ROCK_ANGLE", lambda r: r == r),
        ("ROCK_ANGLE != 0", lambda r: r != 0),
        ("ROCK_ANGLE .lt. 1.5", lambda r: r < 1.5),
        ("ROCK_ANGLE .GE. .5", lambda r: r >= 0.5),
        ("ROCK_ANGLE .le. 1.5", lambda r: r <= 1.5),
        ("ROCK_ANGLE .Gt. 1.5", lambda r: r > 1.5),
        ("ROCK_ANGLE*0 .eq. 0", lambda r: r * 0 == 0),
        ("ROCK_ANGLE .NE. ROCK_ANGLE", lambda r: r != r),
        ("ROCK_ANGLE => 2.", lambda r: r >= 2.0),
        ("ROCK_ANGLE =< 2.", lambda r: r <= 2.0),
        ("-ROCK_ANGLE > 5", lambda r: -r > 5),
        ("+ROCK_ANGLE > 5", lambda r: r > 5),
        ("ROCK_ANGLE*2 - 1 > ROCK_ANGLE/3 + 4", lambda r: r * 2 - 1 > r / 3 + 4),
        ("abs(rock_angle) < 52", lambda r: np.abs(r) < 52),
        ("1d1 < ROCK_ANGLE", lambda r: r > 10.0),
    ],
)
def test_comparisons_and_arithmetic_in_float64(cols, expr, fn):
    rock = cols["ROCK_ANGLE"].astype(np.float64)  # cfitsio promotes float32 to double
    np.testing.assert_array_equal(run(expr, cols), fn(rock))


def test_float32_column_against_20_digit_constant():
    # spec §1.2: float32 column vs a %.20g-printed double = float64(col) vs the double.
    col = np.array([0.1, 0.2, 90.0], dtype=">f4")
    got = run("ZENITH_ANGLE <= 0.10000000000000000555", {"ZENITH_ANGLE": col})
    np.testing.assert_array_equal(got, [False, False, False])  # float32(0.1) > 0.1
    got = run("ZENITH_ANGLE <= 90", {"ZENITH_ANGLE": col})
    np.testing.assert_array_equal(got, [True, True, True])


def test_logical_operators_and_spellings(cols):
    q, c, s = cols["DATA_QUAL"], cols["LAT_CONFIG"], cols["IN_SAA"]
    want_or = (q > 0) | (c == 1)
    np.testing.assert_array_equal(run("DATA_QUAL>0 || LAT_CONFIG==1", cols), want_or)
    np.testing.assert_array_equal(run("DATA_QUAL>0 .or. LAT_CONFIG==1", cols), want_or)
    np.testing.assert_array_equal(run("DATA_QUAL>0 .AND. LAT_CONFIG==1", cols), (q > 0) & (c == 1))
    np.testing.assert_array_equal(run("!IN_SAA", cols), ~s)
    np.testing.assert_array_equal(run(".not. IN_SAA", cols), ~s)
    np.testing.assert_array_equal(run("IN_SAA == F", cols), ~s)
    np.testing.assert_array_equal(run("IN_SAA != T", cols), ~s)
    np.testing.assert_array_equal(run("!(DATA_QUAL>0)", cols), ~(q > 0))


def test_constants_broadcast():
    cols = {"X": np.arange(4.0)}
    np.testing.assert_array_equal(run("T", cols), [True] * 4)
    np.testing.assert_array_equal(run("F || X > 2", cols), [False, False, False, True])
    np.testing.assert_array_equal(evaluate(parse("1 < 2"), {}, nrows=3), [True] * 3)


def test_vector_element_is_one_based(cols):
    pos = cols["SC_POSITION"].astype(np.float64)
    np.testing.assert_array_equal(run("SC_POSITION[1] > 0", cols), pos[:, 0] > 0)
    np.testing.assert_array_equal(
        run("sc_position[3] < SC_POSITION[2]", cols), pos[:, 2] < pos[:, 1]
    )


def test_integer_arithmetic_is_c_long():
    cols = {"A": np.array([7, -7, 7, -7, 5], dtype=">i4"), "B": np.array([2, 2, -2, -2, 0], ">i2")}
    # C truncating division: 7/2=3, -7/2=-3, 7/-2=-3, -7/-2=3; x/0 is null → row rejected
    np.testing.assert_array_equal(run("A/B == 3", cols), [True, False, False, True, False])
    np.testing.assert_array_equal(run("A/B == -3", cols), [False, True, True, False, False])
    # mixed LONG/DOUBLE goes to double
    np.testing.assert_array_equal(run("A/2. == 3.5", cols), [True, False, True, False, False])


def test_angsep_haversine_vs_numpy(cols):
    ra, dec = 83.6331, 22.0145
    got = run(f"angsep(RA_ZENITH,DEC_ZENITH,{ra},{dec}) < 75", cols)
    r1 = cols["RA_ZENITH"].astype(np.float64)
    d1 = cols["DEC_ZENITH"].astype(np.float64)
    # cfitsio's operation order: differences in degrees, then scaled by deg = 4 atan(1)/180
    deg = 4 * np.arctan(1.0) / 180
    sra, sdec = np.sin((ra - r1) * deg / 2), np.sin((dec - d1) * deg / 2)
    a = np.clip(sdec * sdec + np.cos(d1 * deg) * np.cos(dec * deg) * sra * sra, 0, 1)
    sep = 2 * np.arctan2(np.sqrt(a), np.sqrt(1 - a)) / deg
    np.testing.assert_array_equal(angsep(r1, d1, ra, dec), sep)  # bit for bit
    np.testing.assert_array_equal(got, sep < 75)
    assert 0 < got.sum() < N
    # and it is the true great-circle distance (astropy, independent formula)
    from astropy.coordinates import SkyCoord

    true = SkyCoord(r1, d1, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).deg
    np.testing.assert_allclose(sep, true, rtol=0, atol=1e-9)
    assert float(angsep(0.0, 0.0, 180.0, 0.0)) == 180.0
    assert float(angsep(10.0, -90.0, 200.0, 90.0)) == 180.0
    assert float(angsep(0.0, 0.0, 90.0, 0.0)) == pytest.approx(90.0, abs=1e-12)


def test_nan_is_null_and_rejected():
    cols = {"X": np.array([1.0, np.nan, 3.0]), "Y": np.array([1, 1, 0])}
    np.testing.assert_array_equal(run("X > 0", cols), [True, False, True])
    np.testing.assert_array_equal(run("X != 5", cols), [True, False, True])
    np.testing.assert_array_equal(run("!(X > 0)", cols), [False, False, False])
    # three-valued logic: F && null = F; T || null = T; T && null = null (rejected)
    np.testing.assert_array_equal(run("X > 0 || Y == 1", cols), [True, True, True])
    np.testing.assert_array_equal(run("!(X > 0 && Y == 0)", cols), [True, True, False])
    np.testing.assert_array_equal(run("X > 0 && Y == 1", cols), [True, False, False])


# --------------------------------------------------------------------------------- precedence


def test_precedence_tree_shape():
    node = parse("A || B && C == 1 + 2 * -D")
    assert isinstance(node, Binary) and node.op == "||"
    right = node.right
    assert isinstance(right, Binary) and right.op == "&&"
    eq = right.right
    assert isinstance(eq, Binary) and eq.op == "=="
    add = eq.right
    assert isinstance(add, Binary) and add.op == "+"
    mul = add.right
    assert isinstance(mul, Binary) and mul.op == "*"
    assert isinstance(mul.right, Unary) and mul.right.op == "-"
    assert parse("a - b - c").left == parse("(a - b) - c").left  # left associative
    assert isinstance(parse("x[2]"), Column) and parse("x[2]").index == 2


def test_precedence_and_or_evaluated(cols):
    q, c, s = cols["DATA_QUAL"], cols["LAT_CONFIG"], cols["IN_SAA"]
    # && binds tighter than ||: the unparenthesised ROI term of gtmktime (spec §4.2)
    got = run("DATA_QUAL>0 || LAT_CONFIG==1 && IN_SAA", cols)
    np.testing.assert_array_equal(got, (q > 0) | ((c == 1) & s))
    assert not np.array_equal(got, ((q > 0) | (c == 1)) & s)
    # relational binds tighter than equality, arithmetic tighter than relational
    a = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(run("X < 2 == T", {"X": a}), [True, False, False])  # (X<2)==T
    np.testing.assert_array_equal(run("X - 1 * 2 > 0", {"X": a}), a - 2 > 0)
    np.testing.assert_array_equal(run("(X - 1) * 2 > 2", {"X": a}), (a - 1) * 2 > 2)
    np.testing.assert_array_equal(run("8 / 2 / 2 == X", {"X": a}), a == 2)


def test_columns_set():
    f = compile_filter("DATA_QUAL>0 && lat_config==1 && angsep(RA_ZENITH,DEC_ZENITH,1,2)<3")
    assert f.columns() == {"DATA_QUAL", "LAT_CONFIG", "RA_ZENITH", "DEC_ZENITH"}
    assert parse("SC_POSITION[2] > 0 && T").columns() == {"SC_POSITION"}


def test_structured_array_input():
    arr = np.zeros(3, dtype=[("Data_Qual", ">i2"), ("X", ">f8")])
    arr["Data_Qual"] = [1, 0, 1]
    np.testing.assert_array_equal(run("DATA_QUAL > 0", arr), [True, False, True])


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expr", "pos", "fragment"),
    [
        ("DATA_QUAL>0 &&", 14, "unexpected end"),
        ("(DATA_QUAL>0", 12, "expected ')'"),
        ("DATA_QUAL>0)", 11, "unexpected token ')'"),
        ("DATA_QUAL > 0 & LAT_CONFIG", 14, "unsupported character '&'"),
        ("DATA_QUAL = 1", 10, "unsupported character '='"),
        ("DATA_QUAL ** 2 > 1", 11, "unexpected token '*'"),
        ("'a' == 1", 0, "unsupported character"),
        ("#TSTART > 0", 0, "unsupported character '#'"),
        ("sqrt(ROCK_ANGLE) < 2", 0, "unsupported function 'sqrt'"),
        ("ABS(1, 2) > 0", 0, "ABS takes 1 argument(s), got 2"),
        ("angsep(1,2,3) > 0", 0, "ANGSEP takes 4"),
        ("X[0] > 1", 2, "1-based"),
        ("", 0, "empty filter"),
        ("  ", 0, "empty filter"),
    ],
)
def test_syntax_errors(expr, pos, fragment):
    with pytest.raises(FilterError) as info:
        compile_filter(expr, tool="gtmktime", file="ft2.fits")
    err = info.value
    assert isinstance(err, ToolError)
    assert err.position == pos
    assert fragment in str(err)
    assert repr(expr) in str(err)
    assert err.tool == "gtmktime" and err.file == "ft2.fits"
    assert str(err).startswith("gtmktime (ft2.fits): ")


@pytest.mark.parametrize(
    ("expr", "pos", "fragment"),
    [
        ("DATA_QUALITY > 0", 0, "unknown column 'DATA_QUALITY'"),
        ("DATA_QUAL + 1", 0, "expression is integer"),
        ("ROCK_ANGLE", 0, "expression is real"),
        ("DATA_QUAL && T", 10, "'&&' needs logical operands"),
        ("!DATA_QUAL", 0, "'!' needs a logical operand"),
        ("IN_SAA == 1", 7, "cannot mix a logical value"),
        ("-IN_SAA", 0, "needs a numeric operand"),
        ("SC_POSITION > 0", 0, "is a vector"),
        ("SC_POSITION[4] > 0", 0, "out of range"),
        ("DATA_QUAL[1] > 0", 0, "not a vector column"),
        ("NAME == 1", 0, "not support"),
    ],
)
def test_evaluation_errors(cols, expr, pos, fragment):
    table = dict(cols, NAME=np.array(["a"] * N))
    with pytest.raises(FilterError) as info:
        compile_filter(expr, tool="gtmktime", file="ft2.fits")(table)
    assert info.value.position == pos
    assert fragment in str(info.value)
    assert info.value.file == "ft2.fits"


def test_no_eval_of_python(cols):
    # Python syntax that would be dangerous under eval() is just a syntax error here.
    for expr in ("__import__('os').system('true')", "DATA_QUAL.__class__", "lambda: 1"):
        with pytest.raises(FilterError):
            run(expr, cols)


def test_angsep_comparison_is_exact_at_the_boundary():
    """``angsep(...) < r`` in a filter decides like cfitsio (libm) even for points a few ulps
    from r — the same single implementation as gtselect's cone (fermipipe.fits.sphere)."""
    from fermipipe.fits import sphere

    ra0, dec0, rad = 194.047, -5.78931, 75.0
    ra, dec = points_on_cone_edge(ra0, dec0, rad, 5000, seed=11)
    table = {"RA_ZENITH": ra, "DEC_ZENITH": dec}
    want = np.array(
        [
            sphere.angsep_scalar(a, b, ra0, dec0) < rad
            for a, b in zip(table["RA_ZENITH"], table["DEC_ZENITH"], strict=True)
        ]
    )
    assert 0.2 < want.mean() < 0.8  # really on the boundary
    got = run(f"angsep(RA_ZENITH,DEC_ZENITH,{ra0},{dec0}) < {rad}", table)
    np.testing.assert_array_equal(got, want)
    # both operand orders, and the same decision as gtselect's cone mask
    flipped = run(f"{rad} > angsep(RA_ZENITH,DEC_ZENITH,{ra0},{dec0})", table)
    np.testing.assert_array_equal(flipped, want)
    cone = sphere.angsep_below(table["RA_ZENITH"], table["DEC_ZENITH"], ra0, dec0, rad)
    np.testing.assert_array_equal(cone, want)
    assert angsep is sphere.angsep  # one implementation

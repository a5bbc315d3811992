"""MET → calendar strings exactly as the Fermitools print them (spec 1.5).

st_facilities ``Util::writeDateKeywords`` goes through astro::JulianDate:
JD = JD(2001-01-01 00:00) + MET/86400 (one float addition); printing subtracts the leap
seconds counted against a fixed threshold list, converts with the IDL DAYCNV algorithm and
*floors* hour, minute, second and the 1e-4 s fraction. The float rounding of a JD near 2.45e6
(ulp ≈ 40 µs) is why MET 538032601 prints ``2018-01-19T05:29:55.9999`` (true UTC 05:29:56).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from fermipipe.fits.keywords import set_card

if TYPE_CHECKING:
    from astropy.io import fits

    from fermipipe.fits.header import Header

__all__ = [
    "date_to_jd",
    "jd_to_date",
    "met_to_date",
    "utc_now_date",
    "write_date_keywords",
]

SECONDS_PER_DAY = 86400.0


def date_to_jd(year: int, month: int, day: int, hours: float = 0.0) -> float:
    """astro::JulianDate(year, month, day, hours).

    Like the C++ constructor, the leap seconds already elapsed at that JD are added (so
    that printing, which subtracts them, gives the calendar time back).
    """
    jd = date_to_jd_plain(year, month, day, hours)
    return jd + _leap_seconds(jd) / SECONDS_PER_DAY


def _threshold(year: int, month: int, day: int, seconds: float) -> float:
    # JD of the leap date plus the leap seconds accumulated so far (as the C++ constants
    # 2453736.5000115740 = 2006-01-01 + 1 s and 2456109.5000231480226 = 2012-07-01 + 2 s).
    a = date_to_jd_plain(year, month, day)
    return a + seconds / SECONDS_PER_DAY


def date_to_jd_plain(year: int, month: int, day: int, hours: float = 0.0) -> float:
    """Calendar date → JD (Meeus-style formula of the astro constructor), no leap seconds."""
    if month <= 2:
        year -= 1
        month += 12
    a = int(year / 100)
    b = 2 - a + int(a / 4)
    c = int(365.25 * year)
    if year < 0:
        c -= 1
    d = int(30.6001 * (month + 1))
    return b + c + d + day + 1720994.5 + hours / 24.0


# Leap seconds since the mission epoch (spec 1.5 list). The first three thresholds are the
# astro constants; for 2015 and 2017 the same pattern (+ leap count so far) is assumed — it
# only matters within a few seconds of the leap itself.
_LEAP_THRESHOLDS: tuple[float, ...] = (
    2453736.5000115740,  # 2006-01-01
    2454832.5000115740,  # 2009-01-01
    2456109.5000231480226,  # 2012-07-01
    _threshold(2015, 7, 1, 3.0),
    _threshold(2017, 1, 1, 4.0),
)


def _leap_seconds(jd: float) -> float:
    return float(sum(1 for t in _LEAP_THRESHOLDS if jd > t))


MISSION_START_JD = date_to_jd(2001, 1, 1, 0.0)  # 2451910.5


def _daycnv(jd_in: float) -> tuple[int, int, int, float]:
    """IDL DAYCNV: JD → (year, month, day, hours)."""
    jd = float(int(jd_in))
    frac = jd_in - jd + 0.5
    if frac >= 1.0:
        frac -= 1.0
        jd += 1.0
    hr = frac * 24.0
    ll = int(jd + 68569)
    n = 4 * ll // 146097
    ll = ll - (146097 * n + 3) // 4
    yr = 4000 * (ll + 1) // 1461001
    ll = ll - 1461 * yr // 4 + 31
    mn = 80 * ll // 2447
    day = ll - 2447 * mn // 80
    ll = mn // 11
    mn = mn + 2 - 12 * ll
    yr = 100 * (n - 49) + yr + ll
    return yr, mn, day, hr


def jd_to_date(jd: float) -> str:
    """``JulianDate::getGregorianDate()``: leap seconds removed, fields floored."""
    jd = jd - _leap_seconds(jd) / SECONDS_PER_DAY
    year, month, day, utc = _daycnv(jd)
    hour = math.floor(utc)
    minute = math.floor(60 * (utc - hour))
    secs = 60 * (60 * (utc - hour) - minute)
    second = math.floor(secs)
    frac = math.floor((secs - math.floor(secs)) * 10000)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{frac:04d}"


def met_to_date(met: float) -> str:
    """MET seconds → ``YYYY-MM-DDThh:mm:ss.ffff`` as in DATE-OBS/DATE-END."""
    return jd_to_date(MISSION_START_JD + float(met) / SECONDS_PER_DAY)


def utc_now_date(now: float | None = None) -> str:
    """Current UTC (or the POSIX time ``now``) through the same JulianDate path (for DATE).

    Whole seconds, like the C ``time()`` the Fermitools use, so values print as
    ``…:ss.0000`` or ``…:ss-1.9999``.
    """
    t = time.gmtime(time.time() if now is None else now)
    hours = t.tm_hour + t.tm_min / 60.0 + t.tm_sec / 3600.0
    return jd_to_date(date_to_jd(t.tm_year, t.tm_mon, t.tm_mday, hours))


_COMMENTS = {
    "DATE": "file creation date (YYYY-MM-DDThh:mm:ss UT)",
    "DATE-OBS": "start date and time of the observation (UTC)",
    "DATE-END": "end date and time of the observation (UTC)",
    "TSTART": "mission time of the start of the observation",
    "TSTOP": "mission time of the end of the observation",
}


def write_date_keywords(
    header: Header | fits.Header, tstart: float, tstop: float, *, now: float | None = None
) -> None:
    """``Util::writeDateKeywords``: DATE (now), DATE-OBS, DATE-END, TSTART, TSTOP, and
    TELAPSE = TSTOP − TSTART only if TELAPSE already exists. Existing cards keep their place
    and comment; missing ones are appended."""
    values: dict[str, Any] = {
        "DATE": utc_now_date(now),
        "DATE-OBS": met_to_date(tstart),
        "DATE-END": met_to_date(tstop),
        "TSTART": float(tstart),
        "TSTOP": float(tstop),
    }
    for key, value in values.items():
        set_card(header, key, value, _COMMENTS[key])
    if "TELAPSE" in header:
        set_card(header, "TELAPSE", float(tstop) - float(tstart))

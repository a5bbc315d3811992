"""Header templates for the gtbin products (CMAP, CCUBE, HEALPIX, LC, PHA1, PHA2).

gtbin creates its output from FITS templates (evtbin:data/Lat*Template, BSD-3, Fermi-LAT
Collaboration) and then overwrites the harvested keywords in place (spec 5.2). The card
sequences below are those templates as they appear in real gtbin outputs (evtbin outref,
gammalib p8v2, Fermitools 2.4 references): same keywords, same order, same blank cards, with
the *template* value of every harvested keyword (TELESCOP, DATE-OBS, TIMESYS, …) so that a
key missing from the input keeps the template's default exactly like gtbin. Structural values
(NAXISn, TFORMn, …) are overwritten when an HDU is built (:mod:`fermipipe.native.gtbin`).

The templates repeat long runs of identical cards (the time keys, the GTI and EBOUNDS
extensions, …). Each run is written once here and every product's template is composed from
them; only what is particular to a product (its columns, HDUCLASn, HISTORY line and the blank
cards the template parser leaves) is spelled out per product. Each template is a plain tuple
of card images (unpadded), built once at import.
"""

from __future__ import annotations

from fermipipe.fits.keywords import TEMPLATE_BINTABLE_COMMENTS, bintable_keywords

__all__ = [
    "CCUBE_EBOUNDS",
    "CCUBE_GTI",
    "CCUBE_PRIMARY",
    "CMAP_GTI",
    "CMAP_PRIMARY",
    "HEALPIX_EBOUNDS",
    "HEALPIX_GTI",
    "HEALPIX_PRIMARY",
    "HEALPIX_SKYMAP",
    "LC_GTI",
    "LC_PRIMARY",
    "LC_RATE",
    "PHA1_EBOUNDS",
    "PHA1_GTI",
    "PHA1_PRIMARY",
    "PHA1_SPECTRUM",
    "PHA2_EBOUNDS",
    "PHA2_GTI",
    "PHA2_PRIMARY",
    "PHA2_SPECTRUM",
]

Cards = tuple[str, ...]


# ------------------------------------------------------------------ card image builders


def _num(key: str, value: int | str, comment: str) -> str:
    """``KEY = value / comment`` with the value right-aligned in columns 11-30 (cfitsio)."""
    return f"{key:<8}= {value!s:>20} / {comment}"


def _str(key: str, value: str, comment: str) -> str:
    """``KEY = 'value' / comment``: string padded to 8 inside the quotes, then to 20."""
    return f"{key:<8}= {_quoted(value):<20} / {comment}"


def _quoted(value: str) -> str:
    """A FITS string value as cfitsio writes it: quoted, padded to 8 characters inside."""
    return f"'{value:<8}'"


def _blank(n: int) -> Cards:
    """``n`` blank cards: the template parser leaves one per blank/comment template line."""
    return ("",) * n


def _primary_head(bitpix: int, axes: tuple[int, ...]) -> Cards:
    """SIMPLE … EXTEND of a template primary HDU (NAXISn = the template's placeholder)."""
    return (
        _num("SIMPLE", "T", "File conforms to NOST standard"),
        _num("BITPIX", bitpix, "Bits per pixel"),
        _num("NAXIS", len(axes), "No data is associated with this header"),
        *(_num(f"NAXIS{i}", n, f"Length of data axis {i}") for i, n in enumerate(axes, 1)),
        _num("EXTEND", "T", "Extensions may be present"),
    )


def _bintable_head(naxis1: int, naxis2: int, tfields: int) -> Cards:
    """XTENSION … TFIELDS of a template BINTABLE (NAXIS1/2 = the template's placeholders)."""
    keywords = bintable_keywords(naxis1, naxis2, tfields, TEMPLATE_BINTABLE_COMMENTS)
    return tuple(
        _str(key, value, comment) if isinstance(value, str) else _num(key, value, comment)
        for key, value, comment in keywords
    )


def _sky_wcs(ctype: tuple[str, str], crval: tuple[str, str], cdelt: tuple[str, str]) -> Cards:
    """The two sky axes of the CMAP/CCUBE templates (values as cfitsio printed them)."""
    return (
        _str("CTYPE1", ctype[0], "RA---%%%, %%% represents the projection method"),
        _num("CRPIX1", "50.5", "Reference pixel"),
        _num("CRVAL1", crval[0], "RA at the reference pixel"),
        _num("CDELT1", cdelt[0], "X-axis incr per pixel of physical coord at posi"),
        _str("CUNIT1", "deg", "Physical unit of X-axis"),
        _str("CTYPE2", ctype[1], "DEC---%%%, %%% represents the projection method"),
        _num("CRPIX2", "50.5", "Reference pixel"),
        _num("CRVAL2", crval[1], "DEC at the reference pixel"),
        _num("CDELT2", cdelt[1], "Y-axis incr per pixel of physical coord at posi"),
        _str("CUNIT2", "deg", "Physical unit of Y-axis"),
        _num("CROTA2", "0.", "Image rotation (deg)"),
    )


def _units(*runs: int | str) -> Cards:
    """The column-unit tail of a template: ints are runs of blank cards, strings TUNITn cards."""
    out: list[str] = []
    for run in runs:
        out.extend(_blank(run) if isinstance(run, int) else (run,))
    return tuple(out)


def _columns(*columns: tuple[str, str, str]) -> Cards:
    """TTYPEn/TFORMn for (name, TFORM, TTYPE comment); every template says "Data format of
    this field" for TFORMn."""
    cards: list[str] = []
    for n, (name, tform, comment) in enumerate(columns, 1):
        cards.append(_str(f"TTYPE{n}", name, comment))
        cards.append(_str(f"TFORM{n}", tform, "Data format of this field"))
    return tuple(cards)


def _tunit(n: int, unit: str) -> str:
    return _str(f"TUNIT{n}", unit, "Unit of this field")


# ------------------------------------------------------------------ shared card runs

_FITS_COMMENTS: Cards = (
    "COMMENT   FITS (Flexible Image Transport System) format is defined in 'Astronomy",
    "COMMENT   and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H",
)
_DATE_FILENAME: Cards = (
    "DATE    =                      / Date file was made",
    "FILENAME=                      / Name of this file",
)
_TELESCOP_INSTRUME: Cards = (
    _str("TELESCOP", "GLAST", "Name of telescope generating data"),
    _str("INSTRUME", "LAT", "Name of instrument generating data"),
)
_OBS_DATES: Cards = (
    "DATE-OBS=                      / Start Date and Time of the observation (UTC)",
    "DATE-END=                      / End Date and Time of the observation (UTC)",
)
_TIME_SYSTEM: Cards = (
    _str("TIMEUNIT", "s", "units for the time related keywords"),
    _num("TIMEZERO", "0.", "clock correction"),
    _str("TIMESYS", "MJD", "Time system used to define time"),
    _str("TIMEREF", "LOCAL", "reference frame used for times"),
    _num("CLOCKAPP", "F", "was a clock drift correction applied"),
    _num("GPS_OUT", "F", "whether GPS time was unavailable at any time"),
)
#: DATE-OBS … GPS_OUT: the time block of (almost) every template HDU.
_OBS_TIMES: Cards = _OBS_DATES + _TIME_SYSTEM
_NDSKEYS: Cards = (_num("NDSKEYS", 0, "Number of data subspace keywords in header"),)
_EQUINOX: Cards = (_num("EQUINOX", "2000.", "Equinox of RA & DEC specifications"),)
_OBSERVER: Cards = ("OBSERVER= 'Michelson'          / PI name",)
_CREATOR: Cards = ("CREATOR =                      / Software and version creating file",)
_EXTVER: Cards = (_num("EXTVER", 1, "auto assigned by template parser"),)
_GTI_RANGE: Cards = (
    "MJDREFI =                      / Integer part of MJD",
    "MJDREFF =                      / Fractional part of MJD",
    "TSTART  =                      / Lower bound of first GTI",
    "TSTOP   =                      / Upper bound of last GTI",
    "EXPOSURE=                      / Total livetime in seconds",
)
_ONTIME: Cards = ("ONTIME  =                      / Sum of all Good Time Intervals",)
_HDUCLASS_OGIP: Cards = (_str("HDUCLASS", "OGIP", "Format confirms to OGIP standard"),)
_GTI_CLASS: Cards = (
    _str("HDUCLASS", "OGIP", "File format is OGIP standard"),
    _str("HDUCLAS1", "GTI", "Contains Good Time Intervals"),
    _str("HDUVERS", "1.2.0", "Version of file format"),
)
_GTI_COLUMNS: Cards = (
    *_columns(
        ("START", "D", "Start time of an interval"),
        ("STOP", "D", "Stop time of an interval"),
    ),
    _str("EXTNAME", "GTI", "Extension name"),
)
_FILTER: Cards = (_str("FILTER", "NONE", "Instrument filter in use (if any)"),)
_CHANTYPE: Cards = (_str("CHANTYPE", "PI", "Energy channel type"),)
_DETCHANS_100: Cards = (_num("DETCHANS", 100, "Total number of detector channels available."),)
_VERSION_OF_FORMAT: Cards = (_str("HDUVERS", "1.2.0", "Version number of the format"),)
_VERSION_OF_DOCUMENT: Cards = (
    _str("HDUVERS", "1.2.0", "Version number of the format (this document des"),
)
#: HDUCLAS2/3 of the count spectra and light curve (OGIP memo OGIP-92-007).
_TOTAL_COUNT: Cards = (
    _str("HDUCLAS2", "TOTAL", "Type of data stored"),
    _str("HDUCLAS3", "COUNT", "Further details of type of data stored"),
)
#: OGIP PHA keywords with no meaning for the LAT, at their template defaults.
_PHA_DEFAULTS: Cards = (
    _str("BACKFILE", "NONE", "Name of background file (if any)"),
    _str("CORRFILE", "NONE", "Name of correction file (if any)"),
    _num("CORRSCAL", "1.", "Correction scaling factor."),
    _str("RESPFILE", "NONE", "Name of redistribution matrix file (if any)"),
    _str("ANCRFILE", "NONE", "Name of ancillary response file (if any)"),
    _num("SYS_ERR", "0.", "Fractional systematic error"),
    _num("QUALITY", 0, "Data quality flag"),
    _num("GROUPING", 0, "Data grouping flag"),
    _num("AREASCAL", "1.", "Area scaling factor"),
    _num("BACKSCAL", "1.", "Scaling factor to be applied to Bkgdfile"),
    _str("CHANTYPE", "PI", "Whether channels used in the file have been cor"),
)
_OBJECT: Cards = (_str("OBJECT", "", "Observed object"),)
_RADECSYS: Cards = ("RADECSYS=                      / Coordinate frame used for EQUINOX",)

# HISTORY lines: the CVS id of the template file each HDU was built from (cut at column 80
# and continued, exactly as cfitsio wrapped them).
_HISTORY_COUNTMAP_1_3: Cards = (
    "HISTORY                   LatCountMapTemplate,v 1.3 2005/04/05 21:06:39 peachey",
    "HISTORY Exp",
)
_HISTORY_COUNTMAP_1_4: Cards = (
    "HISTORY                   LatCountMapTemplate,v 1.4 2007/05/03 elwinter Exp",
)
_HISTORY_HEALPIX: Cards = (
    "HISTORY                   LatHealpixTemplate,v 1.0 2012/05/10 cohen Exp",
)
_HISTORY_LIGHTCURVE: Cards = (
    "HISTORY                   LatLightCurveTemplate,v 1.4 2005/04/05 21:06:39 peache",
    "HISTORY y Exp",
)
_HISTORY_SINGLEBINNED: Cards = (
    "HISTORY                   LatSingleBinnedTemplate,v 1.6 2005/04/05 21:06:39 peac",
)
_HISTORY_BINNED_PRIMARY: Cards = (
    "HISTORY                     LatBinnedTemplate,v 1.7 2005/08/02 14:14:06 peachey",
    "HISTORY Exp",
)
_HISTORY_BINNED: Cards = (
    "HISTORY                   LatBinnedTemplate,v 1.7 2005/08/02 14:14:06 peachey Ex",
)


# ------------------------------------------------------------------ HDU shapes


def _primary(bitpix: int, axes: tuple[int, ...], wcs: Cards, history: Cards, *, sky: bool) -> Cards:
    """A template primary HDU; ``sky`` products also carry NDSKEYS and EQUINOX."""
    return (
        _primary_head(bitpix, axes)
        + _FITS_COMMENTS
        + wcs
        + _DATE_FILENAME
        + _TELESCOP_INSTRUME
        + _OBS_TIMES
        + (_NDSKEYS + _EQUINOX if sky else ())
        + _OBSERVER
        + _CREATOR
        + history
    )


def _gti(naxis2: int, keys: Cards, history: Cards, tail: Cards) -> Cards:
    """A template GTI extension: START/STOP columns, then the product's own key order."""
    return (
        _bintable_head(16, naxis2, 2)
        + _GTI_COLUMNS
        + _TELESCOP_INSTRUME
        + keys
        + _CREATOR
        + history
        + tail
        + _EXTVER
    )


#: GTI keys of the count-map, healpix and light-curve templates.
_GTI_KEYS_MAP: Cards = _GTI_RANGE + _GTI_CLASS + _OBS_TIMES
#: GTI keys of the spectrum templates (ONTIME first).
_GTI_KEYS_SPECTRUM: Cards = _GTI_CLASS + _ONTIME + _GTI_RANGE
_GTI_UNITS = (_tunit(1, "s"), 1, _tunit(2, "s"))


def _ebounds_columns(detector: str, tform: str) -> Cards:
    return _columns(
        ("CHANNEL", "I", "Raw channel number"),
        ("E_MIN", tform, f"Lower boundary of {detector}detector channel"),
        ("E_MAX", tform, f"Upper boundary of {detector}detector channel"),
    )


#: EBOUNDS columns of LatCountMap/Healpix/BinnedTemplate; LatSingleBinnedTemplate words them
#: without "the" and with TFORM 'E'.
_EBOUNDS_COLUMNS: Cards = _ebounds_columns("the ", "1E")


def _ebounds(naxis2: int, columns: Cards, detchans: Cards, history: Cards, tail: Cards) -> Cards:
    """A template EBOUNDS extension (CHANNEL, E_MIN, E_MAX in keV)."""
    return (
        _bintable_head(10, naxis2, 3)
        + columns
        + (_str("EXTNAME", "EBOUNDS", "Extension name"),)
        + _TELESCOP_INSTRUME
        + _FILTER
        + _CHANTYPE
        + detchans
        + _HDUCLASS_OGIP
        + (
            _str("HDUCLAS1", "RESPONSE", "Extension contains response data"),
            _str("HDUCLAS2", "EBOUNDS", "Extension contains response matrix"),
        )
        + _VERSION_OF_FORMAT
        + _OBS_TIMES
        + _CREATOR
        + history
        + tail
        + _EXTVER
    )


_KEV = (_tunit(2, "keV"), _tunit(3, "keV"))


def _spectrum_class(hduclas4: str, hduvers: Cards) -> Cards:
    """HDUCLASS … DETCHANS of the PHA1/PHA2 SPECTRUM templates."""
    return (
        _HDUCLASS_OGIP
        + (_str("HDUCLAS1", "SPECTRUM", "PHA dataset (OGIP memo OGIP-92-007)"),)
        + _TOTAL_COUNT
        + (_str("HDUCLAS4", hduclas4, "Single PHA dataset"),)
        + hduvers
        + _DETCHANS_100
    )


def _spectrum_keys(filter_comment: str) -> Cards:
    """BACKFILE … NDSKEYS of the PHA1/PHA2 SPECTRUM templates (FILTER's comment differs)."""
    return (
        _PHA_DEFAULTS
        + (_str("FILTER", "NONE", filter_comment),)
        + _OBJECT
        + _EQUINOX
        + _RADECSYS
        + _OBS_TIMES
        + _NDSKEYS
    )


# ------------------------------------------------------------------ CMAP / CCUBE
# fmt: off

CMAP_PRIMARY: Cards = _primary(
    32, (100, 100),
    _sky_wcs(("RA---AIT", "DEC--AIT"), ("83.4", "22."), ("-0.1", "0.1")),
    _HISTORY_COUNTMAP_1_3, sky=True,
)
CMAP_GTI: Cards = _gti(13, _GTI_KEYS_MAP, _HISTORY_COUNTMAP_1_3, _units(4, *_GTI_UNITS))

CCUBE_PRIMARY: Cards = _primary(
    32, (100, 100, 20),
    _sky_wcs(("GLON-CAR", "GLAT-CAR"), ("184.557460101", "-5.78434644902"), ("-0.2", "0.2"))
    + (
        _str("CTYPE3", "Energy", "Energy"),
        _num("CRPIX3", 1, "Reference pixel"),
        _num("CRVAL3", "200.", "Energy at the reference pixel"),
        _num("CDELT3", "51.7850823588334", "Z-axis incr per pixel of physical coord at posi"),
        _str("CUNIT3", "MeV", "Physical unit of Z-axis"),
    ),
    _HISTORY_COUNTMAP_1_3, sky=True,
)
CCUBE_EBOUNDS: Cards = _ebounds(
    20, _EBOUNDS_COLUMNS,
    ("DETCHANS=                      / Total number of detector channels available.",),
    _HISTORY_COUNTMAP_1_4, _units(3, _KEV[0], 1, _KEV[1]),
)
CCUBE_GTI: Cards = _gti(
    15, _GTI_KEYS_MAP + _NDSKEYS, _HISTORY_COUNTMAP_1_3, _units(4, *_GTI_UNITS)
)

# ------------------------------------------------------------------ HEALPIX

HEALPIX_PRIMARY: Cards = _primary(32, (), (), _HISTORY_HEALPIX, sky=True)
HEALPIX_SKYMAP: Cards = (
    _bintable_head(40, 3072, 5)
    + (
        _str("EXTNAME", "SKYMAP", "Extension name"),
        "TELESCOP= 'GLAST   '",
        "INSTRUME= 'LAT     '",
    )
    + _FILTER
    + _CHANTYPE
    + _HDUCLASS_OGIP
    + (
        _str("HDUCLAS1", "RESPONSE", "Extension contains response data"),
        _str("HDUCLAS2", "SKYMAP", "Extension contains response matrix"),
        "PIXTYPE = 'HEALPIX '",
    )
    + _VERSION_OF_FORMAT
    + _OBS_TIMES
    + _CREATOR
    + _HISTORY_HEALPIX
    + _EXTVER
)
HEALPIX_EBOUNDS: Cards = _ebounds(
    5, _EBOUNDS_COLUMNS, (), _HISTORY_HEALPIX, _units(4, _KEV[0], 1, _KEV[1])
)
# The healpix GTI comes from the count-map template (its HISTORY says so).
HEALPIX_GTI: Cards = _gti(
    15, _GTI_KEYS_MAP + _NDSKEYS, _HISTORY_COUNTMAP_1_4, _units(5, *_GTI_UNITS)
)

# ------------------------------------------------------------------ LC

LC_PRIMARY: Cards = _primary(8, (), (), _HISTORY_LIGHTCURVE, sky=False)
LC_RATE: Cards = (
    _bintable_head(24, 24, 4)
    + (
        *_columns(
            ("TIME", "D", "Time of the bin center"),
            ("TIMEDEL", "D", "Bin size"),
            ("COUNTS", "J", "Photon counts"),
            ("ERROR", "E", "Statistical error"),
        ),
        _num("ERROR", "0.", "Statistical error"),
        _str("EXTNAME", "RATE", "Extension name"),
    )
    + _TELESCOP_INSTRUME
    + _HDUCLASS_OGIP
    + ("HDUCLAS1= 'LIGHTCURVE'         / PHA dataset (OGIP memo OGIP-92-007)",)
    + _TOTAL_COUNT
    + _VERSION_OF_DOCUMENT
    + (_GTI_RANGE[4],)  # EXPOSURE
    + _FILTER
    + _OBJECT
    # LatLightCurveTemplate writes EQUINOX as an integer, unlike the other templates.
    + (_num("EQUINOX", 2000, "Equinox of RA & DEC specifications"),)
    + _RADECSYS
    + _OBS_TIMES
    + _GTI_RANGE[:4]  # MJDREFI … TSTOP
    + _NDSKEYS
    + _CREATOR
    + _HISTORY_LIGHTCURVE
    + _units(2, _tunit(1, "s"), 1, _tunit(2, "s"), 1, _tunit(3, "Counts"))
    + _EXTVER
)
LC_GTI: Cards = _gti(15, _GTI_KEYS_MAP, _HISTORY_LIGHTCURVE, _units(4, *_GTI_UNITS))

# ------------------------------------------------------------------ PHA1

PHA1_PRIMARY: Cards = _primary(8, (), (), _HISTORY_SINGLEBINNED, sky=False)
PHA1_SPECTRUM: Cards = (
    _bintable_head(10, 100, 3)
    + (
        *_columns(
            ("CHANNEL", "I", "Label for this field"),
            ("COUNTS", "J", "Count rate in each bin"),
            ("STAT_ERR", "E", "Statistical error"),
        ),
        _str("EXTNAME", "SPECTRUM", "Extension name"),
    )
    + _TELESCOP_INSTRUME
    + _spectrum_class("Type:I", _VERSION_OF_DOCUMENT)
    + _GTI_RANGE[2:]  # TSTART, TSTOP, EXPOSURE
    + _spectrum_keys("Instrument filter in use (if any)")
    + _CREATOR
    + _HISTORY_SINGLEBINNED
    + _units(3, _tunit(2, "Counts"))
    + _EXTVER
)
PHA1_EBOUNDS: Cards = _ebounds(
    100, _ebounds_columns("", "E"), _DETCHANS_100, _HISTORY_SINGLEBINNED,
    _units(3, _KEV[0], 2, _KEV[1]),
)
PHA1_GTI: Cards = _gti(
    13, _GTI_KEYS_SPECTRUM + _TIME_SYSTEM + _OBS_DATES, _HISTORY_SINGLEBINNED,
    _units(2, *_GTI_UNITS),
)

# ------------------------------------------------------------------ PHA2

PHA2_PRIMARY: Cards = _primary(8, (), (), _HISTORY_BINNED_PRIMARY, sky=False)
PHA2_SPECTRUM: Cards = (
    _bintable_head(1027, 10, 8)
    + (
        *_columns(
            ("TSTART", "D", "Label for this field"),
            ("TELAPSE", "D", "Label for this field"),
            ("SPEC_NUM", "I", "Label for this field"),
            ("CHANNEL", "100I", "Label for this field"),
            ("COUNTS", "100J", "Counts in each bin"),
            ("STAT_ERR", "100E", "Statistical error"),
            ("ROWID", "A", "Unique identifier for each spectrum"),
            ("EXPOSURE", "D", "Label for this field"),
        ),
        _str("EXTNAME", "SPECTRUM", "Extension name"),
    )
    + _TELESCOP_INSTRUME
    + _spectrum_class("Type:II", _VERSION_OF_FORMAT)
    + _spectrum_keys("Instrument filter in use")
    + _CREATOR
    + _HISTORY_BINNED
    + _units(7, _tunit(5, "Counts"), 13, _tunit(8, "s"))
    + _EXTVER
)
PHA2_EBOUNDS: Cards = _ebounds(
    100, _EBOUNDS_COLUMNS, _DETCHANS_100, _HISTORY_BINNED, _units(3, _KEV[0], 1, _KEV[1])
)
PHA2_GTI: Cards = _gti(13, _GTI_KEYS_SPECTRUM + _OBS_TIMES, _HISTORY_BINNED, ())

# fmt: on

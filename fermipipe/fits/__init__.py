"""The shared FITS ground of the native tools.

Modules (import them directly; nothing is imported here so that ``import fermipipe.fits.gti``
stays cheap):

* ``header``    — :class:`~fermipipe.fits.header.Header`: fast card-list header, no astropy
* ``gti``       — :class:`~fermipipe.fits.gti.Gti` algebra and GTI HDU I/O
* ``dss``       — Data Sub-Space cuts: parse, merge (``Cuts.add``), write, cfitsio filter text
* ``dates``     — MET → DATE-OBS/DATE-END strings, ``write_date_keywords``
* ``table``     — raw memmapped BINTABLE rows and the fast FITS writer
* ``writing``   — ``atomic_output``, checksums, FILENAME
* ``keywords``  — header cards formatted like cfitsio (``%.15G`` doubles), BINTABLE mandatory keys
* ``skycoords`` — equatorial → galactic rotation (current and pre-2016 angles)
* ``sphere``    — cfitsio's ``angsep``, the package's single implementation
* ``filterexpr``— the cfitsio row-filter subset (gtmktime's FT2 filter)
* ``sniff``     — what a file is from its first bytes (FITS, gzipped FITS, other)

gtselect and gtmktime must not import astropy (its import costs more than their work): the
modules above import it only inside the functions that take or build astropy objects.
"""

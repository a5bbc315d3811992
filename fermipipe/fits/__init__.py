"""The shared FITS ground of the native tools.

Modules (import them directly; nothing is imported here so that ``import fermipipe.fits.gti``
stays cheap):

* ``gti``       — :class:`~fermipipe.fits.gti.Gti` algebra and GTI HDU I/O
* ``dss``       — Data Sub-Space cuts: parse, merge (``Cuts.add``), write, cfitsio filter text
* ``dates``     — MET → DATE-OBS/DATE-END strings, ``write_date_keywords``
* ``table``     — raw memmapped BINTABLE rows and the fast FITS writer
* ``writing``   — ``atomic_output``, checksums, FILENAME
* ``keywords``  — header cards formatted like cfitsio (``%.15G`` doubles)
* ``skycoords`` — equatorial → galactic rotation (current and pre-2016 angles)
"""

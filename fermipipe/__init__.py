"""fermipipe: Fermi-LAT data reduction at scale.

The science and file logic lives here and never imports Prefect; ``tasks/`` and ``flows/``
are thin orchestration layers over it.
"""

__version__ = "0.1.0"

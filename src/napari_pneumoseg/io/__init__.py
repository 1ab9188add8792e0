"""File formats for results: tables now; masks (NRRD, NIfTI, DICOM-SEG) as they land."""

from .atomic import atomic_path
from .table import write_csv

__all__ = ["atomic_path", "write_csv"]

"""File formats for results: tables (CSV) and masks (NRRD / .seg.nrrd, NIfTI, DICOM-SEG)."""

from .atomic import atomic_path
from .grid import Grid, MaskFile, MaskFileError, MaskGeometryError, Segment, align_to
from .masks import READ_SUFFIXES, WRITE_SUFFIXES, load_mask, mask_format, read_mask, write_mask
from .table import write_csv

__all__ = [
    "atomic_path", "write_csv",
    "read_mask", "write_mask", "load_mask", "mask_format", "align_to",
    "Grid", "MaskFile", "Segment", "MaskFileError", "MaskGeometryError",
    "READ_SUFFIXES", "WRITE_SUFFIXES",
]

"""CT volumes: the data model and the DICOM reader."""

from .dicom import read_ct
from .volume import CTReadError, CTVolume
from .write import write_dicom_series

__all__ = ["CTVolume", "CTReadError", "read_ct", "write_dicom_series"]

"""CT volumes: the data model and the DICOM reader."""

from .dicom import read_ct
from .volume import CTReadError, CTVolume

__all__ = ["CTVolume", "CTReadError", "read_ct"]

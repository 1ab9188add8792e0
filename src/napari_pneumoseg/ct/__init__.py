"""CT volumes: the data model and the DICOM reader."""

from .dicom import read_ct
from .volume import GEOMETRY_KEY, CTReadError, CTVolume, ct_from_geometry, geometry_metadata
from .write import write_dicom_series

__all__ = ["CTVolume", "CTReadError", "read_ct", "write_dicom_series", "ct_from_geometry",
           "geometry_metadata", "GEOMETRY_KEY"]

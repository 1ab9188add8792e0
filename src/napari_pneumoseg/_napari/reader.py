"""npe2 reader hook: a DICOM folder, file or list of files becomes a CT Image layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..ct import CTVolume, geometry_metadata, read_ct
from ..ct.dicom import first_dicom_file, looks_like_dicom

PathOrPaths = Union[str, list[str]]

#: Contrast limits for a chest CT shown without a DICOM window: lung and soft tissue both visible.
DEFAULT_CONTRAST_HU = (-1000.0, 400.0)


def get_reader(path: PathOrPaths) -> Optional[Callable]:
    """Return the CT reader if ``path`` holds DICOM, else None (so napari asks others).

    Cheap, as napari asks every reader on the GUI thread: a folder is accepted
    on the first DICOM file found (:func:`~napari_pneumoseg.ct.dicom.first_dicom_file`),
    without listing the whole tree; the reading itself checks everything.
    """
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        p = Path(p)
        if p.is_dir():
            if first_dicom_file(p) is None:
                return None
        elif not (p.is_file() and looks_like_dicom(p)):
            return None
    return read_ct_layers


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def read_ct_layers(path: PathOrPaths) -> list[tuple[Any, dict, str]]:
    """Read the CT (or a DICOM-SEG file, as Labels) and describe it as napari layer data."""
    single = path[0] if isinstance(path, list) and len(path) == 1 else path
    if isinstance(single, str) and Path(single).is_file() and _sop_class(single) == SEGMENTATION_STORAGE:
        from .mask_io import dicom_seg_layer_data

        return dicom_seg_layer_data(single)
    ct = read_ct(path)
    return [ct_layer_data(ct, source=path)]


def _sop_class(file: str) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(file, stop_before_pixels=True,
                                   specific_tags=["SOPClassUID"]).get("SOPClassUID", ""))
    except Exception:
        return ""


def ct_layer_data(ct: CTVolume, source: PathOrPaths = "") -> tuple[Any, dict, str]:
    """A napari ``(data, kwargs, 'image')`` tuple with the CT's physical geometry."""
    meta = ct.metadata
    window = meta.get("window")
    if window:
        center, width = window
        limits = (center - width / 2, center + width / 2)
        if limits[1] - limits[0] < 200:  # a narrow stored window is useless for a chest overview
            limits = DEFAULT_CONTRAST_HU
    else:
        limits = DEFAULT_CONTRAST_HU
    description = meta.get("series_description") or ""
    first = source[0] if isinstance(source, list) and source else source
    base = os.path.basename(os.path.normpath(str(first))) if first else "CT"
    name = f"{base} {description}".strip() if description and description not in base else base
    kwargs = {
        "name": name,
        "scale": tuple(ct.spacing),
        "translate": ct.translate,
        "contrast_limits": limits,
        "colormap": "gray",
        "metadata": geometry_metadata(ct),
    }
    return ct.hu, kwargs, "image"


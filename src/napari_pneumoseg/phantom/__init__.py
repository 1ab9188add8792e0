"""Synthetic chest CT with a known pneumothorax, for tests, benchmarks and demos.

No public pneumothorax CT comes with masks, so the project makes its own
patients. :func:`make_phantom` paints a supine, head-first axial chest CT in
HU from implicit functions in 3-D and collapses one or both lungs away from
the chest wall; the ground truth is voxelised from the same implicit
function. :func:`write_phantom_case` writes one as DICOM plus an NRRD mask.

Nothing here imports napari or Qt; the napari sample data built from a
phantom lives in :mod:`napari_pneumoseg._napari._sample_data`.

Public names
------------
Phantom
    A phantom: ``ct``, ``truth``, ``info`` (and ``labels`` on request).
make_phantom
    Make one for a seed, side, size and grid.
write_phantom_case
    Write one as a case folder (DICOM series, ``truth.nrrd``, ``info.json``).
SIDES, SIZES
    The accepted ``side`` and ``size`` arguments.
LABELS, HU
    Tissue labels of ``Phantom.labels`` and the HU painted for each tissue.
DEFAULT_SHAPE_YX, DEFAULT_SPACING, CHEST_LENGTH_MM, FOV_MM
    The default grid and the chest length and field of view it is scaled to.
"""

from ._make import (
    CHEST_LENGTH_MM,
    DEFAULT_SHAPE_YX,
    DEFAULT_SPACING,
    FOV_MM,
    SIDES,
    SIZES,
    Phantom,
    make_phantom,
)
from ._tissues import HU, LABELS
from ._write import write_phantom_case

__all__ = [
    "Phantom", "make_phantom", "write_phantom_case",
    "SIDES", "SIZES", "LABELS", "HU",
    "DEFAULT_SHAPE_YX", "DEFAULT_SPACING", "CHEST_LENGTH_MM", "FOV_MM",
]

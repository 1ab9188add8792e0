"""Body outline and the air inside it, from HU thresholds alone (no network)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Tissue is denser than this; air and lung are below it.
BODY_HU = -400.0


def body_mask(hu: np.ndarray, threshold: float = BODY_HU) -> np.ndarray:
    """Per slice: the largest connected region denser than ``threshold``, holes filled.

    Filling the holes puts lungs, airways and pleural air inside the body, while
    air around the patient (and under the table) stays outside.
    """
    out = np.zeros(hu.shape, dtype=bool)
    for k in range(hu.shape[0]):
        dense = hu[k] > threshold
        labels, n = ndimage.label(dense)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        out[k] = ndimage.binary_fill_holes(labels == sizes.argmax())
    return out


def internal_air_mask(hu: np.ndarray, threshold: float = BODY_HU) -> np.ndarray:
    """Voxels below ``threshold`` HU inside the body: lungs, airways, pneumothorax, bowel gas."""
    return body_mask(hu, threshold) & (hu < threshold)

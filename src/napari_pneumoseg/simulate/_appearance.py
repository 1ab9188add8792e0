"""How the new content looks: the visceral pleural line and the scanner's blur.

The air itself comes from the scan's own air model (:mod:`napari_pneumoseg.ct.noise`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..ct.noise import BLUR_PX


def pleural_line(lung: np.ndarray, air: np.ndarray) -> np.ndarray:
    """Lung voxels next to pleural air in their slice (8-neighbours): where the visceral pleura shows.

    Examples
    --------
    >>> air = np.zeros((1, 5, 5), bool); air[0, :, :2] = True
    >>> pleural_line(~air, air)[0].sum(axis=0).tolist()
    [0, 0, 5, 0, 0]
    """
    ring = np.zeros((3, 3, 3), bool)
    ring[1] = True
    return lung & ndimage.binary_dilation(air, structure=ring)


def edge_band(air: np.ndarray) -> np.ndarray:
    """The pixels on both sides of the air's edge (in-plane, 4-neighbours): where new edges are blurred.

    Examples
    --------
    >>> air = np.zeros((1, 1, 7), bool); air[0, 0, :3] = True
    >>> edge_band(air)[0, 0].astype(int).tolist()
    [0, 0, 1, 1, 0, 0, 0]
    """
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    grown = ndimage.binary_dilation(air, structure=cross)
    shrunk = ndimage.binary_erosion(air, structure=cross, border_value=1)
    return grown & ~shrunk


def blur(hu: np.ndarray, sigma_px: float = BLUR_PX) -> np.ndarray:
    """In-plane Gaussian blur (float32), as the scanner blurs an edge."""
    return ndimage.gaussian_filter(hu.astype(np.float32, copy=False), (0, sigma_px, sigma_px), mode="nearest")

"""The CT volume every part of the plugin passes around: HU voxels plus patient geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


#: Rows are the LPS unit vectors of the (z, y, x) axes of a standard axial stack:
#: z towards superior, y towards posterior, x towards the patient's left.
STANDARD_AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
STANDARD_AXIAL.setflags(write=False)


class CTReadError(ValueError):
    """A CT could not be read; the message names the path and what is wrong."""


@dataclass
class CTVolume:
    """A CT series as Hounsfield units on a regular grid, with its place in the patient.

    Conventions (all in the DICOM patient frame, LPS, millimetres):

    - ``hu`` is indexed ``(z, y, x)``: slice, row, column.
    - ``spacing`` is ``(z, y, x)`` in mm; ``z`` is the distance between slice
      positions along the slice normal (not SliceThickness).
    - ``origin`` is the LPS position ``(x, y, z)`` of voxel ``hu[0, 0, 0]``.
    - ``direction`` is a 3x3 matrix whose rows are the LPS unit vectors of the
      array axes z, y and x, so the LPS position of index ``(k, j, i)`` is
      ``origin + (np.array([k, j, i]) * spacing) @ direction``.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: STANDARD_AXIAL.copy())
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hu = np.asarray(self.hu)
        if self.hu.ndim != 3:
            raise ValueError(f"CT must be 3-D (z, y, x), got shape {self.hu.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != 3 or not all(np.isfinite(self.spacing)) or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers in mm, got {self.spacing}")
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (mm^3 / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_lps(self, index) -> np.ndarray:
        """LPS positions (mm) of voxel indices given as ``(..., 3)`` in (z, y, x) order."""
        idx = np.asarray(index, dtype=float)
        return np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction

    @property
    def translate(self) -> tuple[float, float, float]:
        """Where voxel ``hu[0, 0, 0]`` sits along the array axes (z, y, x), in mm.

        This is napari's layer ``translate``: layers of one CT (image, masks)
        given the CT's ``scale`` and this ``translate`` overlay exactly.
        """
        return tuple(float(v) for v in self.direction @ np.asarray(self.origin))

    def geometry(self) -> dict[str, Any]:
        """Plain-data geometry, for layer metadata and file headers."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
        }

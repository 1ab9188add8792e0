"""The CT volume every part of the plugin passes around: HU voxels plus patient geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

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
        """LPS positions of voxel indices.

        Parameters
        ----------
        index : array_like, shape (..., 3)
            Voxel indices in (z, y, x) order (fractional indices are fine).

        Returns
        -------
        ndarray, shape (..., 3)
            LPS positions ``(x, y, z)`` in mm.

        Examples
        --------
        >>> ct = CTVolume(hu=np.zeros((2, 2, 2)), spacing=(5.0, 0.5, 0.5), origin=(-10.0, 0.0, 100.0))
        >>> ct.index_to_lps([1, 0, 2]).tolist()
        [-9.0, 0.0, 105.0]
        """
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
        """The geometry as plain data, for layer metadata and file headers.

        Returns
        -------
        dict
            ``shape``, ``spacing``, ``origin`` and ``direction`` as lists. This is
            what :func:`ct_from_geometry` reads back from a layer's
            :data:`GEOMETRY_KEY` entry.

        Examples
        --------
        >>> CTVolume(hu=np.zeros((2, 3, 4)), spacing=(2.5, 1.0, 1.0)).geometry()["shape"]
        [2, 3, 4]
        """
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
        }


#: Key of the layer metadata entry that holds a CT's geometry (``shape``, ``spacing``,
#: ``origin``, ``direction``, ``warnings`` and the series metadata), as the reader
#: writes it. See :func:`ct_from_geometry`.
GEOMETRY_KEY = "pneumoseg_ct"

_GEOMETRY_FIELDS = ("shape", "spacing", "origin", "direction", "warnings")


def geometry_metadata(ct: CTVolume) -> dict[str, Any]:
    """The metadata a viewer layer keeps for ``ct``: what :func:`ct_from_geometry` reads back.

    Parameters
    ----------
    ct : CTVolume
        The volume.

    Returns
    -------
    dict
        ``{GEOMETRY_KEY: {shape, spacing, origin, direction, warnings, **ct.metadata}}``,
        plain data.

    Examples
    --------
    >>> ct = CTVolume(np.zeros((2, 3, 4)), spacing=(2.5, 0.7, 0.7), origin=(1.0, 2.0, 3.0))
    >>> back, notes = ct_from_geometry(ct.hu, scale=ct.spacing, metadata=geometry_metadata(ct))
    >>> back.origin == ct.origin and notes == []
    True
    """
    return {GEOMETRY_KEY: {**ct.geometry(), "warnings": list(ct.warnings), **ct.metadata}}


def physical_spacing(scale) -> Optional[tuple[float, float, float]]:
    """A viewer layer's ``scale`` as a voxel size in mm, or None when it says nothing.

    Parameters
    ----------
    scale : sequence of float or None
        A layer's ``scale``; only the last three entries (z, y, x) are used.

    Returns
    -------
    tuple of float or None
        Those entries, or None for None or napari's default unit scale (all ones).

    Examples
    --------
    >>> physical_spacing((2.5, 0.7, 0.7)), physical_spacing((1, 1, 1)), physical_spacing(None)
    ((2.5, 0.7, 0.7), None, None)
    """
    if scale is None:
        return None
    values = tuple(float(s) for s in np.asarray(scale, float)[-3:])
    return None if np.allclose(values, 1.0) else values


def ct_from_geometry(hu, scale=None, translate=None, metadata: Optional[Mapping[str, Any]] = None,
                     *, name: str = "the CT") -> tuple[CTVolume, list[str]]:
    """Build a CTVolume from an HU array and the geometry a viewer layer carries.

    Use it wherever a CT comes from something other than a file: an image layer's
    ``data``, ``scale``, ``translate`` and ``metadata``, or the same values passed
    on to a job. The result says what it had to assume, in the notes.

    Parameters
    ----------
    hu : array_like, shape (z, y, x)
        The CT in Hounsfield units. It is not copied if it already is an ndarray.
    scale : sequence of float, optional
        Voxel size in mm along the array axes (a layer's ``scale``; only the last
        three entries are used). None, or napari's default of all ones, means "not
        known". Then the ``spacing`` in the geometry metadata is used, and failing
        that :data:`~napari_pneumoseg.measure.DEFAULT_SLICE_SPACING_MM` slices and
        :data:`~napari_pneumoseg.measure.DEFAULT_PIXEL_SPACING_MM` pixels (noted).
    translate : sequence of float, optional
        Position in mm of voxel ``hu[0, 0, 0]`` along the array axes (a layer's
        ``translate``; last three entries). It is used for the origin only when the
        geometry metadata has none: ``origin = direction.T @ translate``, the
        inverse of :attr:`CTVolume.translate`.
    metadata : mapping, optional
        A layer's metadata. The geometry is read from its :data:`GEOMETRY_KEY`
        entry, if there is one: ``origin`` (LPS, mm), ``direction`` (rows are the
        LPS unit vectors of the z, y, x axes), ``spacing``, ``shape``,
        ``warnings``. Everything else in that entry becomes the volume's
        ``metadata``.
    name : str, default "the CT"
        How the notes name the CT, e.g. ``"CT layer 'chest'"``.

    Returns
    -------
    ct : CTVolume
        The volume. Without an orientation, its ``direction`` is
        :data:`STANDARD_AXIAL` (noted). Without a position, its ``origin`` is
        ``(0, 0, 0)`` (not noted: no measured quantity depends on it).
    notes : list of str
        What was assumed: the spacing, the orientation. It also says when the
        scale disagrees with the recorded spacing, or when the recorded shape is
        not the array's.

    Raises
    ------
    ValueError
        If ``hu`` is not 3-D, the spacing is not three positive numbers, or the
        direction is not a 3x3 matrix.

    Examples
    --------
    >>> import numpy as np
    >>> hu = np.zeros((4, 8, 8), np.int16)
    >>> ct, notes = ct_from_geometry(hu, name="CT layer 'x'")
    >>> ct.spacing
    (2.5, 1.0, 1.0)
    >>> print("\\n".join(notes))
    CT layer 'x' has no physical scale: assumed 2.5 mm slices and 1 mm pixels
    CT layer 'x' has no patient orientation: assumed a standard axial orientation (columns run to the patient's left)
    >>> meta = {GEOMETRY_KEY: {"origin": [-200.0, -180.0, 50.0], "direction": STANDARD_AXIAL.tolist()}}
    >>> ct, notes = ct_from_geometry(hu, scale=(5.0, 0.8, 0.8), translate=(50.0, -180.0, -200.0), metadata=meta)
    >>> ct.spacing, ct.origin, notes
    ((5.0, 0.8, 0.8), (-200.0, -180.0, 50.0), [])
    """
    # measure owns the assumed spacing (one home); imported here, as measure imports ct.
    from ..measure import DEFAULT_PIXEL_SPACING_MM, DEFAULT_SLICE_SPACING_MM

    hu = np.asarray(hu)
    geo = (metadata or {}).get(GEOMETRY_KEY) or {}
    notes: list[str] = []

    recorded = geo.get("spacing")
    spacing = physical_spacing(scale)
    if spacing is not None:
        if recorded is not None and not np.allclose(spacing, np.asarray(recorded, float), rtol=1e-4):
            notes.append(f"{name}: the layer's scale {_mm(spacing)} differs from the CT's recorded "
                         f"spacing {_mm(recorded)}: used the scale")
    elif recorded is not None:
        spacing = tuple(float(s) for s in recorded)
    else:
        spacing = (DEFAULT_SLICE_SPACING_MM, DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM)
        notes.append(f"{name} has no physical scale: assumed {DEFAULT_SLICE_SPACING_MM:g} mm slices "
                     f"and {DEFAULT_PIXEL_SPACING_MM:g} mm pixels")

    if "direction" in geo:
        direction = np.asarray(geo["direction"], dtype=float)
    else:
        direction = STANDARD_AXIAL.copy()
        notes.append(f"{name} has no patient orientation: assumed a standard axial orientation "
                     "(columns run to the patient's left)")

    if "origin" in geo:
        origin = tuple(float(o) for o in geo["origin"])
    elif translate is not None:
        origin = tuple(float(o) for o in direction.reshape(3, 3).T @ np.asarray(translate, float)[-3:])
    else:
        origin = (0.0, 0.0, 0.0)

    if "shape" in geo and tuple(int(s) for s in geo["shape"]) != tuple(hu.shape):
        notes.append(f"{name}: its recorded geometry is for shape {tuple(int(s) for s in geo['shape'])} "
                     f"but the data has shape {tuple(hu.shape)}: its position may be off")

    ct = CTVolume(hu=hu, spacing=spacing, origin=origin, direction=direction,
                  warnings=list(geo.get("warnings") or []),
                  metadata={k: v for k, v in geo.items() if k not in _GEOMETRY_FIELDS})
    return ct, notes


def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ") mm"

"""Body, air inside it and aerated lung, from HU thresholds alone (no network).

The core's one home for HU analysis. Two consumers with two outlines of the patient:

- the fast inference path (:func:`chest_extent`, :func:`internal_air_mask`) uses the
  **body outline**, :func:`body_mask`: in each slice the largest region denser than
  :data:`BODY_HU`, holes filled. The table, a couch and separate arms are outside.
- the per-side measurement (:mod:`napari_pneumoseg.measure.sides`) uses the
  **enclosed region**, :func:`enclosed_mask`: everything not joined, within its
  slice, to the image border through air at or below :data:`OUTSIDE_AIR_HU`.
  Dense objects besides the body (arms, a couch) and air they wall in count as
  enclosed too. :func:`aerated_lung` looks for lung there.

The two outlines (and their thresholds) are kept apart on purpose. The
measurement was validated with the enclosed region, and switching it to the body
outline changes lung volumes and the midline on CTs whose couch has a foam core
of lung density. Which of the two is right for measuring is a decision of its own.
Everything else (the lung HU window, the lung-sized component rule and the coarse
grid) is shared and defined once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

# --------------------------------------------------------------------------- constants

#: Tissue/air threshold of the **body outline** (HU). Tissue is denser than this; air
#: and aerated lung are below it. :func:`body_mask` takes the largest region above it
#: in each slice, and :func:`internal_air_mask` and :func:`chest_extent` call air
#: whatever is below it inside that outline.
BODY_HU = -400.0

#: Outside-air threshold of the **enclosed region** (HU). In each slice, voxels at or
#: below this that are joined (4-connected) to the image border are air outside the
#: patient. Everything else is enclosed (see :func:`enclosed_mask`). It is a separate
#: constant from :data:`BODY_HU` because the measurement's enclosed region and the fast
#: path's body outline are separate rules (see the module notes).
OUTSIDE_AIR_HU = -500.0

#: HU window of aerated lung parenchyma, both ends exclusive: ``lo < HU < hi``. Airway
#: lumen and pneumothorax air (about -1000 HU) fall below it, and so does
#: emphysematous lung, which then counts as neither lung nor pneumothorax.
LUNG_HU = (-950.0, -300.0)

#: Lung-sized connected air components: at least this share of the largest one ...
LUNG_KEEP_FRACTION = 0.02
#: ... and at least this volume (mL). Drops partial-volume specks and small
#: bowel-gas pockets. Large bowel gas passes (see :func:`lung_sized`).
LUNG_MIN_ML = 5.0

#: The HU searches run on a grid subsampled in-plane to about this many pixels a side
#: (see :func:`coarse_step`).
COARSE_TARGET = 256

#: Air pockets inside the body of at least this volume (mL) count for the air box of
#: :func:`chest_extent`.
AIR_BOX_MIN_ML = 1.0
#: :func:`chest_extent` opens the dense mask with a disk of this radius (mm) to cut the
#: body free of the table. The table's thin shell would otherwise join the body, and its
#: foam core would count as air inside the body.
TABLE_OPENING_MM = 3.0
#: In one slice, an air region no larger than this (mm^2) whose centre lies within
#: :data:`AIRWAY_MIDLINE_MM` of the body's centre is an airway (trachea, larynx,
#: oesophagus), not lung. Slices with only such air lie above the lung apices.
AIRWAY_MAX_MM2 = 800.0
AIRWAY_MIDLINE_MM = 30.0

# In-plane connectivity only (no links between slices).
_PLANE4 = np.zeros((3, 3, 3), bool)
_PLANE4[1] = ndimage.generate_binary_structure(2, 1)
_PLANE8 = np.zeros((3, 3, 3), bool)
_PLANE8[1] = True


def coarse_step(shape_yx: Sequence[int]) -> int:
    """In-plane subsampling step of the HU searches: ``round(min(ny, nx) / COARSE_TARGET)``, at least 1.

    Parameters
    ----------
    shape_yx : sequence of int
        ``(ny, nx)``: rows and columns of a slice.

    Returns
    -------
    int
        The step ``s``. The searches look at ``hu[:, ::s, ::s]``.

    Examples
    --------
    >>> coarse_step((512, 512)), coarse_step((256, 256)), coarse_step((100, 900))
    (2, 1, 1)
    """
    ny, nx = (int(v) for v in shape_yx[-2:])
    return max(1, int(round(min(ny, nx) / COARSE_TARGET)))


# --------------------------------------------------------------------------- body outline


def body_mask(hu: np.ndarray, threshold: float = BODY_HU, *, opening: int = 0,
              close_edges: bool = False) -> np.ndarray:
    """The body outline: per slice, the largest connected region denser than ``threshold``, holes filled.

    Filling the holes puts lungs, airways and pleural air inside the body. Air around
    the patient (and under the table) stays outside.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in Hounsfield units.
    threshold : float, default :data:`BODY_HU`
        Voxels above it are dense.
    opening : int, default 0
        Radius in pixels of a disk that opens the dense mask first (0: no opening).
        It removes dense structures thinner than about twice that radius, such as a
        table shell or a thin strap touching the body, so they do not join it.
    close_edges : bool, default False
        Where the largest region touches an image edge, join its first and last
        pixel on that edge, so a body cut off by the field of view still has its
        holes filled.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
        True inside the body. A slice with nothing dense is all False.

    Examples
    --------
    >>> hu = np.full((1, 7, 7), -1000.0)
    >>> hu[0, 1:6, 1:6] = 40.0       # a body ...
    >>> hu[0, 3, 3] = -800.0         # ... with air inside
    >>> bool(body_mask(hu)[0, 3, 3]), bool(body_mask(hu)[0, 0, 0])
    (True, False)
    """
    out = np.zeros(hu.shape, dtype=bool)
    disk = _disk(opening) if opening > 0 else None
    for k in range(hu.shape[0]):
        dense = hu[k] > threshold
        if disk is not None:
            dense = ndimage.binary_opening(dense, structure=disk)
        labels, n = ndimage.label(dense)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        largest = labels == sizes.argmax()
        if close_edges:
            for edge in (largest[0, :], largest[-1, :], largest[:, 0], largest[:, -1]):
                on = np.flatnonzero(edge)
                if on.size:
                    edge[on[0] : on[-1] + 1] = True  # a view: writes into largest
        out[k] = ndimage.binary_fill_holes(largest)
    return out


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r + r  # a rounder disk than <= r^2 for small radii


def internal_air_mask(hu: np.ndarray, threshold: float = BODY_HU) -> np.ndarray:
    """Air inside the body outline: lungs, airways, pneumothorax, bowel gas.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in Hounsfield units.
    threshold : float, default :data:`BODY_HU`
        Tissue/air threshold, both of the outline (:func:`body_mask`) and of the air.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
        Voxels below ``threshold`` inside ``body_mask(hu, threshold)``.

    Examples
    --------
    >>> hu = np.full((1, 7, 7), -1000.0)
    >>> hu[0, 1:6, 1:6] = 40.0
    >>> hu[0, 3, 3] = -800.0
    >>> int(internal_air_mask(hu).sum())
    1
    """
    return body_mask(hu, threshold) & (hu < threshold)


# --------------------------------------------------------------------------- enclosed region and lung


def enclosed_mask(hu: np.ndarray, threshold: float = OUTSIDE_AIR_HU) -> np.ndarray:
    """The enclosed region: voxels not joined, within their slice, to the image border through HU <= ``threshold``.

    This is hole filling of every region denser than ``threshold``, not only the
    largest one: lungs, airways and pneumothorax inside the body are enclosed, and
    so are arms, a table or couch, and air that any of them walls in. Air joined
    to the image border (4-connected, in-plane) is not.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in Hounsfield units (any real dtype).
    threshold : float, default :data:`OUTSIDE_AIR_HU`
        Voxels at or below it are air, if joined to the border.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
        True where enclosed.

    Examples
    --------
    >>> hu = np.full((1, 7, 7), -1000.0)
    >>> hu[0, 1:6, 1:6] = 40.0
    >>> hu[0, 3, 3] = -1000.0        # walled in: enclosed
    >>> m = enclosed_mask(hu)
    >>> bool(m[0, 3, 3]), bool(m[0, 0, 0])
    (True, False)
    """
    lab, n = ndimage.label(hu <= threshold, structure=_PLANE4)
    border = np.zeros(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[edge] = True
    border[0] = False
    return ~border[lab]


def lung_sized(voxels: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Which connected air components are lung-sized.

    A component is lung-sized if it is at least :data:`LUNG_MIN_ML` and at least
    :data:`LUNG_KEEP_FRACTION` of the largest component. Both lung searches use this
    rule: :func:`chest_extent` on air inside the body outline and
    :func:`aerated_lung` on the lung window inside the enclosed region.

    Parameters
    ----------
    voxels : ndarray of int, shape (n,)
        Voxel count of each component (background not included).
    voxel_ml : float
        Volume of one voxel of the grid that was labelled, in mL.

    Returns
    -------
    ndarray of bool, shape (n,)
        True for the components to keep. Empty for an empty ``voxels``.

    Examples
    --------
    >>> lung_sized(np.array([100_000, 1_000, 10]), 0.01).tolist()   # 1000 mL, 10 mL, 0.1 mL
    [True, False, False]
    """
    volume = np.asarray(voxels) * voxel_ml
    if volume.size == 0:
        return np.zeros(0, dtype=bool)
    return volume >= max(LUNG_MIN_ML, LUNG_KEEP_FRACTION * volume.max())


@dataclass
class AeratedLung:
    """Aerated lung found from HU on a coarse grid (the result of :func:`aerated_lung`).

    All arrays are on the coarse grid ``hu[:, ::step, ::step]``.

    Attributes
    ----------
    step : int
        In-plane subsampling step (:func:`coarse_step`).
    enclosed : ndarray of bool
        The enclosed region (:func:`enclosed_mask`).
    lung : ndarray of bool
        Lung-sized 3-D components of the lung window inside ``enclosed``, with the
        excluded voxels (a pneumothorax mask) left out.
    region : ndarray of bool
        ``lung`` grown by one coarse voxel in-plane (8-connected), within
        ``enclosed``. :meth:`full_slice` counts lung at full resolution there.
    """

    step: int
    enclosed: np.ndarray
    lung: np.ndarray
    region: np.ndarray

    def slices(self) -> np.ndarray:
        """Indices of the slices that hold some lung (``region``).

        Returns
        -------
        ndarray of int
            Sorted slice indices.

        Examples
        --------
        >>> hu = np.full((2, 5, 5), -1000.0)
        >>> hu[:, 1:4, 1:4] = 40.0
        >>> hu[1, 2, 2] = -850.0
        >>> aerated_lung(hu, voxel_ml=10.0).slices().tolist()
        [1]
        """
        return np.flatnonzero(self.region.any(axis=(1, 2)))

    def full_slice(self, k: int, hu_slice: np.ndarray, exclude: Optional[np.ndarray] = None) -> np.ndarray:
        """Aerated lung of slice ``k`` at full resolution.

        These are the voxels in the :data:`LUNG_HU` window that lie in ``region``
        (each full-resolution voxel looks up the coarse voxel it falls in), minus
        ``exclude``.

        Parameters
        ----------
        k : int
            Slice index.
        hu_slice : ndarray, shape (y, x)
            That slice of the full-resolution CT, in HU.
        exclude : ndarray of bool, shape (y, x), optional
            Voxels that are not lung (the pneumothorax mask of that slice).

        Returns
        -------
        ndarray of bool, shape (y, x)

        Examples
        --------
        >>> hu = np.full((1, 5, 5), -1000.0)
        >>> hu[:, 1:4, 1:4] = 40.0
        >>> hu[0, 2, 2] = -850.0
        >>> int(aerated_lung(hu, voxel_ml=10.0).full_slice(0, hu[0]).sum())
        1
        """
        ny, nx = hu_slice.shape
        jj = np.minimum(np.arange(ny) // self.step, self.region.shape[1] - 1)
        ii = np.minimum(np.arange(nx) // self.step, self.region.shape[2] - 1)
        out = (hu_slice > LUNG_HU[0]) & (hu_slice < LUNG_HU[1]) & self.region[k][jj][:, ii]
        if exclude is not None:
            out &= ~exclude
        return out


def aerated_lung(hu: np.ndarray, voxel_ml: float, *, exclude: Optional[np.ndarray] = None,
                 step: Optional[int] = None) -> AeratedLung:
    """Find aerated lung: lung-sized components of the lung HU window inside the enclosed region.

    The search runs on ``hu[:, ::step, ::step]``: the candidates are
    ``LUNG_HU[0] < HU < LUNG_HU[1]``, inside :func:`enclosed_mask`, and not in
    ``exclude``. They are split into 3-D (6-connected) components, and the
    :func:`lung_sized` ones are kept. Tracheal and bronchial lumen air and pneumothorax
    air fall below the window, so they are not lung.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in Hounsfield units, full resolution.
    voxel_ml : float
        Volume of one full-resolution voxel, in mL.
    exclude : ndarray, shape (z, y, x), optional
        Nonzero where a voxel is not lung (a pneumothorax mask). It is sampled on
        the same coarse grid.
    step : int, optional
        In-plane subsampling step. The default is :func:`coarse_step` of the slice shape.

    Returns
    -------
    AeratedLung
        The coarse masks. :meth:`AeratedLung.full_slice` gives full-resolution lung.

    Raises
    ------
    ValueError
        If ``hu`` is not 3-D or ``exclude`` has another shape.

    Examples
    --------
    >>> hu = np.full((3, 20, 20), -1000.0)
    >>> hu[:, 2:18, 2:18] = 40.0          # body
    >>> hu[:, 5:15, 5:15] = -850.0        # lung, 300 voxels
    >>> est = aerated_lung(hu, voxel_ml=0.1)
    >>> int(est.lung.sum()), est.step
    (300, 1)
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"CT must be 3-D (z, y, x), got shape {hu.shape}")
    if exclude is not None and tuple(exclude.shape) != tuple(hu.shape):
        raise ValueError(f"exclude shape {tuple(exclude.shape)} does not match CT shape {tuple(hu.shape)}")
    f = int(step) if step else coarse_step(hu.shape[1:])
    hc = np.ascontiguousarray(hu[:, ::f, ::f])
    enclosed = enclosed_mask(hc)
    cand = (hc > LUNG_HU[0]) & (hc < LUNG_HU[1]) & enclosed
    if exclude is not None:
        ex = np.asarray(exclude[:, ::f, ::f])
        cand &= ~(ex if ex.dtype == np.bool_ else ex != 0)
    del hc
    lab, n = ndimage.label(cand)
    del cand
    if n:
        keep = np.zeros(n + 1, dtype=bool)
        keep[1:] = lung_sized(np.bincount(lab.ravel(), minlength=n + 1)[1:], voxel_ml * f * f)
        lung = keep[lab]
    else:
        lung = np.zeros(lab.shape, dtype=bool)
    del lab
    region = ndimage.binary_dilation(lung, structure=_PLANE8) & enclosed
    return AeratedLung(step=f, enclosed=enclosed, lung=lung, region=region)


# --------------------------------------------------------------------------- chest extent


class ChestExtent:
    """Where the body and the lungs are in a CT, per slice (the result of :func:`chest_extent`).

    Attributes
    ----------
    body_box : ndarray of int, shape (n, 4)
        ``y0, y1, x0, x1`` (half-open, full-resolution pixels) of the body in each
        slice, ``-1`` where a slice has no body.
    air_box : ndarray of int, shape (n, 4)
        The same for the air inside the body (lungs, airways, any pneumothorax), in
        pockets of at least :data:`AIR_BOX_MIN_ML`, ``-1`` where there is none.
    lung : ndarray of bool, shape (n,)
        The slice holds air inside the body that belongs to a lung-sized air region
        and is not only a midline airway.
    step : int
        In-plane subsampling step of the search.
    """

    def __init__(self, body_box: np.ndarray, lung: np.ndarray, step: int, air_box: np.ndarray):
        self.body_box = body_box
        self.air_box = air_box
        self.lung = lung
        self.step = step

    @property
    def has_body(self) -> np.ndarray:
        """Per slice: True where the slice has a body (``(n,)`` bool)."""
        return self.body_box[:, 0] >= 0

    @property
    def lung_range(self) -> Optional[tuple[int, int]]:
        """First and last slice (inclusive) with lung air, or None when there is none."""
        k = np.flatnonzero(self.lung)
        return (int(k[0]), int(k[-1])) if k.size else None

    def box(self, slices=slice(None)) -> Optional[tuple[int, int, int, int]]:
        """Union of the body boxes of some slices.

        Parameters
        ----------
        slices : int, slice or bool mask, default all
            Which slices.

        Returns
        -------
        tuple of int or None
            ``(y0, y1, x0, x1)``, or None when none of them has a body.
        """
        return _union(np.atleast_2d(self.body_box[slices]))

    def air(self, slices=slice(None)) -> Optional[tuple[int, int, int, int]]:
        """Union of the air boxes of some slices.

        Parameters
        ----------
        slices : int, slice or bool mask, default all
            Which slices.

        Returns
        -------
        tuple of int or None
            ``(y0, y1, x0, x1)``, or None when there is no air inside the body there.
        """
        return _union(np.atleast_2d(self.air_box[slices]))


def _union(b: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    b = b[b[:, 0] >= 0]
    if not len(b):
        return None
    return int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max())


def _boxes(mask: np.ndarray, s: int, ny: int, nx: int) -> np.ndarray:
    """Per slice of a coarse (step ``s``) mask: the full-resolution box that holds it, -1 if empty.

    Widened by ``s - 1`` pixels so it holds every full-resolution pixel between the samples.
    """
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    boxes = np.full((mask.shape[0], 4), -1, dtype=np.int64)
    has = rows.any(axis=1)
    if has.any():
        cy, cx = rows.shape[1], cols.shape[1]
        first_r = rows[has].argmax(axis=1)
        last_r = cy - 1 - rows[has][:, ::-1].argmax(axis=1)
        first_c = cols[has].argmax(axis=1)
        last_c = cx - 1 - cols[has][:, ::-1].argmax(axis=1)
        boxes[has, 0] = np.maximum(0, (first_r - 1) * s + 1)
        boxes[has, 1] = np.minimum(ny, (last_r + 1) * s)
        boxes[has, 2] = np.maximum(0, (first_c - 1) * s + 1)
        boxes[has, 3] = np.minimum(nx, (last_c + 1) * s)
    return boxes


def chest_extent(hu: np.ndarray, spacing=(1.0, 1.0, 1.0), *, threshold: float = BODY_HU,
                 step: Optional[int] = None) -> ChestExtent:
    """Body and internal-air boxes per slice, and which slices hold lung air, from HU alone.

    The search works on a grid subsampled in-plane by ``step``. The boxes are widened
    by ``step - 1`` pixels, so they still hold every full-resolution body pixel
    between the samples. The body is the body outline (:func:`body_mask`: the
    largest dense region per slice, holes filled, so the table and separate arms are
    outside). It is taken after an opening of :data:`TABLE_OPENING_MM` that cuts it
    free of the table, with the image edges closed where the body runs off the
    image. Lung air is air inside it (below ``threshold``) in :func:`lung_sized` 3-D
    connected regions, minus slices whose only such air is a small midline airway
    (:data:`AIRWAY_MAX_MM2`, :data:`AIRWAY_MIDLINE_MM`). A pneumothorax is air inside
    the body, so it counts too.

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in Hounsfield units.
    spacing : sequence of 3 floats, default (1, 1, 1)
        Voxel size (z, y, x) in mm.
    threshold : float, default :data:`BODY_HU`
        Tissue/air threshold.
    step : int, optional
        In-plane subsampling step. The default is :func:`coarse_step` of the slice shape.

    Returns
    -------
    ChestExtent

    Examples
    --------
    >>> hu = np.full((4, 64, 64), -1000.0)
    >>> hu[:, 4:60, 4:60] = 40.0                 # body
    >>> hu[:, 14:44, 10:28] = -850.0             # right lung
    >>> hu[:, 14:44, 36:54] = -850.0             # left lung
    >>> ext = chest_extent(hu, (5.0, 2.0, 2.0))
    >>> ext.lung_range, ext.box(0), ext.air()
    ((0, 3), (4, 60, 4, 60), (14, 44, 10, 54))
    """
    n, ny, nx = hu.shape
    s = int(step) if step else coarse_step((ny, nx))
    sz, sy, sx = (float(v) for v in spacing)
    coarse = np.asarray(hu[:, ::s, ::s])
    radius = max(1, int(round(TABLE_OPENING_MM / (min(sy, sx) * s))))
    body = body_mask(coarse, threshold, opening=radius, close_edges=True)

    boxes = _boxes(body, s, ny, nx)

    lung = np.zeros(n, dtype=bool)
    air_boxes = np.full((n, 4), -1, dtype=np.int64)
    air = body & (coarse < threshold)
    if air.any():
        labels, m = ndimage.label(air)
        voxel_ml = sz * sy * s * sx * s / 1000.0
        counts = np.bincount(labels.ravel(), minlength=m + 1)[1:]
        keep = np.zeros(m + 1, dtype=bool)
        keep[1:] = lung_sized(counts, voxel_ml)
        kept = keep[labels]
        # The box also holds smaller air pockets: a pneumothorax cut off from its lung by
        # denser pleura is its own component, possibly under the lung-sized bar.
        boxed = np.zeros(m + 1, dtype=bool)
        boxed[1:] = counts * voxel_ml >= AIR_BOX_MIN_ML
        air_boxes = _boxes(boxed[labels], s, ny, nx)
        del labels
        # Per slice, the in-plane pieces of the kept air: an airway is small and on the midline.
        pixel_mm2 = sy * s * sx * s
        columns = np.arange(kept.shape[2], dtype=float)
        for k in np.flatnonzero(kept.any(axis=(1, 2))):
            pieces, q = ndimage.label(kept[k], structure=np.ones((3, 3), bool))
            flat = pieces.ravel()
            area = np.bincount(flat, minlength=q + 1)[1:].astype(float)
            x_mean = np.bincount(flat, weights=np.broadcast_to(columns, pieces.shape).ravel(),
                                 minlength=q + 1)[1:] / area
            per_column = body[k].sum(axis=0)
            centre = (per_column * columns).sum() / max(per_column.sum(), 1)
            airway = (area * pixel_mm2 <= AIRWAY_MAX_MM2) & (np.abs(x_mean - centre) * sx * s <= AIRWAY_MIDLINE_MM)
            lung[k] = not airway.all()
    return ChestExtent(boxes, lung, s, air_boxes)

"""Body outline and the air inside it, from HU thresholds alone (no network)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

#: Tissue is denser than this; air and lung are below it.
BODY_HU = -400.0


def body_mask(hu: np.ndarray, threshold: float = BODY_HU, *, opening: int = 0,
              close_edges: bool = False) -> np.ndarray:
    """Per slice: the largest connected region denser than ``threshold``, holes filled.

    Filling the holes puts lungs, airways and pleural air inside the body, while
    air around the patient (and under the table) stays outside. ``opening``
    (pixels, default 0: none) first removes dense structures thinner than
    about twice that radius, such as a table shell or a thin strap touching the
    body, so they do not join the body.
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
    """Voxels below ``threshold`` HU inside the body: lungs, airways, pneumothorax, bowel gas."""
    return body_mask(hu, threshold) & (hu < threshold)


# --------------------------------------------------------------------------- chest extent

#: Air components counted as lung or pleural air: at least this share of the
#: largest internal-air component and this volume (the rule of measure.sides).
#: Drops noise specks and small bowel-gas pockets; large ones are kept, which
#: only widens the slice range.
LUNG_KEEP_FRACTION = 0.02
LUNG_MIN_ML = 5.0
#: Air pockets inside the body of at least this volume count for the air box.
AIR_BOX_MIN_ML = 1.0
#: chest_extent() opens the dense mask with a disk of this radius (mm) to cut the
#: body free of the table: the table's thin shell would otherwise join it (and
#: its foam core would count as air inside the body).
TABLE_OPENING_MM = 3.0
#: In one slice, an air region no larger than this (mm^2) whose centre lies
#: within AIRWAY_MIDLINE_MM of the body's centre is an airway (trachea, larynx,
#: oesophagus), not lung: slices with only such air lie above the apices.
AIRWAY_MAX_MM2 = 800.0
AIRWAY_MIDLINE_MM = 30.0
COARSE_TARGET = 256

class ChestExtent:
    """Where the body and the lungs are in a CT, per slice (see :func:`chest_extent`).

    ``body_box`` is ``(n, 4)`` int: ``y0, y1, x0, x1`` (half-open, full-resolution
    pixels) of the body in each slice, ``-1`` where a slice has no body.
    ``air_box`` is the same for the air inside the body (lungs, airways, any
    pneumothorax, in pockets of at least :data:`AIR_BOX_MIN_ML`), ``-1`` where there is none.
    ``lung`` is ``(n,)`` bool: the slice holds air inside the body that belongs
    to a lung-sized air region and is not only a midline airway.
    """

    def __init__(self, body_box: np.ndarray, lung: np.ndarray, step: int, air_box: np.ndarray):
        self.body_box = body_box
        self.air_box = air_box
        self.lung = lung
        self.step = step

    @property
    def has_body(self) -> np.ndarray:
        return self.body_box[:, 0] >= 0

    @property
    def lung_range(self) -> Optional[tuple[int, int]]:
        """First and last slice (inclusive) with lung air, or None when there is none."""
        k = np.flatnonzero(self.lung)
        return (int(k[0]), int(k[-1])) if k.size else None

    def box(self, slices=slice(None)) -> Optional[tuple[int, int, int, int]]:
        """Union of the body boxes of ``slices`` (an index, slice or mask), or None without body."""
        return _union(self.body_box[slices])

    def air(self, slices=slice(None)) -> Optional[tuple[int, int, int, int]]:
        """Union of the air boxes of ``slices``, or None without air inside the body there."""
        return _union(self.air_box[slices])


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
    """Body and internal-air bounding boxes per slice and which slices hold lung air, from HU alone.

    Works on a grid subsampled in-plane by ``step`` (default
    ``round(min(ny, nx) / 256)``: 2 for 512 x 512); the boxes are widened by
    ``step - 1`` pixels so they still contain every full-resolution body pixel
    between the samples. The body is :func:`body_mask`'s (largest dense region
    per slice, holes filled; the table and separate arms are outside), after
    an opening of :data:`TABLE_OPENING_MM` that cuts it free of the table and
    with the image edges closed where the body runs off the image. Lung air
    is air inside it (below ``threshold``) in 3-D connected regions of at least
    :data:`LUNG_MIN_ML` and :data:`LUNG_KEEP_FRACTION` of the largest one, minus
    slices whose only such air is a small midline airway. A pneumothorax is air
    inside the body, so it counts too.
    """
    n, ny, nx = hu.shape
    s = int(step) if step else max(1, int(round(min(ny, nx) / COARSE_TARGET)))
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
        volume = np.bincount(labels.ravel(), minlength=m + 1)[1:] * voxel_ml
        keep = np.zeros(m + 1, dtype=bool)
        keep[1:] = volume >= max(LUNG_MIN_ML, LUNG_KEEP_FRACTION * volume.max())
        kept = keep[labels]
        # The box also holds smaller air pockets: a pneumothorax cut off from its lung by
        # denser pleura is its own component, possibly under the lung-sized bar.
        boxed = np.zeros(m + 1, dtype=bool)
        boxed[1:] = volume >= AIR_BOX_MIN_ML
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

"""Making a phantom: the grid, the patient, painting, blur and noise, volumes and the facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ct.volume import STANDARD_AXIAL, CTVolume
from ._anatomy import Model
from ._continuous_volume import band_voxels, continuous_volume_ml
from ._grid import Grid, Implicit
from ._paint import SlicePainter
from ._tissues import LABELS
from ._tubes import paint_tubes

SIDES = ("left", "right", "both", "none")
SIZES = ("small", "moderate", "large")

#: Default geometry: 120 slices of 512 x 512 at (2.5, 0.7, 0.7) mm, a 300 mm chest in a 358 mm FOV.
DEFAULT_SHAPE_YX = (512, 512)
DEFAULT_SPACING = (2.5, 0.7, 0.7)
CHEST_LENGTH_MM = 300.0
FOV_MM = 512 * 0.7


@dataclass
class Phantom:
    """A synthetic CT, its pneumothorax mask and the facts about it, from :func:`make_phantom`.

    Attributes
    ----------
    ct : CTVolume
        The CT in HU (float32), with its geometry and metadata.
    truth : numpy.ndarray
        The pneumothorax mask, uint8 (z, y, x), on the CT's grid.
    info : dict
        Side, size, seed, volumes and geometry (see :func:`make_phantom`).
    labels : numpy.ndarray or None
        Tissue classes (:data:`LABELS`), uint8 (z, y, x); kept only on request.
    model : object
        The implicit patient, for tests that re-measure it:
        ``model.pneumothorax_at_index(k, j, i, side)`` is the pleural-air
        function (negative inside) at fractional voxel indices.
    """

    ct: CTVolume
    truth: np.ndarray
    info: dict[str, Any]
    labels: np.ndarray | None = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)


def make_phantom(
    seed: int = 0,
    side: str = "left",
    size: str = "moderate",
    n_slices: int | None = None,
    spacing: tuple[float, float, float] | None = None,
    shape_yx: tuple[int, int] = DEFAULT_SHAPE_YX,
    *,
    noise_hu: float = 15.0,
    blur_px: float = 0.6,
    keep_labels: bool = False,
) -> Phantom:
    """Make a synthetic supine, head-first chest CT with a pneumothorax on ``side``.

    The CT has body wall, ribs, spine, mediastinum with great vessels and
    airways, heart, lungs with branching vessel trees, upper abdomen and the
    table, painted in HU from implicit functions in 3-D; one or both lungs
    collapse away from the chest wall, the pleural air thickest anteriorly and
    at the apex, where it collects in a supine patient. The truth is
    voxelised from the same implicit function that paints the HU (before blur
    and noise). The same arguments give the same phantom, and the same
    ``seed`` gives the same patient for every ``side`` and ``size``.

    Parameters
    ----------
    seed : int, default 0
        Chooses the patient, its pneumothorax and the noise.
    side : {"left", "right", "both", "none"}, default "left"
        The patient side(s) with a pneumothorax; "none" has no pleural air.
    size : {"small", "moderate", "large"}, default "moderate"
        How much the lung collapses: "small" leaves a rim of pleural air of a
        few mm to about 1 cm, "large" one of several cm. The anterior rim
        drawn for each affected side is ``info["rim_mm"]``.
    n_slices : int, optional
        Number of axial slices. Defaults to 120 without ``spacing``, else to
        ``max(2, round(300 / spacing[0]))`` (a 300 mm chest).
    spacing : tuple of 3 float, optional
        Voxel size (z, y, x) in mm. Defaults to ``(300 / n_slices, 358.4 /
        rows, 358.4 / columns)``, so the chest stays 300 mm long in a
        358.4 mm field of view: ``(2.5, 0.7, 0.7)`` for 120 x 512 x 512. The
        anatomy always spans the scanned z range and shrinks in-plane if the
        field of view is too small for it (``info["anatomy_scale"]`` < 1).
    shape_yx : tuple of 2 int, default (512, 512)
        Rows and columns of each slice.
    noise_hu : float, default 15.0
        Sigma of the Gaussian noise added to the HU (then clipped at -1024);
        0 for none.
    blur_px : float, default 0.6
        In-plane sigma, in pixels, of the partial-volume blur (less through
        the slices); 0 for none. With ``noise_hu`` and ``blur_px`` both 0 the
        HU are exactly as painted.
    keep_labels : bool, default False
        Keep the tissue labels (:data:`LABELS`) as ``Phantom.labels``.

    Returns
    -------
    Phantom
        ``ct``: a :class:`~napari_pneumoseg.ct.CTVolume` of float32 HU in
        the standard axial direction, with the geometry chosen above;
        ``truth``: the pneumothorax mask (uint8, z, y, x); ``labels`` if
        ``keep_labels``; ``info`` (also ``ct.metadata["phantom"]``), which
        holds side, size and seed; ``volume_ml`` (truth voxels x voxel
        volume) and ``left_ml`` / ``right_ml`` (split at the mediastinal
        midline); ``continuous_volume_ml`` and ``continuous_left_ml`` /
        ``continuous_right_ml``, measured on the implicit surface by
        supersampling, not from the voxel count; ``hemithorax_ml`` and
        ``fraction_of_hemithorax`` per side; the anterior ``rim_mm`` drawn
        for each affected side; ``shape``, ``spacing``, ``anatomy_scale``,
        ``noise_hu`` and ``blur_px``.

    Raises
    ------
    ValueError
        If ``side`` is not in :data:`SIDES`, ``size`` not in :data:`SIZES`,
        or the grid is smaller than 2 slices of 32 x 32.

    Examples
    --------
    >>> from napari_pneumoseg.phantom import make_phantom
    >>> ph = make_phantom(seed=1, side="right", size="small", n_slices=20, shape_yx=(128, 128))
    >>> ph.ct.shape, ph.ct.spacing
    ((20, 128, 128), (15.0, 2.8, 2.8))
    >>> ph.info["left_ml"], ph.info["right_ml"] > 0
    (0.0, True)
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    ny, nx = (int(n) for n in shape_yx)
    if spacing is None:
        nz = int(n_slices) if n_slices is not None else round(CHEST_LENGTH_MM / DEFAULT_SPACING[0])
        spacing = (CHEST_LENGTH_MM / nz, FOV_MM / ny, FOV_MM / nx)
    else:
        spacing = tuple(float(x) for x in spacing)
        nz = int(n_slices) if n_slices is not None else max(2, round(CHEST_LENGTH_MM / spacing[0]))
    if nz < 2 or ny < 32 or nx < 32:
        raise ValueError(f"phantom too small: {nz} slices of {ny} x {nx} (need 2 x 32 x 32)")
    sz, sy, sx = spacing
    L = nz * sz
    m = Model(seed, side, size, L)

    # Fit body and table into the field of view, shrinking the anatomy if needed.
    m.table_t = 45.0
    m.v_back = m.B + m.rib_t + m.muscle_t(0.0, 0.5 * L) + m.fat_t(0.0) - 4.0
    front = m.B + m.rib_t + m.muscle_t(np.pi, 0.7 * L) + m.fat_t(np.pi) + 4.0
    half_w = m.A + m.rib_t + m.muscle_t(np.pi / 2, 0.7 * L) + m.fat_t(np.pi / 2) + 6.0
    fov_y, fov_x = ny * sy, nx * sx
    s = min(1.0, (fov_y - 12.0) / (m.v_back + m.table_t + front), 0.96 * fov_x / (2 * half_w))
    origin_x, origin_y = -(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy
    y_shift = origin_y + (ny - 1) * sy - 6.0 - s * (m.v_back + m.table_t)
    origin = (origin_x, origin_y, -60.0 - (nz - 1) * sz)
    grid = Grid((nz, ny, nx), spacing, origin, s, y_shift)

    hu = np.empty((nz, ny, nx), np.float32)
    labels = np.zeros((nz, ny, nx), np.uint8)
    painter = SlicePainter(m, grid, half_w, front)
    for k in range(nz):
        painter.paint(k, hu[k], labels[k])
    band = band_voxels(painter.h, painter.th_win)  # voxels the pleural-air surface may cut, per side
    del painter
    paint_tubes(m, grid, hu, labels)

    truth = (labels == LABELS["pneumothorax"]).astype(np.uint8)
    if blur_px > 0:
        zsig = 0.35 * blur_px / 0.6 * min(1.0, 2.5 / sz)  # thin slices: less through-plane blur
        _blur(hu, blur_px, zsig)
    if noise_hu > 0:
        nrng = np.random.default_rng([seed, 33])
        for k in range(nz):
            hu[k] += nrng.standard_normal((ny, nx), dtype=np.float32) * np.float32(noise_hu)
        np.maximum(hu, -1024.0, out=hu)  # scanners clip air at -1024

    voxel_ml = sz * sy * sx / 1000.0
    # The sides are split by the mediastinal midline (u = xm), as in the implicit model.
    left_cols = np.arange(nx) > (m.xm * s - origin_x) / sx
    counts = truth.sum(axis=(0, 1), dtype=np.int64)
    vox = {"left": int(counts[left_cols].sum()), "right": int(counts[~left_cols].sum())}
    cont = continuous_volume_ml(m, grid, truth, band, left_cols)
    # Hemithorax = that side's lung + its pleural air (airway lumens inside the lung aside).
    hemi = {n: (int(np.count_nonzero(labels == LABELS[f"{n}_lung"])) + vox[n]) * voxel_ml for n in vox}
    info = {
        "side": side,
        "size": size,
        "seed": int(seed),
        "volume_ml": float(sum(vox.values()) * voxel_ml),
        "continuous_volume_ml": cont["left"] + cont["right"],
        "left_ml": vox["left"] * voxel_ml,
        "right_ml": vox["right"] * voxel_ml,
        "continuous_left_ml": cont["left"],
        "continuous_right_ml": cont["right"],
        "hemithorax_ml": hemi,
        "fraction_of_hemithorax": {n: (vox[n] * voxel_ml / hemi[n] if hemi[n] else 0.0) for n in hemi},
        "rim_mm": {n: float(m.rim[n]) for n in m.ptx_sides},
        "shape": [nz, ny, nx],
        "spacing": [float(x) for x in spacing],
        "anatomy_scale": float(s),
        "noise_hu": float(noise_hu),
        "blur_px": float(blur_px),
    }
    metadata = {
        "series_description": "Pneumothorax phantom",
        "modality": "CT",
        "patient_position": "HFS",
        "manufacturer": "napari-pneumoseg phantom",
        "window": [-300.0, 1400.0],
        "phantom": info,
    }
    ct = CTVolume(hu=hu, spacing=spacing, origin=origin, direction=STANDARD_AXIAL.copy(),
                  metadata=metadata)
    return Phantom(ct=ct, truth=truth, info=info, labels=labels if keep_labels else None,
                   model=Implicit(m, grid))


def _blur(hu, sigma_yx, sigma_z):
    """Partial-volume blur in place: a 3-tap Gaussian per axis (sigmas in voxels, edges repeated).

    For the sigmas used (< 0.8 voxel) the taps beyond +-1 carry < 1 % of the weight.
    """
    def taps(sigma):
        e = float(np.exp(-0.5 / sigma ** 2)) if sigma > 0.05 else 0.0
        return np.float32(1.0 / (1.0 + 2.0 * e)), np.float32(e / (1.0 + 2.0 * e))

    c, e = taps(sigma_yx)
    for k in range(hu.shape[0]):
        x = hu[k]
        for axis in (0, 1):
            y = x * c
            a, b = (slice(1, None), slice(None, -1))
            if axis == 0:
                y[a] += e * x[b]
                y[b] += e * x[a]
                y[0] += e * x[0]
                y[-1] += e * x[-1]
            else:
                y[:, a] += e * x[:, b]
                y[:, b] += e * x[:, a]
                y[:, 0] += e * x[:, 0]
                y[:, -1] += e * x[:, -1]
            x = y
        hu[k] = x
    c, e = taps(sigma_z)
    if e == 0 or hu.shape[0] < 2:
        return
    prev = hu[0].copy()
    for k in range(hu.shape[0]):
        cur = hu[k].copy()
        nxt = hu[k + 1] if k + 1 < hu.shape[0] else cur
        hu[k] = c * cur + e * (prev + nxt)
        prev = cur

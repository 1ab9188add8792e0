"""Measure a pneumothorax mask: volume, left/right and % of hemithorax, agreement with a reference.

``measure(mask, ct=..., truth=..., probabilities=...)`` returns a :class:`Measurement`
whose fields carry their units in their names (``_ml``, ``_mm``, ``_pct``; overlap
metrics are fractions in [0, 1]). Assumptions it had to make are listed in ``notes``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from .metrics import mean_slice_dice, metrics_from_counts, roc_auc, slice_counts
from .sides import side_analysis

__all__ = [
    "Measurement",
    "measure",
    "metrics_from_counts",
    "roc_auc",
    "DEFAULT_SLICE_SPACING_MM",
    "DEFAULT_PIXEL_SPACING_MM",
]

#: Slice spacing assumed when none is known: the 2.5 mm of the paper's CTs (Gencer & Toker 2024).
DEFAULT_SLICE_SPACING_MM = 2.5
#: In-plane spacing assumed when none is known (volumes then are in voxel units, not true mL).
DEFAULT_PIXEL_SPACING_MM = 1.0


@dataclass
class Measurement:
    """Result of :func:`measure`. None means "not measured" (no CT, no reference, undefined)."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    voxel_ml: float
    voxels: int
    volume_ml: float
    # Per side of the patient (needs the CT).
    left_ml: Optional[float] = None
    right_ml: Optional[float] = None
    left_lung_ml: Optional[float] = None
    right_lung_ml: Optional[float] = None
    left_pct_hemithorax: Optional[float] = None  # 100 * ptx / (ptx + aerated lung), same side
    right_pct_hemithorax: Optional[float] = None
    midline_x_mm: Optional[float] = None  # LPS x of the mid-sagittal plane used
    # Against a reference mask.
    truth_voxels: Optional[int] = None
    truth_volume_ml: Optional[float] = None
    tp: Optional[int] = None
    fp: Optional[int] = None
    tn: Optional[int] = None
    fn: Optional[int] = None
    dice: Optional[float] = None  # volumetric (pooled over all voxels)
    dice_per_slice: Optional[float] = None  # mean 2-D Dice over slices where either mask is non-empty
    dice_slices: Optional[int] = None  # how many slices that mean is over
    iou: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    specificity: Optional[float] = None
    accuracy: Optional[float] = None
    relative_volume_error: Optional[float] = None  # (pred - true) / true
    auc: Optional[float] = None  # voxel-wise ROC AUC of the probabilities
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists instead of tuples), e.g. for JSON or layer metadata."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["spacing_mm"] = list(self.spacing_mm)
        return d

    def as_row(self) -> dict[str, Any]:
        """One flat table row of scalars (shape as ``"z x y x x"``, spacing split per axis, notes joined)."""
        row: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "shape":
                row["shape"] = "x".join(str(s) for s in v)
            elif f.name == "spacing_mm":
                row["spacing_z_mm"], row["spacing_y_mm"], row["spacing_x_mm"] = v
            elif f.name == "notes":
                row["notes"] = "; ".join(v)
            else:
                row[f.name] = v
        return row

    @classmethod
    def columns(cls) -> list[str]:
        """The keys of :meth:`as_row`, in order (table headers)."""
        return list(cls((1, 1, 1), (1.0, 1.0, 1.0), 0.0, 0, 0.0).as_row())


def _spacing(ct, spacing, notes: list[str]) -> tuple[float, float, float]:
    """Spacing (z, y, x) in mm from the CT, else from ``spacing``, else the documented defaults."""
    if spacing is None:
        given: list[Optional[float]] = [None, None, None]
    else:
        sp = list(np.atleast_1d(np.asarray(spacing, dtype=object)))
        if len(sp) == 2:
            sp = [None, *sp]
        if len(sp) != 3:
            raise ValueError(f"spacing must be (z, y, x) or in-plane (y, x) in mm, got {spacing!r}")
        given = [None if v is None or not np.isfinite(float(v)) else float(v) for v in sp]
        if any(v is not None and v <= 0 for v in given):
            raise ValueError(f"spacing must be positive, got {spacing!r}")
    if ct is not None:
        for g, c in zip(given, ct.spacing):
            if g is not None and not np.isclose(g, c, rtol=1e-4, atol=1e-6):
                raise ValueError(f"spacing {tuple(given)} does not match the CT's spacing {ct.spacing}")
        return tuple(ct.spacing)
    z, y, x = given
    if z is None:
        z = DEFAULT_SLICE_SPACING_MM
        notes.append(
            f"slice spacing not known: assumed {DEFAULT_SLICE_SPACING_MM:g} mm as in the paper (Gencer & Toker 2024)"
        )
    if y is None or x is None:
        y = DEFAULT_PIXEL_SPACING_MM if y is None else y
        x = DEFAULT_PIXEL_SPACING_MM if x is None else x
        notes.append(
            f"in-plane pixel spacing not known: assumed {DEFAULT_PIXEL_SPACING_MM:g} mm, "
            "so volumes are only as right as that guess"
        )
    return (z, y, x)


def _check_shape(name: str, a_shape: Sequence[int], mask_shape: Sequence[int]) -> None:
    if tuple(a_shape) != tuple(mask_shape):
        raise ValueError(f"mask shape {tuple(mask_shape)} does not match {name} shape {tuple(a_shape)}")


def measure(
    mask: np.ndarray,
    *,
    ct=None,
    spacing: Optional[Sequence[Optional[float]]] = None,
    truth: Optional[np.ndarray] = None,
    probabilities: Optional[np.ndarray] = None,
) -> Measurement:
    """Measure a pneumothorax mask (z, y, x; bool, uint8 or labels: nonzero = pneumothorax).

    - ``ct`` (a :class:`~napari_pneumoseg.CTVolume`): spacing, and per-side volumes
      and % of hemithorax from its HU and patient orientation;
    - ``spacing`` (z, y, x) or in-plane (y, x) in mm when there is no CT; unknown
      entries may be None; defaults: 2.5 mm slices, 1.0 mm pixels (noted);
    - ``truth``: reference mask of the same shape, for overlap metrics;
    - ``probabilities``: per-voxel scores of the same shape, for the ROC AUC
      (needs ``truth``).

    Shapes must match exactly (a ValueError names both; nothing is broadcast), and so
    must ``spacing`` and ``ct.spacing`` when both are given.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x), got shape {mask.shape}")
    if ct is not None:
        _check_shape("CT", ct.shape, mask.shape)
    if truth is not None:
        truth = np.asarray(truth)
        _check_shape("truth", truth.shape, mask.shape)
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        _check_shape("probabilities", probabilities.shape, mask.shape)

    notes: list[str] = []
    sp = _spacing(ct, spacing, notes)
    voxel_ml = float(np.prod(sp)) / 1000.0
    pred_k, true_k, tp_k = slice_counts(mask, truth)
    n_pred = int(pred_k.sum())
    res = Measurement(
        shape=tuple(int(s) for s in mask.shape),
        spacing_mm=tuple(float(s) for s in sp),
        voxel_ml=voxel_ml,
        voxels=n_pred,
        volume_ml=n_pred * voxel_ml,
        notes=notes,
    )

    if ct is not None:
        fields, side_notes = side_analysis(mask, ct, pred_k)
        for k, v in fields.items():
            setattr(res, k, v)
        notes.extend(side_notes)
    else:
        notes.append("left/right and % of hemithorax need the CT (HU and patient orientation): not measured")

    if truth is not None:
        n_true = int(true_k.sum())
        tp = int(tp_k.sum())
        fp, fn = n_pred - tp, n_true - tp
        tn = mask.size - tp - fp - fn
        for k, v in metrics_from_counts(tp, fp, tn, fn).items():
            setattr(res, k, v)
        res.truth_voxels = n_true
        res.truth_volume_ml = n_true * voxel_ml
        res.dice_per_slice, res.dice_slices = mean_slice_dice(pred_k, true_k, tp_k)
        if res.relative_volume_error is None:
            notes.append("relative volume error undefined: the reference is empty but the mask is not")
        if probabilities is not None:
            res.auc = roc_auc(probabilities, truth)
            if res.auc is None:
                notes.append("AUC undefined: the reference has only one class")
    elif probabilities is not None:
        notes.append("AUC needs a reference mask (truth): not measured")
    return res

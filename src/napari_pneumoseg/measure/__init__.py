"""Measure a pneumothorax mask: volume, left/right and % of hemithorax, agreement with a reference.

``measure(mask, ct=..., truth=..., probabilities=...)`` returns a :class:`Measurement`
(see :mod:`.measurement`). Overlap metrics and the ROC AUC are in :mod:`.metrics`,
and the per-side analysis is in :mod:`.sides`.
"""

from .measurement import DEFAULT_PIXEL_SPACING_MM, DEFAULT_SLICE_SPACING_MM, Measurement, measure
from .metrics import metrics_from_counts, roc_auc

__all__ = [
    "Measurement",
    "measure",
    "metrics_from_counts",
    "roc_auc",
    "DEFAULT_SLICE_SPACING_MM",
    "DEFAULT_PIXEL_SPACING_MM",
]

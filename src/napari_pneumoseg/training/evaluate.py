"""The paper's Table 2 for a trained model, computed from what Segment gives.

Every case is segmented with :func:`~napari_pneumoseg.model.segment` itself on
whole slices (``crop_chest=False, skip_slices=False``, the default batch size):
the same preprocessing, padding, fill, compiled network and threshold rule as
the Segment widget and the CLI. So a model's stored Table 2 is what Segment
plus Measure report on the same slices. Per set, the metrics pool every voxel
of the set's slices: loss (BCE + soft Jaccard as segmentation-models defines
it, pooled over the set rather than averaged over batches), AUC, binary
accuracy, IoU, precision, recall, TP/TN/FP/FN, Dice (volumetric) and the mean
per-slice Dice (closer to what Keras batch metrics report, as in the paper).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

from ..ct import CTVolume
from ..measure import metrics_from_counts
from ..measure.metrics import mean_slice_dice, roc_auc, slice_counts
from ..progress import report

_EPS = 1e-7
_SMOOTH = 1e-5


def evaluate_sets(bundle, cases: Sequence, sets: Mapping[str, Sequence[tuple[int, int]]], *,
                  progress=None, cancel=None) -> dict[str, dict]:
    """Table 2 rows for named sets of ``(case index, slice index)`` items.

    Each case that any set uses is segmented once, whole, with :func:`segment`;
    its slices then go to the sets that hold them.

    Parameters
    ----------
    bundle : ModelBundle
        The trained model.
    cases : sequence of Case
        The cases (HU volume, spacing, mask), indexed by the items.
    sets : mapping of str to sequence of (int, int)
        Set name to its ``(case, slice)`` items; empty sets are skipped.
    progress : callable, optional
        ``progress(done, total, text)`` per case segmented.
    cancel : callable or threading.Event, optional
        Checked before every batch; raises ``Cancelled``.

    Returns
    -------
    dict
        Set name to its Table 2 row (see :func:`table_row`).
    """
    from ..model import segment

    wanted: dict[str, dict[int, list[int]]] = {}
    for name, items in sets.items():
        by_case: dict[int, list[int]] = defaultdict(list)
        for c, k in items:
            by_case[int(c)].append(int(k))
        if by_case:
            wanted[name] = by_case
    needed = sorted({c for by_case in wanted.values() for c in by_case})
    parts: dict[str, list] = {name: [] for name in wanted}
    for i, c in enumerate(needed):
        case = cases[c]
        report(progress, i, len(needed), f"evaluating: segmenting {case.name}")
        result = segment(CTVolume(case.hu, case.spacing), bundle, return_probabilities=True,
                         crop_chest=False, skip_slices=False, cancel=cancel)
        for name, by_case in wanted.items():
            if c in by_case:
                ks = by_case[c]
                parts[name].append((result.mask[ks], result.probabilities[ks], case.mask[ks]))
    report(progress, len(needed), len(needed), "evaluated")
    return {name: table_row(*zip(*parts[name])) for name in wanted}


def table_row(masks: Sequence[np.ndarray], probabilities: Sequence[np.ndarray],
              truths: Sequence[np.ndarray]) -> dict:
    """One Table 2 row pooled over several cases' slices.

    Parameters
    ----------
    masks, probabilities, truths : sequences of numpy.ndarray
        Per case, the predicted mask (as :func:`segment` thresholds it), the
        probabilities and the ground truth of the same slices ``(n, y, x)``.

    Returns
    -------
    dict
        ``loss, auc, binary_accuracy, accuracy, iou, jaccard, precision, recall,
        specificity, dice, dice_per_slice, tp, tn, fp, fn, slices`` and the rest of
        :func:`~napari_pneumoseg.measure.metrics_from_counts`.
    """
    pred = np.concatenate([np.asarray(m).astype(bool).ravel() for m in masks])
    p = np.concatenate([np.asarray(q, dtype=np.float32).ravel() for q in probabilities])
    t = np.concatenate([np.asarray(m).astype(bool).ravel() for m in truths])
    tp = int(np.count_nonzero(pred & t))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(t)) - tp
    tn = int(p.size) - tp - fp - fn
    row = metrics_from_counts(tp, fp, tn, fn)
    pc = np.clip(p, _EPS, 1 - _EPS)
    bce = float(-np.mean(np.where(t, np.log(pc), np.log(1 - pc))))
    inter = float(np.sum(p[t]))
    union = float(np.sum(p)) + float(np.count_nonzero(t)) - inter
    row["loss"] = bce + 1.0 - (inter + _SMOOTH) / (union + _SMOOTH)
    row["auc"] = roc_auc(p, t)
    per_slice = [slice_counts(np.asarray(m).astype(bool), np.asarray(g).astype(bool))
                 for m, g in zip(masks, truths)]
    row["dice_per_slice"], _ = mean_slice_dice(*(np.concatenate(a) for a in zip(*per_slice)))
    row["jaccard"] = row["iou"]
    row["binary_accuracy"] = row["accuracy"]
    row["slices"] = int(sum(np.asarray(m).shape[0] for m in masks))
    return row

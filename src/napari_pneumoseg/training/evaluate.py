"""The paper's Table 2 for one set of slices, computed with the measurement code.

Predicts whole slices, then pools over every voxel of the set: loss (BCE +
soft Jaccard as segmentation-models defines it, pooled over the set rather
than averaged over batches), AUC, binary accuracy, IoU, precision, recall,
TP/TN/FP/FN, Dice (volumetric) and the mean per-slice Dice (closer to what
Keras batch metrics report, as in the paper).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ..measure import metrics_from_counts
from ..measure.metrics import mean_slice_dice, roc_auc, slice_counts
from ..progress import check_cancel
from .sampling import pad_to_multiple

_EPS = 1e-7
_SMOOTH = 1e-5


def predict_slices(bundle, volume: np.ndarray, slices: Sequence[int], batch_size: int, cancel=None):
    """Probabilities (n, y, x) for the given slices of one preprocessed volume."""
    out = np.empty((len(slices),) + volume.shape[1:], dtype=np.float32)
    ny, nx = volume.shape[1:]
    for a in range(0, len(slices), batch_size):
        check_cancel(cancel)
        idx = list(slices[a:a + batch_size])
        batch = np.stack([pad_to_multiple(volume[k], volume[k], 32, 0.0)[0] for k in idx])[..., None]
        pred = np.asarray(bundle.model(batch, training=False))[..., 0]
        out[a:a + len(idx)] = pred[:, :ny, :nx]
    return out


def evaluate_split(bundle, volumes, masks, items, *, batch_size: int = 4, cancel=None) -> dict:
    """Table 2 row for ``items`` (case, slice) pairs."""
    by_case: dict[int, list[int]] = defaultdict(list)
    for c, k in items:
        by_case[c].append(k)
    threshold = float(bundle.threshold)
    probs, truths, per_slice = [], [], []
    for c, ks in sorted(by_case.items()):
        prob = predict_slices(bundle, volumes[c], ks, batch_size, cancel)
        truth = masks[c][ks].astype(bool)
        per_slice.append(slice_counts(prob >= threshold, truth))
        probs.append(prob.ravel())
        truths.append(truth.ravel())
    p = np.concatenate(probs)
    t = np.concatenate(truths)
    pred = p >= threshold
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
    row["dice_per_slice"], _ = mean_slice_dice(*(np.concatenate(a) for a in zip(*per_slice)))
    row["jaccard"] = row["iou"]
    row["binary_accuracy"] = row["accuracy"]
    row["slices"] = len(items)
    return row


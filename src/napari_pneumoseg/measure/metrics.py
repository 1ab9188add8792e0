"""Overlap metrics of a pneumothorax mask against a reference mask, and voxel-wise ROC AUC.

Everything is computed from integer voxel counts, so the numbers can be checked
against published confusion tables (:func:`metrics_from_counts`). Large volumes
are processed in slabs: no full-volume temporaries beyond what the caller passes.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

#: Elements per slab when streaming over a volume (16 slices of 512 x 512; 16 MB of float32).
_SLAB = 1 << 22


def as_bool(a: np.ndarray) -> np.ndarray:
    """A mask as a bool array: nonzero means pneumothorax.

    Parameters
    ----------
    a : array_like
        A mask of any dtype (bool, uint8, labels).

    Returns
    -------
    ndarray of bool
        ``a`` itself (no copy) when it already is bool, else ``a != 0``.

    Examples
    --------
    >>> as_bool(np.array([0, 3, 1], np.uint8)).tolist()
    [False, True, True]
    """
    a = np.asarray(a)
    return a if a.dtype == np.bool_ else a != 0


def slice_counts(mask: np.ndarray, truth: Optional[np.ndarray] = None):
    """Per-slice voxel counts along axis 0, one slice-sized temporary at a time.

    Parameters
    ----------
    mask : ndarray, shape (z, ...)
        Predicted mask. Nonzero means pneumothorax.
    truth : ndarray, optional
        Reference mask of the same shape.

    Returns
    -------
    pred, true, tp : ndarray of int64, shape (z,)
        Predicted, reference and overlapping voxels per slice. ``true`` and ``tp``
        are None without ``truth``.

    Examples
    --------
    >>> m = np.zeros((2, 2, 2), bool); m[0] = True
    >>> t = np.zeros((2, 2, 2), bool); t[0, 0] = True
    >>> [c.tolist() for c in slice_counts(m, t)]
    [[4, 0], [2, 0], [2, 0]]
    """
    nz = mask.shape[0]
    pred = np.zeros(nz, np.int64)
    true = tp = None
    if truth is None:
        for k in range(nz):
            pred[k] = np.count_nonzero(mask[k])
        return pred, None, None
    true = np.zeros(nz, np.int64)
    tp = np.zeros(nz, np.int64)
    buf = np.empty(mask.shape[1:], np.bool_)
    for k in range(nz):
        m = as_bool(mask[k])
        t = as_bool(truth[k])
        pred[k] = np.count_nonzero(m)
        true[k] = np.count_nonzero(t)
        if pred[k] and true[k]:
            tp[k] = np.count_nonzero(np.logical_and(m, t, out=buf))
    return pred, true, tp


def metrics_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict:
    """Overlap metrics from a confusion table of voxel counts.

    Parameters
    ----------
    tp, fp, tn, fn : int
        True positive, false positive, true negative and false negative voxels.

    Returns
    -------
    dict
        The four counts and ``dice``, ``iou``, ``precision``, ``recall``,
        ``specificity``, ``accuracy`` and ``relative_volume_error``
        (``(pred - true) / true``).

    Raises
    ------
    ValueError
        If a count is negative.

    Notes
    -----
    Conventions for ratios whose denominator is zero (never NaN):

    - both masks empty (``tp + fp == 0`` and ``tp + fn == 0``): dice, iou,
      precision and recall are 1.0 (nothing to find, nothing found) and the
      relative volume error is 0.0;
    - otherwise an undefined precision (nothing predicted) or recall (nothing to
      find) is 0.0, and dice/iou are 0.0 when the masks do not overlap;
    - relative volume error ``(pred - true) / true`` is None when the reference
      is empty but the prediction is not (it would be infinite);
    - specificity is 1.0 when there are no reference negatives; accuracy is 1.0
      for an empty table.

    Examples
    --------
    >>> d = metrics_from_counts(tp=8, fp=2, tn=85, fn=5)
    >>> round(d["dice"], 4), d["precision"], d["relative_volume_error"] == (10 - 13) / 13
    (0.6957, 0.8, True)
    >>> metrics_from_counts(0, 0, 10, 0)["dice"]   # both masks empty
    1.0
    """
    tp, fp, tn, fn = (int(v) for v in (tp, fp, tn, fn))
    if min(tp, fp, tn, fn) < 0:
        raise ValueError(f"counts must be >= 0, got tp={tp} fp={fp} tn={tn} fn={fn}")
    pred_n, true_n, total = tp + fp, tp + fn, tp + fp + tn + fn
    both_empty = pred_n == 0 and true_n == 0
    if both_empty:
        dice = iou = precision = recall = 1.0
        rve: Optional[float] = 0.0
    else:
        dice = 2 * tp / (pred_n + true_n)
        iou = tp / (tp + fp + fn)
        precision = tp / pred_n if pred_n else 0.0
        recall = tp / true_n if true_n else 0.0
        rve = (pred_n - true_n) / true_n if true_n else None
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "dice": dice,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "specificity": tn / (tn + fp) if tn + fp else 1.0,
        "accuracy": (tp + tn) / total if total else 1.0,
        "relative_volume_error": rve,
    }


def mean_slice_dice(pred: np.ndarray, true: np.ndarray, tp: np.ndarray) -> tuple[float, int]:
    """Mean 2-D Dice over the slices where either mask is non-empty.

    This is what a per-image Keras metric averages to (as reported in the paper).
    Unlike the pooled (volumetric) Dice, it weights a slice with 10 voxels like
    one with 10 000.

    Parameters
    ----------
    pred, true, tp : ndarray of int, shape (z,)
        Per-slice counts, as from :func:`slice_counts`.

    Returns
    -------
    dice : float
        The mean, 1.0 over zero slices (both masks empty everywhere).
    slices : int
        How many slices the mean is over.

    Examples
    --------
    >>> mean_slice_dice(np.array([4, 0, 1]), np.array([4, 0, 0]), np.array([4, 0, 0]))
    (0.5, 2)
    """
    denom = pred + true
    used = denom > 0
    n = int(np.count_nonzero(used))
    if n == 0:
        return 1.0, 0
    return float(np.mean(2.0 * tp[used] / denom[used])), n


# --------------------------------------------------------------------------- ROC AUC


def _slabs(a: np.ndarray) -> Iterator[np.ndarray]:
    """Flat pieces of ``a`` (in C order) of about ``_SLAB`` elements; views where possible."""
    if a.ndim == 0:
        yield a.reshape(1)
        return
    if a.ndim == 1:
        for s in range(0, a.shape[0], _SLAB):
            yield a[s : s + _SLAB]
        return
    per = max(1, _SLAB // max(1, int(np.prod(a.shape[1:]))))
    for s in range(0, a.shape[0], per):
        yield a[s : s + per].reshape(-1)


def _order_keys(x: np.ndarray, nonneg: bool = False) -> np.ndarray:
    """Unsigned integers that sort exactly like the values of ``x`` (equal values -> equal keys).

    ``nonneg``: the caller knows all values are >= 0 (probabilities): floats then keep
    their raw bit patterns, which already sort like the values.
    """
    kind, size = x.dtype.kind, x.dtype.itemsize
    if kind == "b":
        return x.view(np.uint8)
    if kind == "u":
        return x
    if kind == "i":
        u = x.view(f"u{size}")
        return u ^ u.dtype.type(1 << (8 * size - 1))
    if kind == "f":
        if size not in (2, 4, 8):
            x = x.astype(np.float64)
            size = 8
        x = x + x.dtype.type(0)  # -0.0 -> +0.0 so that the two zeros tie
        u = x.view(f"u{size}")
        if nonneg:
            return u
        ut = u.dtype.type
        top = ut(1 << (8 * size - 1))
        # Positive floats: set the sign bit; negative floats: flip all bits.
        return u ^ np.where(u & top, ut(~ut(0)), top)
    raise TypeError(f"probabilities must be numeric, got dtype {x.dtype}")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Exact voxel-wise ROC AUC: Mann-Whitney U / (P N), ties count 1/2.

    Equal to the area under the ROC curve with all thresholds and to the average-rank
    formula.

    Parameters
    ----------
    scores : ndarray
        Per-voxel scores (bool, integer or float; e.g. probabilities).
    labels : ndarray
        Reference mask of the same shape. Nonzero means positive.

    Returns
    -------
    float or None
        The AUC in [0, 1], or None when ``labels`` has only one class.

    Raises
    ------
    ValueError
        If the shapes differ, or float scores contain NaN.
    TypeError
        If the scores are not numeric.

    Notes
    -----
    Instead of sorting every voxel, it works in two exact levels:

    1. a histogram of the top ~22 bits of an order-preserving integer key of each
       score (for float32 in [0, 1]: bins of 2**-15 relative width) gives all
       positive/negative pairs that fall in different bins;
    2. only voxels in bins holding both classes are gathered and compared exactly by
       their full key (sort + searchsorted). Scores of 16 bits or fewer (bool, uint8,
       uint16, float16) are exact at level 1 already.

    Scores are streamed in slabs, so memory stays at a few slab-sized temporaries
    plus two 4 M-bin histograms (64 MB).

    The worst case (classes intermixed in nearly every bin) degrades to one sort.

    Examples
    --------
    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> roc_auc(np.array([0.5, 0.5]), np.array([1, 0]))   # a tie counts 1/2
    0.5
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores shape {scores.shape} does not match labels shape {labels.shape}")
    n = scores.size
    n_pos = sum(int(np.count_nonzero(lab)) for lab in _slabs(labels))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    lo_v, hi_v = scores.min(), scores.max()
    if scores.dtype.kind == "f" and (np.isnan(lo_v) or np.isnan(hi_v)):
        raise ValueError("probabilities contain NaN")
    nonneg = bool(lo_v >= 0)
    kmin = int(_order_keys(np.asarray([lo_v], scores.dtype), nonneg)[0])
    kmax = int(_order_keys(np.asarray([hi_v], scores.dtype), nonneg)[0])
    shift = max(0, (kmax - kmin).bit_length() - 22)
    base = kmin >> shift
    nb = (kmax >> shift) - base + 1

    hist_all = np.zeros(nb, np.int64)
    hist_pos = np.zeros(nb, np.int64)
    for s, lab in zip(_slabs(scores), _slabs(labels)):
        b = ((_order_keys(s, nonneg) >> shift) - base).astype(np.intp)
        hist_all += np.bincount(b, minlength=nb)
        hist_pos += np.bincount(b[as_bool(lab)], minlength=nb)
    hist_neg = hist_all - hist_pos
    neg_below = np.cumsum(hist_neg) - hist_neg
    twice_u = 2 * int(np.dot(hist_pos, neg_below))
    mixed = (hist_pos > 0) & (hist_neg > 0)
    if shift == 0:  # a bin is one value: pairs in it are ties
        twice_u += int(np.dot(hist_pos[mixed], hist_neg[mixed]))
    elif mixed.any():
        keys, labs = [], []
        for s, lab in zip(_slabs(scores), _slabs(labels)):
            k = _order_keys(s, nonneg)
            sel = mixed[((k >> shift) - base).astype(np.intp)]
            keys.append(k[sel])
            labs.append(as_bool(lab)[sel])
        k = np.concatenate(keys)
        lab = np.concatenate(labs)
        neg = np.sort(k[~lab])
        pos = np.sort(k[lab])
        left = np.searchsorted(neg, pos, "left")
        right = np.searchsorted(neg, pos, "right")
        bin_start = np.searchsorted(neg, (pos >> shift) << shift, "left")
        twice_u += 2 * int((left - bin_start).sum()) + int((right - left).sum())
    return twice_u / (2 * n_pos * n_neg)

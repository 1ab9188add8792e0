"""Result figures without a GUI: CT slice, truth, prediction and overlay (the paper's Figure 4)."""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np


def best_slice(truth: Optional[np.ndarray], pred: np.ndarray) -> int:
    """The slice with the most pneumothorax (truth, else prediction), else the middle one."""
    ref = truth if truth is not None and np.any(truth) else pred
    counts = np.count_nonzero(ref.reshape(ref.shape[0], -1), axis=1)
    return int(np.argmax(counts)) if counts.any() else ref.shape[0] // 2


def save_case_figure(hu: np.ndarray, pred: np.ndarray, path: Union[str, os.PathLike], *,
                     truth: Optional[np.ndarray] = None, spacing=(1.0, 1.0, 1.0),
                     slice_index: Optional[int] = None, title: str = "",
                     window=(-1000.0, 400.0), overwrite: bool = True) -> int:
    """Write a PNG of one axial slice: CT, truth, prediction, overlay; returns the slice index.

    Overlay colours: green = both, red = truth only (missed), blue = prediction
    only (false positive). Pixels keep their physical aspect ratio.
    """
    from matplotlib.figure import Figure

    from .io.atomic import atomic_path

    k = best_slice(truth, pred) if slice_index is None else int(slice_index)
    ct = np.clip((hu[k] - window[0]) / (window[1] - window[0]), 0, 1)
    p = pred[k] != 0
    aspect = float(spacing[1]) / float(spacing[2])
    panels = [("CT", None)]
    if truth is not None:
        panels.append(("Ground truth", truth[k] != 0))
    panels += [("Prediction", p), ("Overlay", "overlay")]
    fig = Figure(figsize=(3.2 * len(panels), 3.6), dpi=100)
    axes = fig.subplots(1, len(panels))
    for ax, (name, layer) in zip(axes, panels):
        rgb = np.repeat(ct[..., None], 3, axis=2)
        if isinstance(layer, np.ndarray):
            rgb[layer] = 0.6 * rgb[layer] + 0.4 * np.array([1.0, 0.8, 0.0])
        elif layer == "overlay":
            t = truth[k] != 0 if truth is not None else np.zeros_like(p)
            for sel, colour in ((t & p, (0.1, 0.9, 0.1)), (t & ~p, (1.0, 0.1, 0.1)),
                                (~t & p, (0.2, 0.4, 1.0))):
                rgb[sel] = 0.4 * rgb[sel] + 0.6 * np.array(colour)
        ax.imshow(rgb, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"{title} (slice {k})".strip(), fontsize=10)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return k

"""Result figures without a GUI: CT slice, truth, prediction and overlay (the paper's Figure 4)."""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np


def best_slice(truth: Optional[np.ndarray], pred: np.ndarray) -> int:
    """The slice to show: the one with the most pneumothorax voxels, else the middle one.

    Parameters
    ----------
    truth : numpy.ndarray or None
        Ground truth ``(z, y, x)``; counted if it is given and not empty.
    pred : numpy.ndarray
        Prediction ``(z, y, x)``; counted otherwise.

    Returns
    -------
    int
        The slice index (the first of equal ones).

    Examples
    --------
    >>> truth = np.zeros((5, 4, 4), np.uint8)
    >>> truth[3, 1:3, 1:3] = 1
    >>> best_slice(truth, np.zeros_like(truth)), best_slice(None, np.zeros_like(truth))
    (3, 2)
    """
    ref = truth if truth is not None and np.any(truth) else pred
    counts = np.count_nonzero(ref.reshape(ref.shape[0], -1), axis=1)
    return int(np.argmax(counts)) if counts.any() else ref.shape[0] // 2


def save_case_figure(hu: np.ndarray, pred: np.ndarray, path: Union[str, os.PathLike], *,
                     truth: Optional[np.ndarray] = None, spacing=(1.0, 1.0, 1.0),
                     slice_index: Optional[int] = None, title: str = "",
                     window=(-1000.0, 400.0), overwrite: bool = True) -> int:
    """Write a PNG of one axial slice, as the paper's Figure 4: CT, truth, prediction, overlay.

    Overlay colours: green = both, red = truth only (missed), blue = prediction
    only (false positive); truth and prediction panels tint their voxels
    yellow. Pixels keep their physical aspect ratio. No GUI backend is
    needed. Written atomically (see
    :func:`~napari_pneumoseg.io.atomic.atomic_path`).

    Parameters
    ----------
    hu : numpy.ndarray
        The CT in HU, ``(z, y, x)``.
    pred : numpy.ndarray
        The prediction, same shape; nonzero = pneumothorax.
    path : str or os.PathLike
        The PNG to write; its folder must exist.
    truth : numpy.ndarray, optional
        Ground truth, same shape; without it there is no truth panel and the
        overlay shows the prediction in blue.
    spacing : sequence of 3 float, default (1.0, 1.0, 1.0)
        Voxel size ``(z, y, x)``; y and x set the aspect ratio.
    slice_index : int, optional
        The slice to show; default :func:`best_slice`.
    title : str, default ""
        Figure title, followed by the slice index.
    window : tuple of float, default (-1000.0, 400.0)
        HU shown from black to white.
    overwrite : bool, default True
        Replace an existing file.

    Returns
    -------
    int
        The slice index shown.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.
    IndexError
        ``slice_index`` is outside the volume.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> truth = np.zeros((5, 16, 16), np.uint8)
    >>> truth[3, 4:8, 4:8] = 1
    >>> path = Path(tempfile.mkdtemp()) / "case.png"
    >>> save_case_figure(np.full(truth.shape, -1000.0), truth, path, truth=truth, title="phantom 1")
    3
    >>> path.read_bytes()[1:4]
    b'PNG'
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

"""Training curves (loss, validation loss, validation Dice per epoch) as a figure or PNG."""

from __future__ import annotations

import os
from typing import Sequence, Union


def draw_curves(figure, history: Sequence[dict]) -> None:
    """Draw the training curves on a matplotlib Figure, replacing what it showed.

    Left: ``loss`` and ``val_loss`` per epoch, with a dotted line at the last
    epoch marked ``saved`` (the best model). Right: ``dice`` and
    ``val_dice`` on 0-1. Missing values leave gaps in the lines.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        Cleared, then given two axes.
    history : sequence of dict
        One dict per epoch with ``epoch`` and any of ``loss``, ``val_loss``,
        ``dice``, ``val_dice`` and ``saved``.

    Raises
    ------
    KeyError
        An entry has no ``epoch``.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> figure = Figure()
    >>> draw_curves(figure, [{"epoch": 1, "loss": 0.9, "val_loss": 0.8, "val_dice": 0.3, "saved": True},
    ...                      {"epoch": 2, "loss": 0.7, "val_loss": 0.85, "val_dice": 0.35}])
    >>> [ax.get_ylabel() for ax in figure.axes]
    ['BCE + Jaccard loss', 'Dice (threshold 0.5, per batch)']
    """
    figure.clear()
    ax_loss, ax_dice = figure.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for key, style in (("loss", "-o"), ("val_loss", "-s")):
        ax_loss.plot(epochs, [h.get(key, float("nan")) for h in history], style, label=key, ms=3)
    best = [h["epoch"] for h in history if h.get("saved")]
    if best:
        ax_loss.axvline(best[-1], color="grey", ls=":", label=f"best (epoch {best[-1]})")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("BCE + Jaccard loss")
    ax_loss.legend(fontsize=8)
    for key, style in (("dice", "-o"), ("val_dice", "-s")):
        ax_dice.plot(epochs, [h.get(key, float("nan")) for h in history], style, label=key, ms=3)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice (threshold 0.5, per batch)")
    ax_dice.set_ylim(0, 1)
    ax_dice.legend(fontsize=8)
    figure.tight_layout()


def save_curves_png(history: Sequence[dict], path: Union[str, os.PathLike], *,
                    overwrite: bool = True) -> None:
    """Write the training curves (see :func:`draw_curves`) as a PNG, without any GUI backend.

    Written atomically (see :func:`~napari_pneumoseg.io.atomic.atomic_path`).

    Parameters
    ----------
    history : sequence of dict
        As for :func:`draw_curves`.
    path : str or os.PathLike
        The PNG to write; its folder must exist.
    overwrite : bool, default True
        Replace an existing file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "model.curves.png"
    >>> save_curves_png([{"epoch": 1, "loss": 0.9, "val_loss": 0.8}], path)
    >>> path.read_bytes()[1:4]
    b'PNG'
    """
    from matplotlib.figure import Figure

    from ..io.atomic import atomic_path

    figure = Figure(figsize=(8, 3.2), dpi=100)
    draw_curves(figure, history)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")

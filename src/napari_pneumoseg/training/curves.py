"""Training curves (loss, validation loss, validation Dice per epoch) as a figure or PNG."""

from __future__ import annotations

import os
from typing import Sequence, Union


def draw_curves(figure, history: Sequence[dict]) -> None:
    """Draw loss/val_loss (left) and val Dice (right) of ``history`` on a matplotlib Figure."""
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
    """Write the curves as a PNG (atomically), without any GUI backend."""
    from matplotlib.figure import Figure

    from ..io.atomic import atomic_path

    figure = Figure(figsize=(8, 3.2), dpi=100)
    draw_curves(figure, history)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")

"""Pieces every widget shares: the engine singleton, layer pickers, progress, messages."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..engine import Engine

if TYPE_CHECKING:  # pragma: no cover
    import napari

_engines: dict[str, Engine] = {}


def shared_engine(device: str = "auto") -> Engine:
    """One engine process per device setting for the whole napari session."""
    engine = _engines.get(device)
    if engine is None:
        for other in list(_engines):  # one engine at a time: they hold memory
            _engines.pop(other).stop()
        engine = _engines[device] = Engine(device=device)
    return engine.start()


def stop_engines() -> None:
    for engine in _engines.values():
        engine.stop()
    _engines.clear()


def layer_choices(viewer: "napari.Viewer", kind) -> Callable:
    """A magicgui ``choices`` callable listing the viewer's layers of one type."""

    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


def keep_choices_fresh(viewer: "napari.Viewer", container) -> None:
    """Refresh the pickers whenever layers are added, removed or renamed."""

    def refresh(event=None):
        container.reset_choices()

    viewer.layers.events.inserted.connect(refresh)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.changed.connect(refresh)


def spacing_of(layer) -> Optional[tuple[float, float, float]]:
    """The layer's voxel size in mm, or None when it has napari's default unit scale."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    return None if np.allclose(scale, 1.0) else scale


def unique_name(viewer: "napari.Viewer", name: str) -> str:
    names = {layer.name for layer in viewer.layers}
    if name not in names:
        return name
    k = 2
    while f"{name} [{k}]" in names:
        k += 1
    return f"{name} [{k}]"


class RateMeter:
    """Turns (done, total) updates into a 'N/M slices, X/s, ETA' text."""

    def __init__(self, unit: str = "slices"):
        self.unit, self.start = unit, time.monotonic()
        self.first_done: Optional[int] = None
        self.first_t = self.start

    def text(self, done: int, total: int) -> str:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.first_t = done, now
            return f"{done}/{total} {self.unit}"
        rate = (done - self.first_done) / max(now - self.first_t, 1e-9)
        if rate <= 0:
            return f"{done}/{total} {self.unit}"
        eta = (total - done) / rate
        return f"{done}/{total} {self.unit}, {rate:.2f}/s, ETA {eta:.0f} s"


def ask_yes_no(parent, title: str, question: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, title, question,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes

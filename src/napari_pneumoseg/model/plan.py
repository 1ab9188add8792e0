"""Which slices, and which part of each, the network must see: the plan of segment()'s fast path.

The full path runs every slice, padded (centred, with the volume's lowest HU)
to a *frame* whose sides are multiples of 32. The fast path runs a subset of
that same computation:

- **slices**: only the slices from the lungs' base to their apex (air inside
  the body in lung-sized regions, see :func:`~napari_pneumoseg.ct.air.chest_extent`)
  plus a margin of :data:`MARGIN_SLICES` slices and at least
  :data:`MARGIN_MM` mm; a pneumothorax is air inside the pleural cavity and
  cannot lie outside that range. The other slices are labelled background.
- **crop**: each slice runs on a window of the frame around its own air
  inside the body (lungs, airways, pleural air: a pneumothorax is part of
  it), widened by :data:`MARGIN_PX` pixels of context (the chest wall),
  rounded out to the frame's 32-pixel grid and grown to at least
  :data:`MIN_WINDOW_PX` a side (a slice without air of its own gets the
  window around the air of all the slices that run). Not the body's box: arms and shoulders widen
  that to the whole field of view in many chest CTs. Consecutive slices with
  the same window share a batch (at most ``batch_size``). The window is cut
  from the frame itself, so the network sees exactly the full path's pixels
  inside it, and because its corner lies on the 32-pixel grid, every stride
  and pooling step samples the same positions as in the full path. Outputs
  change only through the missing context beyond the window edge (the
  network pads there with zeros, which it reads as air), so the outermost
  :data:`CONTEXT_PX` pixels of a window are context only: their output is
  not used. The window's output is used inside that band and the rest of
  the slice is background: no pneumothorax lies outside the chest wall.

  The network takes any window size without retracing (see
  :func:`~napari_pneumoseg.model.inference.segment`). Per-slice windows give
  the smallest slices little context, and a network then changes its answer
  even far from the window edge, so windows are at least :data:`MIN_WINDOW_PX`
  a side. With it and :data:`CONTEXT_PX`, the fast path's mask equals the full
  path's where a pneumothorax can be, up to voxels near the threshold
  (``tests/model/test_fast_inference.py`` checks this with a briefly trained
  Unet-ResNet18). The share of pixels each design ran and the measurements
  behind the margins are in ``benchmarks/README.md`` ("Fast path").

When the CT has no air inside the body (not an HU chest CT: wrong units, an
empty study, a solid object), the premise of the slice selection fails, so
every slice runs: the fast path never silently returns an empty mask because
its HU analysis found nothing. The crop still applies when there is a body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..ct.air import chest_extent

GRID = 32
#: Pixels of context kept around a slice's air inside the body in each direction, before
#: rounding the window out to the 32-pixel grid (which adds 0-31 more): the smallest
#: margin tried that kept the fast path's answer where a pneumothorax can be
#: (benchmarks/README.md, "Fast path").
MARGIN_PX = 48
#: Smallest window side (pixels): smaller windows give the apex slices too little
#: context, and decided voxels flipped on test phantoms (benchmarks/README.md).
MIN_WINDOW_PX = 224
#: Outer band of a window (pixels) whose output is not used (background), unless the
#: window reaches the frame's edge, where the full path's context ends too. Networks
#: answer to a window edge in tissue as to air, so the outputs next to it are not used.
CONTEXT_PX = 16
#: Slices kept beyond the lungs' first and last slice: this many, and at least MARGIN_MM.
MARGIN_SLICES = 2
MARGIN_MM = 10.0

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Batch:
    """Slices ``start:stop`` run on the frame window ``box`` = ``(y0, y1, x0, x1)`` (frame pixels).

    ``keep`` is the part of ``box`` whose output is used (frame pixels).
    """

    start: int
    stop: int
    box: Box
    keep: Box

    @property
    def shape(self) -> tuple[int, int]:
        return self.box[1] - self.box[0], self.box[3] - self.box[2]

    @property
    def pixels(self) -> int:
        h, w = self.shape
        return (self.stop - self.start) * h * w


@dataclass
class Plan:
    """What the network runs on; ``frame`` is the full path's padded slice size, ``pads`` its padding."""

    n_slices: int
    frame: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    batches: list[Batch]
    notes: list[str] = field(default_factory=list)

    @property
    def slices_run(self) -> int:
        return sum(b.stop - b.start for b in self.batches)

    @property
    def slice_range(self) -> Optional[tuple[int, int]]:
        """First and last slice run (inclusive), or None."""
        if not self.batches:
            return None
        return self.batches[0].start, self.batches[-1].stop - 1

    @property
    def pixel_fraction(self) -> float:
        """Network input pixels run / those of the full path (every slice, whole frame)."""
        full = self.n_slices * self.frame[0] * self.frame[1]
        return sum(b.pixels for b in self.batches) / full if full else 0.0

    @property
    def box(self) -> Optional[Box]:
        """Union of the parts of the windows whose output is used, in frame pixels."""
        if not self.batches:
            return None
        b = np.array([x.keep for x in self.batches])
        return int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max())

    def image_box(self, box: Optional[Box] = None) -> Optional[Box]:
        """A frame box (default: :attr:`box`) as image pixels, clipped to the image."""
        box = self.box if box is None else box
        if box is None:
            return None
        (py0, py1), (px0, px1) = self.pads
        ny, nx = self.frame[0] - py0 - py1, self.frame[1] - px0 - px1
        y0, y1, x0, x1 = box
        return max(0, y0 - py0), min(ny, y1 - py0), max(0, x0 - px0), min(nx, x1 - px0)


def plan_inference(
    hu: np.ndarray,
    spacing: Sequence[float],
    frame: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    batch_size: int,
    *,
    crop_chest: bool = True,
    skip_slices: bool = True,
    resizable: bool = True,
    margin_px: Optional[int] = None,
    margin_slices: Optional[int] = None,
    margin_mm: Optional[float] = None,
    min_window_px: Optional[int] = None,
    context_px: Optional[int] = None,
) -> Plan:
    """Plan the batches of :func:`~napari_pneumoseg.model.segment` (see the module docstring).

    ``frame`` and ``pads`` describe the full path's padded slices; ``resizable``
    is False for networks with a fixed input size (no crop then). The
    margins default to :data:`MARGIN_PX`, :data:`MARGIN_SLICES`,
    :data:`MARGIN_MM`, :data:`MIN_WINDOW_PX` and :data:`CONTEXT_PX`.
    """
    margin_px = MARGIN_PX if margin_px is None else int(margin_px)
    min_window_px = MIN_WINDOW_PX if min_window_px is None else int(min_window_px)
    context_px = CONTEXT_PX if context_px is None else int(context_px)
    if not 0 <= context_px <= margin_px:
        raise ValueError(f"context_px must be between 0 and margin_px ({margin_px}), got {context_px}")
    margin_slices = MARGIN_SLICES if margin_slices is None else int(margin_slices)
    margin_mm = MARGIN_MM if margin_mm is None else float(margin_mm)
    n = int(hu.shape[0])
    full: Box = (0, int(frame[0]), 0, int(frame[1]))
    notes: list[str] = []
    crop = bool(crop_chest) and resizable
    if crop_chest and not resizable:
        notes.append("no crop: this network takes a fixed slice size")
    extent = chest_extent(hu, spacing) if (crop or skip_slices) else None

    lo, hi = 0, n
    if skip_slices:
        lungs = extent.lung_range
        if lungs is None:
            notes.append("no air inside the body found: ran every slice")
        else:
            m = max(int(margin_slices), math.ceil(float(margin_mm) / float(spacing[0]) - 1e-9))
            lo, hi = max(0, lungs[0] - m), min(n, lungs[1] + 1 + m)

    boxes = [full] * (hi - lo)
    if crop:
        study = extent.air(slice(lo, hi)) or extent.box(slice(lo, hi))
        if study is None:
            notes.append("no body found: ran whole slices")
        else:
            boxes = [_window(extent.air(slice(k, k + 1)) or study, pads, full, margin_px, min_window_px)
                     for k in range(lo, hi)]
    return Plan(n, (int(frame[0]), int(frame[1])), pads, _runs(boxes, lo, batch_size, full, context_px), notes)


def _runs(boxes: list[Box], first: int, batch_size: int, full: Box, context: int) -> list[Batch]:
    """Batches of consecutive slices with the same window, at most ``batch_size`` each."""
    batches: list[Batch] = []
    for k, box in enumerate(boxes, start=first):
        last = batches[-1] if batches else None
        if last is not None and last.box == box and last.stop - last.start < batch_size:
            batches[-1] = Batch(last.start, k + 1, box, last.keep)
        else:
            batches.append(Batch(k, k + 1, box, _inner(box, full, context)))
    return batches


def _window(body: Box, pads, full: Box, margin: int, min_side: int) -> Box:
    """A box (image pixels) widened by ``margin``, in frame pixels, out to the 32-pixel grid.

    Sides shorter than ``min_side`` grow about their centre (on the grid, inside the frame).
    """
    (py0, _), (px0, _) = pads
    y0, y1, x0, x1 = body
    y0, y1 = _grow(max(full[0], ((y0 + py0 - margin) // GRID) * GRID),
                   min(full[1], -(-(y1 + py0 + margin) // GRID) * GRID), full[0], full[1], min_side)
    x0, x1 = _grow(max(full[2], ((x0 + px0 - margin) // GRID) * GRID),
                   min(full[3], -(-(x1 + px0 + margin) // GRID) * GRID), full[2], full[3], min_side)
    return y0, y1, x0, x1


def _grow(a0: int, a1: int, lo: int, hi: int, size: int) -> tuple[int, int]:
    """``a0:a1`` (on the grid) grown to ``size`` rounded up to the grid, within ``lo:hi``."""
    if a1 - a0 >= size:
        return a0, a1
    size = min(hi - lo, -(-size // GRID) * GRID)
    a0 -= ((size - (a1 - a0)) // 2 // GRID) * GRID
    a0 = max(lo, min(a0, hi - size))
    return a0, a0 + size


def _inner(box: Box, full: Box, band: int) -> Box:
    """``box`` less ``band`` pixels on each side that is not on the frame's edge."""
    y0, y1, x0, x1 = box
    return (y0 + band if y0 > full[0] else y0, y1 - band if y1 < full[1] else y1,
            x0 + band if x0 > full[2] else x0, x1 - band if x1 < full[3] else x1)

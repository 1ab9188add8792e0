"""Which slices, and which part of each, the network must see: the plan of segment()'s fast path.

The full path runs every slice, padded (centred, with the volume's lowest HU)
to a *frame* whose sides are multiples of 32. The fast path runs a subset of
that same computation:

- **slices**: only the slices from the lungs' base to their apex (air inside
  the body in lung-sized regions, see :func:`~napari_pneumoseg.ct.air.chest_extent`)
  plus a margin of :data:`MARGIN_SLICES` slices and at least
  :data:`MARGIN_MM` mm; a pneumothorax is air inside the pleural cavity and
  cannot lie outside that range. The other slices are labelled background.
- **crop**: the slices run on one window of the frame around the air inside
  the body in them (lungs, airways, pleural air: a pneumothorax is part of
  it), widened by :data:`MARGIN_PX` pixels of context (the chest wall) and
  rounded out to the frame's 32-pixel grid. Not the body's box: arms and
  shoulders widen that to the whole field of view in many chest CTs (on the
  bundled one the fast path ran 74% of the full path's pixels with the body's
  box and 59% with the air's, margins included). One window
  per study, not one per batch: each new input size costs Keras a retrace
  (about 1.5 s) and then runs a shape-generic graph about 13% slower per
  pixel, which on the bundled chest CT cost more than the smaller per-batch
  windows saved. The window is cut from the frame itself, so the network sees
  exactly the full path's pixels inside it, and because its corner lies on the
  32-pixel grid, every stride and pooling step samples the same positions as
  in the full path. Outputs change only through the missing context beyond
  the window edge (the network pads there with zeros), which fades with
  distance from the edge; the margin keeps it away from the pleural space
  (measured in ``benchmarks/bench_fast_inference.py`` and
  ``tests/model/test_fast_inference.py``). Pixels outside the window are
  labelled background: no pneumothorax lies outside the chest wall.

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
#: Pixels of context kept around the air inside the body in each direction, before
#: rounding the window out to the 32-pixel grid (which adds 0-31 more). Measured on
#: phantoms with a briefly trained Unet-ResNet18 and the demo's Unet-ResNet50: with
#: 16 pixels (both) and 32 (the ResNet18) confident voxels (|p - 0.5| up to 0.47-0.5)
#: flipped near the window edge; with 48 (ResNet18) and 64 (both) only coin tosses
#: did (|p - 0.5| <= 0.008).
MARGIN_PX = 48
#: Slices kept beyond the lungs' first and last slice: this many, and at least MARGIN_MM.
MARGIN_SLICES = 2
MARGIN_MM = 10.0

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Batch:
    """Slices ``start:stop`` run on the frame window ``box`` = ``(y0, y1, x0, x1)`` (frame pixels)."""

    start: int
    stop: int
    box: Box

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
        """Union of the batch windows, in frame pixels."""
        if not self.batches:
            return None
        b = np.array([x.box for x in self.batches])
        return int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max())

    def image_box(self, box: Optional[Box] = None) -> Optional[Box]:
        """A frame window (default: :attr:`box`) as image pixels, clipped to the image."""
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
    crop_body: bool = True,
    skip_slices: bool = True,
    resizable: bool = True,
    margin_px: Optional[int] = None,
    margin_slices: Optional[int] = None,
    margin_mm: Optional[float] = None,
) -> Plan:
    """Plan the batches of :func:`~napari_pneumoseg.model.segment` (see the module docstring).

    ``frame`` and ``pads`` describe the full path's padded slices; ``resizable``
    is False for networks with a fixed input size (no crop then). The
    margins default to :data:`MARGIN_PX`, :data:`MARGIN_SLICES` and :data:`MARGIN_MM`.
    """
    margin_px = MARGIN_PX if margin_px is None else int(margin_px)
    margin_slices = MARGIN_SLICES if margin_slices is None else int(margin_slices)
    margin_mm = MARGIN_MM if margin_mm is None else float(margin_mm)
    n = int(hu.shape[0])
    full: Box = (0, int(frame[0]), 0, int(frame[1]))
    notes: list[str] = []
    crop = bool(crop_body) and resizable
    if crop_body and not resizable:
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

    box = full
    if crop:
        target = extent.air(slice(lo, hi)) or extent.box(slice(lo, hi))
        if target is None:
            notes.append("no body found: ran whole slices")
        else:
            box = _window(target, pads, full, margin_px)
    batches = [Batch(start, min(start + batch_size, hi), box) for start in range(lo, hi, batch_size)]
    return Plan(n, (int(frame[0]), int(frame[1])), pads, batches, notes)


def _window(body: Box, pads, full: Box, margin: int) -> Box:
    """A box (image pixels) widened by ``margin``, in frame pixels, out to the 32-pixel grid."""
    (py0, _), (px0, _) = pads
    y0, y1, x0, x1 = body
    y0, y1 = y0 + py0 - margin, y1 + py0 + margin
    x0, x1 = x0 + px0 - margin, x1 + px0 + margin
    return (max(full[0], (y0 // GRID) * GRID), min(full[1], -(-y1 // GRID) * GRID),
            max(full[2], (x0 // GRID) * GRID), min(full[3], -(-x1 // GRID) * GRID))

"""Batches for training: whole slices or pneumothorax-biased patches, with mild augmentation.

Only augmentations that keep anatomy plausible: small intensity jitter, small
shifts and rotations, and zoom. No left-right flip: per-side volumes depend on
the patient's left staying left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..model.preprocess import centred_padding


@dataclass
class Augment:
    """Ranges of the random transforms (all mild)."""

    rotate_deg: float = 10.0
    zoom: float = 0.10
    shift_px: int = 16
    intensity_scale: float = 0.05
    intensity_shift: float = 0.03


def _pad_to(image: np.ndarray, mask: np.ndarray, size: int, fill: float):
    """Pad a slice (and its mask), centred, so both sides are at least ``size``."""
    ny, nx = image.shape
    return pad_to(image, mask, (max(ny, size), max(nx, size)), fill)


def crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
         positive_fraction: float, fill: float, jitter: int = 0):
    """A ``size`` x ``size`` patch, centred on pneumothorax with ``positive_fraction`` chance."""
    image, mask = _pad_to(image, mask, size, fill)
    ny, nx = image.shape
    ys, xs = np.nonzero(mask)
    if ys.size and rng.random() < positive_fraction:
        i = rng.integers(ys.size)
        cy, cx = ys[i], xs[i]
        if jitter:
            cy += rng.integers(-jitter, jitter + 1)
            cx += rng.integers(-jitter, jitter + 1)
        y0 = int(np.clip(cy - size // 2, 0, ny - size))
        x0 = int(np.clip(cx - size // 2, 0, nx - size))
    else:
        y0 = int(rng.integers(0, ny - size + 1))
        x0 = int(rng.integers(0, nx - size + 1))
    return image[y0:y0 + size, x0:x0 + size], mask[y0:y0 + size, x0:x0 + size]


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, aug: Augment, fill: float):
    """Rotate/zoom/shift about the centre (mask by nearest neighbour), then jitter intensity."""
    angle = np.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    scale = 1.0 + rng.uniform(-aug.zoom, aug.zoom)
    shift = rng.uniform(-aug.shift_px, aug.shift_px, size=2)
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.array([[c, -s], [s, c]])
    centre = (np.array(image.shape) - 1) / 2.0
    offset = centre - matrix @ (centre + shift)
    image = ndimage.affine_transform(image, matrix, offset, order=1, mode="constant", cval=fill)
    mask = ndimage.affine_transform(mask, matrix, offset, order=0, mode="constant", cval=0)
    image = image * (1 + rng.uniform(-aug.intensity_scale, aug.intensity_scale)) \
        + rng.uniform(-aug.intensity_shift, aug.intensity_shift)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


class SliceBatches:
    """Index-able batches over (case, slice) items of preprocessed volumes in [0, 1].

    With ``patch_size`` each item becomes one random patch (biased towards
    pneumothorax); without it, whole slices (padded to a multiple of 32).
    ``deterministic`` fixes the patches (for validation, the same every epoch).
    Padding, and what rotations and shifts bring in from beyond the slice, is
    each volume's lowest value (``fill=None``, the default), centred: what
    :func:`~napari_pneumoseg.model.segment` pads a slice with (the volume's
    lowest HU, preprocessed); a number gives one fill for every volume.
    """

    def __init__(self, volumes: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 items: Sequence[tuple[int, int]], batch_size: int, *,
                 patch_size: Optional[int] = None, augment_with: Optional[Augment] = None,
                 positive_fraction: float = 0.5, seed: int = 0, deterministic: bool = False,
                 shuffle: bool = True, fill: Optional[float] = None):
        if not items:
            raise ValueError("no slices to make batches from")
        self.volumes, self.masks, self.items = volumes, masks, list(items)
        self.batch_size, self.patch_size = int(batch_size), patch_size
        self.aug, self.positive_fraction = augment_with, positive_fraction
        self.seed, self.deterministic, self.shuffle = seed, deterministic, shuffle
        self.fills = [float(np.min(v)) if fill is None else float(fill) for v in volumes]
        self.epoch = 0
        self.order = np.arange(len(self.items))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.items) / self.batch_size))

    def on_epoch_end(self) -> None:
        if self.shuffle and not self.deterministic:
            self.order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.items))
        self.epoch += 1

    def __getitem__(self, b: int):
        idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, 0 if self.deterministic else self.epoch, b))
        xs, ys, fills = [], [], []
        for i in idx:
            c, k = self.items[i]
            image, mask, fill = self.volumes[c][k], self.masks[c][k], self.fills[c]
            if self.patch_size:
                image, mask = crop(image, mask, self.patch_size, rng, self.positive_fraction,
                                   fill, jitter=self.patch_size // 4)
            if self.aug is not None and not self.deterministic:
                image, mask = augment(image, mask, rng, self.aug, fill)
            xs.append(image)
            ys.append(mask)
            fills.append(fill)
        if not self.patch_size:  # whole slices: pad to a common multiple of 32
            ny = max(a.shape[0] for a in xs)
            nx = max(a.shape[1] for a in xs)
            ny, nx = ny + (-ny) % 32, nx + (-nx) % 32
            xs, ys = zip(*(pad_to(a, m, (ny, nx), f) for a, m, f in zip(xs, ys, fills)))
        x = np.stack(xs)[..., None].astype(np.float32)
        y = np.stack(ys)[..., None].astype(np.float32)
        return x, y


def pad_to(image: np.ndarray, mask: np.ndarray, shape: tuple[int, int], fill: float):
    """Pad a slice and its mask, centred (:func:`~napari_pneumoseg.model.preprocess.centred_padding`),
    to ``shape``: the image with ``fill``, the mask with 0."""
    pads = (centred_padding(image.shape[0], shape[0]), centred_padding(image.shape[1], shape[1]))
    if any(pads[0]) or any(pads[1]):
        image = np.pad(image, pads, constant_values=fill)
        mask = np.pad(mask, pads)
    return image, mask

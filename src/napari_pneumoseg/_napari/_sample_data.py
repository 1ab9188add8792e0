"""npe2 sample data: a pneumothorax phantom and its truth, as napari layer data."""

from __future__ import annotations

from typing import Any

from ..ct.volume import geometry_metadata
from ..phantom import make_phantom


def sample_phantom() -> list[tuple[Any, dict, str]]:
    """Make the napari sample: a moderate left pneumothorax phantom and its truth.

    A 60 x 256 x 256 phantom at (5.0, 1.4, 1.4) mm (seed 0, see
    :func:`~napari_pneumoseg.phantom.make_phantom`), as an Image layer in HU
    and a Labels layer of its truth, both placed in mm with the CT's
    ``scale`` and :attr:`~napari_pneumoseg.ct.CTVolume.translate` so they
    overlay each other and any other layer of the same CT. It takes no
    arguments and raises nothing of its own.

    Returns
    -------
    list of tuple
        ``[(hu, kwargs, "image"), (truth, kwargs, "labels")]``, napari layer
        data. The image's metadata holds the CT's geometry and metadata under
        ``"pneumoseg_ct"`` and the phantom's ``info`` under ``"phantom"``;
        the labels' metadata holds ``"phantom"``.

    Examples
    --------
    >>> from napari_pneumoseg._napari._sample_data import sample_phantom
    >>> (hu, kw, kind), (truth, tkw, tkind) = sample_phantom()
    >>> kind, tkind, hu.shape, kw["scale"]
    ('image', 'labels', (60, 256, 256), (5.0, 1.4, 1.4))
    """
    ph = make_phantom(seed=0, side="left", size="moderate", n_slices=60,
                      spacing=(5.0, 1.4, 1.4), shape_yx=(256, 256))
    ct = ph.ct
    translate = ct.translate
    meta = {**geometry_metadata(ct), "phantom": ph.info}
    return [
        (ct.hu, {"name": "Pneumothorax phantom", "scale": ct.spacing, "translate": translate,
                 "contrast_limits": (-1000, 400), "colormap": "gray", "metadata": meta}, "image"),
        (ph.truth, {"name": "Pneumothorax phantom truth", "scale": ct.spacing,
                    "translate": translate, "metadata": {"phantom": ph.info}}, "labels"),
    ]

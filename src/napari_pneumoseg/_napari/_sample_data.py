"""npe2 sample data: a pneumothorax phantom, and a real chest CT with a simulated pneumothorax."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ct.volume import geometry_metadata
from ..data import load_sample_ct
from ..phantom import make_phantom

#: The simulated pneumothorax the real-CT sample shows.
SAMPLE_SIMULATION = {"side": "right", "size": "moderate", "seed": 0}


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


def sample_real_ct() -> list[tuple[Any, dict, str]]:
    """Make the napari sample: a real chest CT with a simulated right pneumothorax, and its truth.

    The packaged CT (:func:`napari_pneumoseg.data.load_sample_ct`: TCIA Lung-PET-CT-Dx A0001,
    CC BY 4.0) with a moderate right pneumothorax added by
    :func:`~napari_pneumoseg.simulate.simulate_pneumothorax` (seed 0), as an
    Image layer in HU and a Labels layer of the truth, placed in mm with the
    CT's ``scale`` and :attr:`~napari_pneumoseg.ct.CTVolume.translate` so
    they overlay each other.

    Returns
    -------
    list of tuple
        ``[(hu, kwargs, "image"), (truth, kwargs, "labels")]``, napari layer
        data. The image's metadata holds the CT's geometry and metadata under
        ``"pneumoseg_ct"`` and the simulation's facts (volumes, % of the
        hemithorax, rim depth, parameters) under ``"simulation"``; the
        labels' metadata holds ``"simulation"``.

    Raises
    ------
    FileNotFoundError
        The sample file is missing from the installed package.

    Examples
    --------
    >>> (hu, kw, kind), (truth, tkw, tkind) = sample_real_ct()
    >>> kind, tkind, hu.shape == truth.shape, kw["scale"] == tkw["scale"]
    ('image', 'labels', True, True)
    """
    from ..simulate import simulate_pneumothorax

    case = simulate_pneumothorax(load_sample_ct(), **SAMPLE_SIMULATION)
    ct = case.ct
    translate = ct.translate
    name = "Real chest CT with simulated pneumothorax"
    meta = {**geometry_metadata(ct), "simulation": case.facts}
    return [
        (ct.hu, {"name": name, "scale": ct.spacing, "translate": translate,
                 "contrast_limits": (-1000, 400), "colormap": "gray", "metadata": meta}, "image"),
        (np.asarray(case.truth, dtype=np.uint8),
         {"name": f"{name} truth", "scale": ct.spacing, "translate": translate,
          "metadata": {"simulation": case.facts}}, "labels"),
    ]

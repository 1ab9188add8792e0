"""Data the package ships: a real chest CT (TCIA Lung-PET-CT-Dx A0001, CC BY 4.0, reduced).

Its licence (``LICENSE-tcia-cc-by-4.0``) and a README saying where it comes from
and what was done to it lie beside it; ``scripts/make_sample_data.py`` remakes it.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from ..ct.volume import CTVolume

#: The packaged real CT, beside this module with its licence and README.
SAMPLE_CT_FILE = "chest_ct_tcia_A0001.npz"

__all__ = ["SAMPLE_CT_FILE", "load_sample_ct"]


def load_sample_ct() -> CTVolume:
    """The packaged real chest CT, without a pneumothorax, as a CTVolume.

    TCIA Lung-PET-CT-Dx subject A0001 (CC BY 4.0; licence and attribution
    in this package's folder): all 64 slices of 5 mm, cropped
    to the body and downsampled in-plane by 2 to 1.68 mm pixels, HU in
    int16 (see ``data/README.md`` and ``scripts/make_sample_data.py``).
    Loaded without pickles.

    Returns
    -------
    CTVolume
        ``hu`` as float32 ``(z, y, x)``, with the stored spacing, origin and
        direction; ``metadata`` holds ``series_description``,
        ``patient_position``, ``source`` (the collection, subject and
        licence) and ``sample_file``.

    Raises
    ------
    FileNotFoundError
        The sample file is missing from the installed package.

    Examples
    --------
    >>> ct = load_sample_ct()
    >>> ct.shape, tuple(round(s, 4) for s in ct.spacing)
    ((64, 184, 256), (5.0, 1.6836, 1.6836))
    """
    ref = resources.files(__package__).joinpath(SAMPLE_CT_FILE)
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        return CTVolume(
            hu=npz["hu"].astype(np.float32),
            spacing=tuple(npz["spacing"].tolist()),
            origin=tuple(npz["origin"].tolist()),
            direction=npz["direction"],
            metadata={"series_description": str(npz["series_description"]),
                      "patient_position": str(npz["patient_position"]),
                      "modality": "CT",
                      "source": str(npz["source"]),
                      "sample_file": SAMPLE_CT_FILE},
        )

"""Writing a phantom as a case folder: the CT as DICOM, the truth as NRRD, the facts as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._make import Phantom


def write_phantom_case(phantom: Phantom, folder: str | os.PathLike, *, overwrite: bool = False,
                       progress=None, cancel=None) -> Path:
    """Write a phantom as a case folder: ``ct/`` (DICOM series), ``truth.nrrd`` and ``info.json``.

    The NRRD mask carries the CT's LPS geometry, so 3D Slicer overlays it on
    the DICOM; ``info.json`` is ``phantom.info``. All or nothing: the case
    appears only when completely written.

    Parameters
    ----------
    phantom : Phantom
        A phantom from :func:`make_phantom`.
    folder : str or os.PathLike
        The case folder to create (its parents are created as needed).
    overwrite : bool, default False
        Replace an existing non-empty ``folder``.
    progress : callable, optional
        Called as ``progress(done, total, text)`` while the DICOM slices are written.
    cancel : callable or threading.Event, optional
        Checked while writing; when it is set (or returns true) writing stops
        and nothing is left behind.

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    FileExistsError
        If ``folder`` is a file, or a non-empty folder and ``overwrite`` is false.
    napari_pneumoseg.progress.Cancelled
        If ``cancel`` asked to stop; ``folder`` is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from napari_pneumoseg.phantom import make_phantom, write_phantom_case
    >>> ph = make_phantom(seed=9, side="right", size="large", n_slices=16, shape_yx=(96, 96))
    >>> case = write_phantom_case(ph, Path(tempfile.mkdtemp()) / "case")
    >>> sorted(p.name for p in case.iterdir())
    ['ct', 'info.json', 'truth.nrrd']
    """
    from ..ct.write import write_dicom_series
    from ..io.atomic import atomic_folder
    from ..io.masks import write_mask

    folder = Path(folder)
    info = phantom.info
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        write_dicom_series(phantom.ct, tmp / "ct", series_description="Pneumothorax phantom",
                           patient_id=f"PHANTOM-{info['seed']}",
                           patient_name=f"Phantom^{info['side']} {info['size']}",
                           progress=progress, cancel=cancel)
        write_mask(phantom.truth, tmp / "truth.nrrd", phantom.ct)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return folder

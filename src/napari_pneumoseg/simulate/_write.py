"""Write a simulated case to disk as one patient folder of a training dataset."""

from __future__ import annotations

from pathlib import Path


def write_simulated_case(case, folder, *, overwrite: bool = False, progress=None, cancel=None) -> Path:
    """Write a simulated case as a patient folder: ``ct/``, ``truth.seg.nrrd`` and ``facts.json``.

    The layout :func:`~napari_pneumoseg.training.load_cases` reads: the CT as
    a new DICOM series when it was not read from DICOM, else as a series derived from the source's
    (:func:`~napari_pneumoseg.ct.write.write_derived_series`: the source's
    patient, study, geometry and equipment tags, new Series and SOP Instance
    UIDs, a SeriesDescription that says it is simulated), the truth as a 3D
    Slicer segmentation on the CT's grid, and the facts as JSON. All or
    nothing: the folder appears only when completely written.

    Parameters
    ----------
    case : SimulatedCase
        From :func:`napari_pneumoseg.simulate.simulate_pneumothorax`: ``ct``
        (a CT read from DICOM with new HU), ``truth``, ``facts``,
        ``as_json()``.
    folder : str or os.PathLike
        The patient folder to create (parents are created).
    overwrite : bool, default False
        Replace an existing non-empty ``folder``.
    progress : callable, optional
        ``progress(done, total, text)`` while the DICOM slices are written.
    cancel : callable or threading.Event, optional
        Checked while writing; nothing is left behind when it says stop.

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    FileExistsError
        ``folder`` is a file, or a non-empty folder and ``overwrite`` is false.
    ValueError
        The case's CT names source DICOM files (``metadata["files"]``) that are
        not on its grid (see :func:`~napari_pneumoseg.ct.write.write_derived_series`).
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so; ``folder`` is left as it was.

    Examples
    --------
    With :func:`~napari_pneumoseg.simulate.simulate_pneumothorax`'s result
    ``case = simulate_pneumothorax(read_ct("chest/"), side="left")``, or a
    stand-in made by hand as here:

    >>> import json, tempfile, types
    >>> import numpy as np
    >>> from napari_pneumoseg.ct import CTVolume, read_ct, write_dicom_series
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = write_dicom_series(CTVolume(np.full((3, 8, 8), 40.0), spacing=(5.0, 1.0, 1.0)), root / "src")
    >>> source = read_ct(root / "src")
    >>> truth = np.zeros(source.shape, np.uint8)
    >>> truth[1, 2:4, 2:4] = 1
    >>> ct = CTVolume(np.where(truth, -1000.0, source.hu), source.spacing, source.origin,
    ...               source.direction, metadata=source.metadata)
    >>> facts = {"volume_ml": {"total": float(truth.sum()) * ct.voxel_volume_ml}}
    >>> case = types.SimpleNamespace(ct=ct, truth=truth, facts=facts, as_json=lambda: json.dumps(facts))
    >>> sorted(p.name for p in write_simulated_case(case, root / "patient").iterdir())
    ['ct', 'facts.json', 'truth.seg.nrrd']
    """
    from .. import __version__
    from ..training.cases import write_case_folder

    facts = case.facts or {}
    params = facts.get("parameters") or {}
    what = " ".join(str(params[k]) for k in ("side", "size") if params.get(k) is not None)
    seed = f" seed {params['seed']}" if params.get("seed") is not None else ""
    src = case.ct.metadata.get("series_description") or ""
    description = f"SIMULATED pneumothorax {what}{seed}".replace("  ", " ").strip()
    derivation = (f"SIMULATED pneumothorax ({what}{seed}) added by napari-pneumoseg {__version__} "
                  f"to series {case.ct.metadata.get('series_instance_uid') or '(no UID)'}"
                  + (f" ({src})" if src else "") + ": not a real finding.")
    return write_case_folder(folder, case.ct, case.truth, sidecar=("facts.json", case.as_json()),
                             series_description=description, derivation=derivation, overwrite=overwrite,
                             progress=progress, cancel=cancel)

"""What a Dask worker runs for one series: read, segment, measure, write its folder.

Pure functions of their arguments plus one per-process cache: the model is
loaded on a worker's first network task and kept for the next ones (keyed by
the model file's path, size and modification time), never sent with a task.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .discover import SeriesTask

#: Volume columns of ``results.csv``, always written (names of :class:`~napari_pneumoseg.measure.Measurement`).
VOLUME_COLUMNS = ("volume_ml", "left_ml", "right_ml", "left_pct_hemithorax", "right_pct_hemithorax")
#: Measurement fields not repeated in ``results.csv`` (the lung itself is not a result).
_NOT_RESULTS = ("left_lung_ml", "right_lung_ml")


@dataclass(frozen=True)
class Settings:
    """How every series of a batch is segmented and measured (what a result depends on besides its files).

    ``model`` is the model file (network) or None (pleural air); ``model_id``
    its resolved path, size and modification time, so a changed model file
    makes earlier results out of date.
    """

    method: str = "network"
    model: Optional[str] = None
    model_id: Optional[str] = None
    format: str = "seg.nrrd"
    measure: bool = False
    batch_size: int = 4
    threshold: Optional[float] = None
    crop_chest: bool = True
    skip_slices: bool = True
    device: str = "auto"

    @property
    def digest(self) -> str:
        """SHA-256 (16 hex digits) of what changes the outputs (not batch size, device or the path's spelling)."""
        d = asdict(self)
        for k in ("batch_size", "device", "model"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def mask_name(self) -> str:
        """The mask's file name in each series folder, e.g. ``pneumothorax.seg.nrrd``."""
        return f"pneumothorax.{self.format}"

    @property
    def what(self) -> str:
        """The method column: ``pleural-air`` or ``network``."""
        return self.method


def model_id(path) -> str:
    """``<resolved path>|<size>|<mtime ns>`` of a model file: changes when the file does."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def result_columns(settings: Settings) -> list[str]:
    """The columns of ``results.csv`` for these settings, in order.

    Study and series, what made the mask, the volumes per side and % of
    hemithorax; with ``settings.measure`` also every per-side guideline measure
    and size class :meth:`Measurement.as_row` gives; then slices, seconds and
    warnings.
    """
    from ..measure import Measurement

    sizing = []
    if settings.measure:
        sizing = [c for c in Measurement.columns() if c.startswith(("left_", "right_"))
                  and c not in VOLUME_COLUMNS and c not in _NOT_RESULTS]
    return ["study_instance_uid", "series_instance_uid", "series_description", "method", "model", "mask",
            *VOLUME_COLUMNS, *sizing, "slices", "spacing_z_mm", "seconds", "warnings"]


# --------------------------------------------------------------------------- model cache

_MODELS: dict = {}
_LOCK = threading.Lock()
#: How many times this process loaded a model (the tests check it stays one per worker).
LOADS = 0


def cached_model(path, device: str = "auto"):
    """The model file ``path`` loaded once per process (again only if the file changed).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pnxmodel`` (or Keras) file.
    device : {"auto", "cpu", "gpu"}
        Configured once, before the first load (TensorFlow's devices can only
        be set before it initialises).

    Returns
    -------
    ModelBundle
        The same object for every call with an unchanged file.

    Raises
    ------
    ModelLoadError, FileNotFoundError
        As :func:`~napari_pneumoseg.model.load_model`.
    """
    global LOADS
    from ..model import configure_device, load_model

    key = model_id(path)
    with _LOCK:
        if key not in _MODELS:
            if not _MODELS and LOADS == 0:
                _limit_tf_threads()
                configure_device(device)
            _MODELS.clear()
            _MODELS[key] = load_model(path)
            LOADS += 1
        return _MODELS[key]


def _limit_tf_threads() -> None:
    """TensorFlow's intra-op pool to this worker's share of the cores, when a share was given."""
    from ..model._backend import keras_modules
    from ..resources import ENV, cpu_budget

    if os.environ.get(ENV):
        tf = keras_modules().tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_budget())
        except RuntimeError:  # TensorFlow already started in this process: keep its pool
            pass


# --------------------------------------------------------------------------- one series


def process_series(task: SeriesTask, settings: Settings, out: str) -> dict:
    """Read, segment and measure one series and write its folder; the status record.

    The folder ``out/<study>/<series>/`` (the mask and ``result.json``, which
    holds the record) appears whole or not at all
    (:func:`~napari_pneumoseg.io.atomic.atomic_folder`), replacing an earlier,
    out-of-date one.

    Parameters
    ----------
    task : SeriesTask
        The series.
    settings : Settings
        Method, model and format.
    out : str
        The batch's output folder (shared with the driver).

    Returns
    -------
    dict
        The status record: ``status`` "done" (with ``row``, the results.csv
        row, and ``mask``) or "refused" (with ``reason``: the reader's
        :class:`~napari_pneumoseg.ct.CTReadError` message); plus ``study``,
        ``series``, ``folder``, ``fingerprint``, ``settings``, ``seconds``,
        ``warnings`` and ``worker`` (host and pid).

    Raises
    ------
    Exception
        Anything else (a bug, a full disk, a model that cannot load): Dask
        retries the task, then the driver records it as failed.
    """
    from ..ct import CTReadError, read_ct
    from ..io.atomic import atomic_folder
    from ..io.masks import write_mask
    from ..measure import measure

    start = time.monotonic()
    record = {"study": task.study_uid, "series": task.series_uid, "folder": task.folder,
              "source": os.path.commonpath([os.path.dirname(f) for f in task.files]) if task.files else "",
              "fingerprint": task.fingerprint, "settings": settings.digest,
              "worker": f"{os.uname().nodename}:{os.getpid()}" if hasattr(os, "uname") else str(os.getpid())}
    if task.refusal:
        return {**record, "status": "refused", "reason": task.refusal, "seconds": 0.0, "warnings": []}
    try:
        ct = read_ct(list(task.files), series_uid=task.series_uid)
    except CTReadError as exc:
        return {**record, "status": "refused", "reason": str(exc),
                "seconds": round(time.monotonic() - start, 3), "warnings": []}
    mask, warnings = series_mask(ct, settings)
    m = measure(mask, ct=ct, sizing=settings.measure)
    warnings = list(ct.warnings) + warnings + list(m.notes)
    seconds = round(time.monotonic() - start, 3)
    row = m.as_row()
    row.update({"study_instance_uid": task.study_uid, "series_instance_uid": task.series_uid,
                "series_description": task.description, "method": settings.what,
                "model": settings.model or "", "mask": f"{task.folder}/{settings.mask_name}",
                "slices": ct.shape[0], "seconds": seconds, "warnings": "; ".join(warnings)})
    row = {c: row.get(c) for c in result_columns(settings)}
    record.update({"status": "done", "mask": row["mask"], "seconds": seconds, "warnings": warnings, "row": row})
    folder = Path(out) / task.folder
    with atomic_folder(folder, overwrite=True) as tmp:
        write_mask(mask, tmp / settings.mask_name, ct)
        (tmp / "result.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def series_mask(ct, settings: Settings):
    """The mask of ``ct`` as ``pneumoseg segment`` makes it with these settings, and its warnings.

    The same calls as the CLI's ``--method pleural-air`` / network paths, so
    the batch's masks equal the single-study command's; the model comes from
    :func:`cached_model`.
    """
    if settings.method == "pleural-air":
        from ..pleural import find_pleural_air

        found = find_pleural_air(ct)
        return found.mask, list(found.warnings)
    from ..model import segment

    bundle = cached_model(settings.model, settings.device)
    result = segment(ct, bundle, batch_size=settings.batch_size, threshold=settings.threshold,
                     crop_chest=settings.crop_chest, skip_slices=settings.skip_slices)
    return result.mask, list(bundle.warnings)

"""What the engine process can do. Runs only inside the engine (imports TensorFlow)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..progress import check_cancel
from .requests import REQUESTS, SegmentRequest, SelfTestRequest, TrainRequest

_models: dict[tuple[str, float], Any] = {}


def warm_up() -> dict:
    """Set the device up and import TensorFlow once, so the first job starts fast."""
    from ..model import configure_device

    configure_device(os.environ.get("PNEUMOSEG_DEVICE", "auto"))
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "pid": os.getpid(),
    }


def run(kind: str, params: dict, *, progress: Callable, cancel, event: Callable = None) -> dict:
    """Run the job ``kind`` with ``params`` (a request's plain data, see :mod:`.requests`)."""
    try:
        request_type, job = REQUESTS[kind], JOBS[kind]
    except KeyError:
        raise ValueError(f"unknown engine job {kind!r}") from None
    return job(request_type.from_params(params), progress=progress, cancel=cancel, event=event)


def _model(path: str):
    """Load a model bundle once per file version (path + modification time)."""
    from ..model import load_model

    key = (str(Path(path).resolve()), os.path.getmtime(path))
    if key not in _models:
        _models.clear()  # keep one model in memory
        _models[key] = load_model(path)
    return _models[key]


def segment_job(request: SegmentRequest, *, progress, cancel, event=None) -> dict:
    from ..ct import CTVolume
    from ..model import segment

    ct = CTVolume(hu=np.load(request.ct, mmap_mode="r"), spacing=request.spacing,
                  origin=request.origin, direction=np.asarray(request.direction))
    progress(0, ct.shape[0], "loading model")
    bundle = _model(request.model)
    check_cancel(cancel)
    start = time.monotonic()
    result = segment(ct, bundle, batch_size=request.batch_size, threshold=request.threshold,
                     return_probabilities=request.probabilities, crop_chest=request.crop_chest,
                     skip_slices=request.skip_slices, progress=progress, cancel=cancel)
    out = Path(request.out_dir)
    np.save(out / "mask.npy", result.mask)
    paths = {"mask": str(out / "mask.npy"), "probabilities": None}
    if result.probabilities is not None:
        np.save(out / "probabilities.npy", result.probabilities)
        paths["probabilities"] = str(out / "probabilities.npy")
    return {**paths, "seconds": time.monotonic() - start, "model_config": bundle.config,
            "info": result.info.as_dict()}


def selftest_job(request: SelfTestRequest, *, progress, cancel, event=None) -> dict:
    """Exercise the engine's plumbing without the network (see :class:`.SelfTestRequest`)."""
    for i in range(request.steps):
        if request.crash and i == request.crash:
            os._exit(3)
        if request.fail and i == request.fail:
            raise ValueError("self-test failure requested")
        if not request.ignore_cancel:
            check_cancel(cancel)
        time.sleep(request.step_s)
        progress(i + 1, request.steps, f"step {i + 1}")
        if event is not None and request.events:
            event({"step": i + 1})
    return {"steps": request.steps, "pid": os.getpid()}


def train_job(request: TrainRequest, *, progress, cancel, event=None) -> dict:
    """Train from a dataset folder or from arrays saved by the client; save curves beside the model."""
    from ..training import train
    from ..training.curves import save_curves_png

    if request.dataset:
        cases = request.dataset
    else:
        cases = [(np.load(c["ct"]), np.load(c["mask"]), tuple(c["spacing"])) for c in request.cases]
    result = train(cases, request.out, progress=progress, cancel=cancel,
                   on_epoch=(lambda epoch, logs: event({"epoch": epoch, "logs": logs}))
                   if event else None, **request.train_options())
    curves = None
    if result.history and result.model_path is not None:
        curves = str(Path(result.model_path).with_suffix(".curves.png"))
        save_curves_png(result.history, curves)
    return {"model_path": str(result.model_path) if result.model_path else None,
            "history": result.history, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss, "stopped": result.stopped,
            "table": result.table, "split": result.split, "seconds": result.seconds,
            "curves_png": curves}


JOBS = {"segment": segment_job, "train": train_job, "selftest": selftest_job}

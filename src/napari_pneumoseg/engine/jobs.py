"""What the engine process can do. Runs only inside the engine (imports TensorFlow)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..progress import check_cancel

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
    try:
        job = JOBS[kind]
    except KeyError:
        raise ValueError(f"unknown engine job {kind!r}") from None
    return job(params, progress=progress, cancel=cancel, event=event)


def _model(path: str):
    """Load a model bundle once per file version (path + modification time)."""
    from ..model import load_model

    key = (str(Path(path).resolve()), os.path.getmtime(path))
    if key not in _models:
        _models.clear()  # keep one model in memory
        _models[key] = load_model(path)
    return _models[key]


def segment_job(params: dict, *, progress, cancel, event=None) -> dict:
    from ..ct import CTVolume
    from ..model import segment

    ct = CTVolume(
        hu=np.load(params["ct"], mmap_mode="r"),
        spacing=params["spacing"],
        origin=params.get("origin", (0.0, 0.0, 0.0)),
        direction=np.asarray(params.get("direction", np.eye(3)[::-1])),
    )
    progress(0, ct.shape[0], "loading model")
    bundle = _model(params["model"])
    check_cancel(cancel)
    start = time.monotonic()
    want_probs = bool(params.get("probabilities"))
    result = segment(
        ct, bundle,
        batch_size=params.get("batch_size", 4),
        threshold=params.get("threshold"),
        return_probabilities=want_probs,
        crop_chest=params.get("crop_chest", True),
        skip_slices=params.get("skip_slices", True),
        return_info=True,
        progress=progress, cancel=cancel,
    )
    mask, probabilities, info = result if want_probs else (result[0], None, result[1])
    out = Path(params["out_dir"])
    np.save(out / "mask.npy", mask)
    paths = {"mask": str(out / "mask.npy"), "probabilities": None}
    if probabilities is not None:
        np.save(out / "probabilities.npy", probabilities)
        paths["probabilities"] = str(out / "probabilities.npy")
    return {**paths, "seconds": time.monotonic() - start, "model_config": bundle.config,
            "info": info.as_dict()}


def selftest_job(params: dict, *, progress, cancel, event=None) -> dict:
    """Exercise the engine's plumbing without the network (diagnostics and tests).

    Counts ``steps`` steps of ``step_s`` seconds, honouring cancel between steps
    unless ``ignore_cancel`` (to check the client's hard cancel); ``fail``
    raises a ValueError, ``crash`` ends the process abruptly.
    """
    steps, step_s = int(params.get("steps", 5)), float(params.get("step_s", 0.1))
    for i in range(steps):
        if params.get("crash") and i == params["crash"]:
            os._exit(3)
        if params.get("fail") and i == params["fail"]:
            raise ValueError("self-test failure requested")
        if not params.get("ignore_cancel"):
            check_cancel(cancel)
        time.sleep(step_s)
        progress(i + 1, steps, f"step {i + 1}")
        if event is not None and params.get("events"):
            event({"step": i + 1})
    return {"steps": steps, "pid": os.getpid()}


def train_job(params: dict, *, progress, cancel, event=None) -> dict:
    """Train from a dataset folder or from arrays saved by the client; save curves beside the model."""
    from ..training import train
    from ..training.curves import save_curves_png

    if "dataset" in params:
        cases = params["dataset"]
    else:
        cases = [(np.load(c["ct"]), np.load(c["mask"]), tuple(c["spacing"])) for c in params["cases"]]
    options = {k: params[k] for k in ("epochs", "batch_size", "learning_rate", "patience", "split",
                                      "seed", "patch_size", "augment", "backbone",
                                      "encoder_weights", "steps_per_epoch", "overwrite")
               if k in params}
    result = train(cases, params["out"], progress=progress, cancel=cancel,
                   on_epoch=(lambda epoch, logs: event({"epoch": epoch, "logs": logs}))
                   if event else None, **options)
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

"""Run a segmentation network over a CT volume, slice by slice in batches.

:func:`segment` is the one inference path: Segment, the CLI, the engine and the
Table 2 evaluation of a trained model all call it. It runs one compiled graph
for any input size (:func:`_predictor`), prepares the next batch in a
background thread while the network runs, and by default runs only what
:mod:`.plan` selects (the lungs' slices, each on a window around its air
inside the chest). Speed measurements and the alternatives that were tried
(XLA, oneDNN options, ONNX Runtime) are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..ct.volume import CTVolume
from ..progress import ProgressFn, check_cancel, report
from ._backend import keras_modules
from .bundle import ModelBundle, load_model
from .plan import Batch, plan_inference
from .preprocess import centred_padding, preprocess, volume_stats
from .resample import needs_resampling, resample_slices, target_shape

SIZE_MULTIPLE = 32
#: Slices per network batch when the caller does not choose (segment(), Table 2 evaluation).
DEFAULT_BATCH_SIZE = 4


def foreground(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The one threshold rule: a voxel is pneumothorax when its probability is above ``threshold``.

    ``>`` as Keras' and segmentation-models' metrics. Every mask the package
    makes from probabilities (segmentation, Table 2 evaluation) goes through here.

    Parameters
    ----------
    probabilities : numpy.ndarray
        Probabilities in [0, 1], any shape.
    threshold : float
        Voxels with a probability strictly above it are foreground.

    Returns
    -------
    numpy.ndarray
        Boolean array of the same shape.
    """
    return np.asarray(probabilities) > threshold


@dataclass
class SegmentResult:
    """What :func:`segment` returns.

    Attributes
    ----------
    mask : numpy.ndarray
        uint8 ``(z, y, x)``, 1 = pneumothorax, on the CT's grid.
    probabilities : numpy.ndarray or None
        float32 ``(z, y, x)`` in [0, 1] when asked for (``return_probabilities``),
        else None. Slices and pixels that did not run are 0.
    info : InferenceInfo
        What ran (slices, pixels, windows) and how long it took.
    """

    mask: np.ndarray
    probabilities: Optional[np.ndarray]
    info: "InferenceInfo"


def segment(
    ct: Union[CTVolume, np.ndarray],
    model: Union[ModelBundle, str, Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: Optional[float] = None,
    return_probabilities: bool = False,
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
    crop_chest: bool = True,
    skip_slices: bool = True,
) -> SegmentResult:
    """Segment pneumothorax in a CT with a network, slice by slice in batches.

    The bundle's preprocessing is applied (min-max statistics from the whole
    volume even though slices run in batches). Each slice is padded, centred,
    with the volume's lowest HU to the network's frame (sides multiples of 32,
    or the network's fixed size) and the output cropped back; training pads
    the same way. A voxel is foreground when its probability is above the
    threshold (:func:`foreground`).

    Fast path (see :mod:`napari_pneumoseg.model.plan`): with ``skip_slices``
    only the slices from the lungs' base to their apex (plus a margin) run and
    the others are background; with ``crop_chest`` each slice runs on a window
    around its air inside the chest (lungs, airways, pleural air) plus a margin
    of chest wall, on the network's 32-pixel grid, and the rest of the slice is
    background (probability 0). Where a pneumothorax can be (air inside the
    body and its rim) both give the full path's mask (``crop_chest=False,
    skip_slices=False``) except for voxels whose probability is near the
    threshold; a weak network's false positives in the chest wall and outside
    the body may differ. A CT without air inside the body runs every slice.

    Parameters
    ----------
    ct : CTVolume or numpy.ndarray
        The CT, or a 3-D HU array ``(z, y, x)`` (then 1 mm voxels are assumed
        for the fast path's margins).
    model : ModelBundle, str or pathlib.Path
        A loaded model or a model file to load (:func:`load_model`).
    batch_size : int, optional
        Slices per network call.
    threshold : float, optional
        In [0, 1); None uses the bundle's (normally 0.5).
    return_probabilities : bool, optional
        Also return the probability map.
    progress : callable, optional
        ``progress(done, total, text)``, called with ``done=0`` before the first
        batch and after every batch (``total``: slices that run).
    cancel : callable or threading.Event, optional
        Checked before every batch.
    crop_chest : bool, optional
        Run each slice on a window around the air inside the chest.
    skip_slices : bool, optional
        Run only the slices from the lungs' base to their apex.

    Returns
    -------
    SegmentResult
        The mask, the probabilities (or None) and an :class:`InferenceInfo`.

    Raises
    ------
    ValueError
        The CT is not a non-empty 3-D array, or ``batch_size``/``threshold`` is
        out of range, or the slices are larger than a fixed-size network takes.
    TypeError
        ``model`` is neither a bundle nor a path.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` was set; nothing is returned.

    Examples
    --------
    >>> result = segment(ct, "pneumothorax.pnxmodel")  # doctest: +SKIP
    >>> result.mask.sum(), result.info.summary()       # doctest: +SKIP
    """
    start = time.perf_counter()
    hu = ct.hu if isinstance(ct, CTVolume) else np.asarray(ct)
    if hu.ndim != 3 or min(hu.shape) < 1:
        raise ValueError(f"CT must be a non-empty 3-D (z, y, x) array, got shape {hu.shape}")
    spacing = ct.spacing if isinstance(ct, CTVolume) else (1.0, 1.0, 1.0)
    if isinstance(model, (str, Path)):
        model = load_model(model)
    if not isinstance(model, ModelBundle):
        raise TypeError(f"model must be a ModelBundle or a model file path, got {type(model).__name__}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    batch_size = int(batch_size)
    thr = float(model.threshold if threshold is None else threshold)
    if not 0.0 <= thr < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {thr}")

    net = model.model
    run = _predictor(net)
    target_mm = model.preprocessing.get("pixel_spacing_mm")
    resampled = isinstance(ct, CTVolume) and needs_resampling(spacing[1:], target_mm)
    if resampled:  # run at the model's pixel size, map the probabilities back after
        image_yx = hu.shape[1:]
        run_yx = target_shape(image_yx, spacing[1:], target_mm)
        hu = resample_slices(hu, run_yx)
        spacing = (spacing[0], spacing[1] * image_yx[0] / run_yx[0], spacing[2] * image_yx[1] / run_yx[1])
    n, ny, nx = hu.shape
    pads, resizable = _frame(net, ny, nx)
    frame = (ny + pads[0][0] + pads[0][1], nx + pads[1][0] + pads[1][1])
    plan = plan_inference(hu, spacing, frame, pads, batch_size, crop_chest=crop_chest,
                          skip_slices=skip_slices, resizable=resizable)
    stats = volume_stats(hu, model.preprocessing)
    fill = float(hu.min())
    analysed = time.perf_counter()

    # Resampled runs threshold once, on the CT's grid, after the probabilities are mapped back.
    mask = None if resampled else np.zeros(hu.shape, dtype=np.uint8)
    probs = np.zeros(hu.shape, dtype=np.float32) if (return_probabilities or resampled) else None
    total = plan.slices_run
    report(progress, 0, total, f"0/{total} slices" + _plan_text(plan))

    def prepare(batch: Batch) -> np.ndarray:
        block = _window_block(hu, batch, pads, fill)
        return preprocess(block, model.preprocessing, stats, channels=model.input_channels)

    (py0, _), (px0, _) = pads
    network_s = 0.0
    done = 0
    loop_start = time.perf_counter()
    with _Prefetch(prepare, plan.batches) as batches:
        for batch in plan.batches:
            check_cancel(cancel)
            x = next(batches)
            t = time.perf_counter()
            y = np.asarray(run(x))
            network_s += time.perf_counter() - t
            iy0, iy1, ix0, ix1 = plan.image_box(batch.keep)
            oy, ox = iy0 + py0 - batch.box[0], ix0 + px0 - batch.box[2]
            p = y[:, oy : oy + iy1 - iy0, ox : ox + ix1 - ix0, 0].astype(np.float32, copy=False)
            if mask is not None:
                mask[batch.start : batch.stop, iy0:iy1, ix0:ix1] = foreground(p, thr)
            if probs is not None:
                probs[batch.start : batch.stop, iy0:iy1, ix0:ix1] = p
            done += batch.stop - batch.start
            report(progress, done, total, _progress_text(done, total, time.perf_counter() - loop_start))
    if resampled:
        probs = resample_slices(probs, image_yx, antialias=False)
        np.clip(probs, 0.0, 1.0, out=probs)
        mask = foreground(probs, thr).astype(np.uint8)
        if not return_probabilities:
            probs = None
    end = time.perf_counter()
    info = InferenceInfo.from_plan(
        plan, crop_chest=bool(crop_chest), skip_slices=bool(skip_slices), batch_size=batch_size,
        seconds=end - start, seconds_analysis=analysed - start, seconds_network=network_s,
        seconds_loop=end - loop_start)
    info.pixel_spacing_mm = [float(spacing[1]), float(spacing[2])]
    if resampled:
        info.notes.append(f"ran at the model's {target_mm:g} mm pixels ({hu.shape[2]} x {hu.shape[1]}), "
                          "mask mapped back onto the CT's grid")
    elif target_mm is not None and not isinstance(ct, CTVolume):
        info.notes.append(f"the model was trained at {target_mm:g} mm pixels but an array has no "
                          "spacing: ran at the array's own resolution")
    return SegmentResult(mask=mask, probabilities=probs, info=info)


@dataclass
class InferenceInfo:
    """What :func:`segment` ran: slices, pixels, the crop and how long it took.

    ``crop_box`` is ``(y0, y1, x0, x1)`` in image pixels (half-open): the union
    of the parts of the windows whose output was used (the rest is
    background); ``input_shapes`` the distinct network input sizes
    ``(h, w)``, ``frame`` the full path's. ``pixel_fraction`` is network input
    pixels run / the full path's (every slice, whole frame), so it is about
    the share of the full path's network time. ``seconds_network`` is spent
    inside the network, ``slices_per_second`` counts slices run per second
    of the batch loop. ``windows`` lists where the network's output was used:
    ``[start, stop, y0, y1, x0, x1]`` per batch (slices ``start:stop``, image
    pixels; the network saw a band of context around that). "Image pixels" are
    those the network ran on: the CT's own, or, for a model with a pixel size,
    the resampled slice's; ``pixel_spacing_mm`` is that pixel size ``(y, x)``.
    Plain data: :meth:`as_dict` is JSON-ready and :meth:`from_dict` reads it
    back (the engine passes it between processes).
    """

    slices_total: int
    slices_run: int
    slice_range: Optional[tuple[int, int]]
    crop_box: Optional[tuple[int, int, int, int]]
    frame: tuple[int, int]
    input_shapes: list
    pixel_fraction: float
    crop_chest: bool
    skip_slices: bool
    batch_size: int
    seconds: float
    seconds_analysis: float
    seconds_network: float
    slices_per_second: float
    notes: list = field(default_factory=list)
    windows: list = field(default_factory=list)
    pixel_spacing_mm: Optional[list] = None

    @classmethod
    def from_plan(cls, plan, *, crop_chest, skip_slices, batch_size, seconds, seconds_analysis,
                  seconds_network, seconds_loop) -> "InferenceInfo":
        shapes = sorted({b.shape for b in plan.batches})
        return cls(
            slices_total=plan.n_slices, slices_run=plan.slices_run, slice_range=plan.slice_range,
            crop_box=plan.image_box(), frame=plan.frame, input_shapes=[list(s) for s in shapes],
            pixel_fraction=plan.pixel_fraction, crop_chest=crop_chest, skip_slices=skip_slices,
            batch_size=batch_size, seconds=seconds, seconds_analysis=seconds_analysis,
            seconds_network=seconds_network,
            slices_per_second=plan.slices_run / seconds_loop if seconds_loop > 0 else 0.0,
            notes=list(plan.notes),
            windows=[[b.start, b.stop, *plan.image_box(b.keep)] for b in plan.batches],
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("slice_range", "crop_box", "frame"):
            if d[key] is not None:
                d[key] = [int(v) for v in d[key]]
        d["windows"] = [[int(v) for v in w] for w in d["windows"]]
        d["input_shapes"] = [[int(v) for v in s] for s in d["input_shapes"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InferenceInfo":
        d = dict(d)
        for key in ("slice_range", "crop_box", "frame"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        """One line for a status bar: "ran N/M slices, P% of the pixels, T s (R slices/s)" and any notes."""
        text = f"ran {self.slices_run}/{self.slices_total} slices"
        if self.slices_run:
            text += f", {100 * self.pixel_fraction:.0f}% of the pixels"
        text += f", {self.seconds:.0f} s"
        if self.slices_run:
            text += f" ({self.slices_per_second:.2f} slices/s)"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return text


def _frame(net, ny: int, nx: int):
    """Padding of the full path's frame and whether the network takes other sizes (for crops)."""
    pads = _padding(net, ny, nx)
    try:
        shape = tuple(net.input_shape)
    except Exception:  # pragma: no cover - models without a single input
        return pads, False
    return pads, len(shape) == 4 and shape[1] is None and shape[2] is None


#: One compiled graph per network, for every input size (see :func:`_predictor`).
_PREDICTORS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _predictor(net):
    """``net`` in inference mode as one graph traced for any batch and slice size.

    The fast path's windows change size from batch to batch; a graph traced
    once with an input signature of unknown batch, height and width serves
    them all without retracing (``predict_on_batch`` would trace one size,
    then retrace). The cache holds the network weakly, so a dropped model is
    freed. Its speed against ``predict_on_batch`` is in ``benchmarks/README.md``.
    """
    fn = _PREDICTORS.get(net)
    if fn is None:
        tf = keras_modules().tf
        shape = (None,) + tuple(net.input_shape[1:])
        ref = weakref.ref(net)  # the cache must not keep a dropped model alive
        fn = tf.function(lambda x: ref()(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])
        _PREDICTORS[net] = fn
    return fn


def _window_block(hu: np.ndarray, batch: Batch, pads, fill: float) -> np.ndarray:
    """HU of the frame window of ``batch`` (float32): image pixels, ``fill`` beyond the image."""
    (py0, _), (px0, _) = pads
    y0, y1, x0, x1 = batch.box
    ny, nx = hu.shape[1:]
    out = np.full((batch.stop - batch.start, y1 - y0, x1 - x0), fill, dtype=np.float32)
    iy0, iy1 = max(0, y0 - py0), min(ny, y1 - py0)
    ix0, ix1 = max(0, x0 - px0), min(nx, x1 - px0)
    if iy1 > iy0 and ix1 > ix0:
        out[:, iy0 + py0 - y0 : iy1 + py0 - y0, ix0 + px0 - x0 : ix1 + px0 - x0] = (
            hu[batch.start : batch.stop, iy0:iy1, ix0:ix1])
    return out


class _Prefetch:
    """Prepare the next batch in a background thread while the network runs the current one.

    Iterate with ``next()``; an exception in ``prepare`` is raised there. Leaving
    the ``with`` block stops the thread (also on cancel or error).
    """

    def __init__(self, prepare, items, depth: int = 1):
        self._prepare, self._items = prepare, list(items)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pneumoseg-prefetch", daemon=True)

    def _run(self) -> None:
        for item in self._items:
            if self._stop.is_set():
                return
            try:
                out = (True, self._prepare(item))
            except BaseException as exc:  # handed to the consumer
                out = (False, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(out, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not out[0]:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __next__(self):
        ok, value = self._queue.get()
        if not ok:
            raise value
        return value

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _plan_text(plan) -> str:
    if plan.slices_run == plan.n_slices and plan.pixel_fraction >= 1.0:
        return ""
    return f" (of {plan.n_slices}; {100 * plan.pixel_fraction:.0f}% of the pixels)"


def _padding(net, ny: int, nx: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding (before, after) for y and x: to the model's fixed size, else to multiples of 32."""
    try:
        shape = tuple(net.input_shape)
    except Exception:  # pragma: no cover - models without a single input
        shape = (None, None, None, None)
    out = []
    for axis, size in ((1, ny), (2, nx)):
        fixed = shape[axis] if len(shape) == 4 else None
        if fixed is not None:
            if size > fixed:
                raise ValueError(f"slices are {ny}x{nx} but this model only takes {shape[1]}x{shape[2]}")
            target = int(fixed)
        else:
            target = math.ceil(size / SIZE_MULTIPLE) * SIZE_MULTIPLE
        out.append(centred_padding(size, target))
    return out[0], out[1]


def _progress_text(done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else float("inf")
    eta = (total - done) / rate if rate > 0 else float("inf")
    return f"{done}/{total} slices, {rate:.2f} slices/s, ETA {_clock(eta)}"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def configure_device(device: str = "auto", mixed_precision: bool = False) -> dict:
    """Choose where TensorFlow runs; call it once, before any model is built or run.

    Visible GPUs get memory growth, so TensorFlow does not grab all GPU memory
    up front (napari and other processes share it). TensorFlow fixes its device
    set when it first uses a device; after that, hiding GPUs or turning on
    memory growth is impossible.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu"}, optional
        ``"auto"`` uses a GPU when TensorFlow sees one, ``"gpu"`` insists on
        one, ``"cpu"`` hides all GPUs.
    mixed_precision : bool, optional
        Set Keras' global ``mixed_float16`` policy for models built afterwards;
        only on a GPU (ignored with a warning on the CPU).

    Returns
    -------
    dict
        ``{"device": "cpu" | "gpu", "gpus": [names], "mixed_precision": bool}``.

    Raises
    ------
    ValueError
        ``device`` is not one of the three.
    RuntimeError
        ``"gpu"`` without a visible GPU, or ``"cpu"``/``"gpu"`` after TensorFlow
        has initialised its devices (with ``"auto"`` that only warns).

    Examples
    --------
    >>> configure_device("cpu")  # doctest: +SKIP
    {'device': 'cpu', 'gpus': [], 'mixed_precision': False}
    """
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    mods = keras_modules()
    tf = mods.tf
    try:
        gpus = tf.config.list_physical_devices("GPU")
    except Exception:  # pragma: no cover - broken CUDA installs
        gpus = []
    if device == "gpu" and not gpus:
        raise RuntimeError("device='gpu' was asked for but TensorFlow sees no GPU (check CUDA and drivers)")
    use_gpu = bool(gpus) and device != "cpu"
    try:
        if device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        elif use_gpu:
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
    except (RuntimeError, ValueError) as exc:
        message = (
            "configure_device() must run before TensorFlow initialises its devices "
            f"(before any model is built or run): {exc}"
        )
        if device == "auto":
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        else:
            raise RuntimeError(message) from exc
    mixed = False
    if mixed_precision:
        if use_gpu:
            mods.keras.mixed_precision.set_global_policy("mixed_float16")
            mixed = True
        else:
            warnings.warn("mixed precision is only useful on a GPU; staying in float32", RuntimeWarning, stacklevel=2)
    return {"device": "gpu" if use_gpu else "cpu", "gpus": [g.name for g in gpus], "mixed_precision": mixed}

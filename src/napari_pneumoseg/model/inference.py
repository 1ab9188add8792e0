"""Run a segmentation network over a CT volume, slice by slice in batches.

Timing on this 2-core CPU (ResNet-50 Unet, ms per slice): eager
``model(x, training=False)`` 72-244 at 64x64 and 228-449 at 256x256, against
13-37 and 115-238 for ``predict_on_batch``, which runs a compiled graph.
:func:`segment` runs one compiled graph for any input size (:func:`_predictor`).
At 512x512 one slice costs about 0.45 s whatever the batch size (1-4).

Fast path (issue 8; :mod:`.roi`): only the lungs' slices, each on a window
around its air inside the chest, while a background thread prepares the next batch. The
network's time is proportional to the pixels it sees: measured per pixel,
batch sizes 1, 2, 4 and 8 and window sizes 320x384 to 512x512 all ran within
the run-to-run noise of each other, and on a quiet machine
the network reached about 0.5 megapixels/s (about 160 GFLOP/s at
84.2 GFLOP per 512x512 slice, 85-90% of a float32 numpy matmul measured
alongside). Nothing else won clearly in A/B runs here (the host's speed
varies up to twofold between minutes, so only interleaved runs compare):
XLA (``jit_compile``), ``TF_ENABLE_ONEDNN_OPTS=1`` and ONNX Runtime 1.32
(tf2onnx 1.17 exports this Keras 3 network via ``from_function``, opset 17,
in 48 s at 12.7 GB peak RSS; outputs within 3e-4) were all level with
default TensorFlow, so TensorFlow's defaults stay (no thread settings, no
environment variables).
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
from .preprocess import preprocess, volume_stats
from .roi import Batch, plan_inference

SIZE_MULTIPLE = 32


def segment(
    ct: Union[CTVolume, np.ndarray],
    model: Union[ModelBundle, str, Path],
    *,
    batch_size: int = 4,
    threshold: Optional[float] = None,
    return_probabilities: bool = False,
    progress: Optional[ProgressFn] = None,
    cancel: Any = None,
    crop_body: bool = True,
    skip_slices: bool = True,
    return_info: bool = False,
):
    """Segment pneumothorax in a CT: uint8 mask ``(z, y, x)``, 1 = pneumothorax.

    ``ct`` is a :class:`CTVolume` or a 3-D HU array; ``model`` a
    :class:`ModelBundle` or a model file to load. The bundle's preprocessing
    is applied (min-max statistics from the whole volume even though slices
    run in batches); slices whose size is not a multiple of 32 are padded with
    the volume's lowest HU and the output is cropped back. A voxel is
    foreground when its probability is above ``threshold`` (None: the
    bundle's, normally 0.5; ``>`` as Keras' metrics). With
    ``return_probabilities`` the result is ``(mask, probabilities)``, the
    latter float32 in [0, 1].

    Fast path (see :mod:`napari_pneumoseg.model.roi`): with ``skip_slices``
    only the slices from the lungs' base to their apex (plus a margin) run and
    the others are background; with ``crop_body`` each slice runs on a
    window around its air inside the body (lungs, airways, pleural air) plus a
    margin of chest wall, on the network's 32-pixel grid, and the rest of the
    slice is background (probability 0). Both reproduce the full path's mask
    (``crop_body=False, skip_slices=False``) where a pneumothorax can be (air
    inside the body and its rim) up to coin tosses (voxels with probabilities
    near the threshold); a weak network's false positives in the chest wall
    and outside the body may differ. A CT without air inside the body runs every
    slice. With ``return_info`` an :class:`InferenceInfo` (slices and pixels
    run, crop, timings) is appended to the result: ``(mask, info)`` or
    ``(mask, probabilities, info)``.

    ``progress(done, total, text)`` is called with ``done=0`` before the first
    batch and after every batch (``total``: slices that run; text: slices
    done, slices/s, ETA); ``cancel`` is checked before every batch and raises
    :class:`~napari_pneumoseg.progress.Cancelled` (nothing is returned).
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
    n, ny, nx = hu.shape
    pads, resizable = _frame(net, ny, nx)
    frame = (ny + pads[0][0] + pads[0][1], nx + pads[1][0] + pads[1][1])
    plan = plan_inference(hu, spacing, frame, pads, batch_size, crop_body=crop_body,
                          skip_slices=skip_slices, resizable=resizable)
    stats = volume_stats(hu, model.preprocessing)
    fill = float(hu.min())
    analysed = time.perf_counter()

    mask = np.zeros(hu.shape, dtype=np.uint8)
    probs = np.zeros(hu.shape, dtype=np.float32) if return_probabilities else None
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
            mask[batch.start : batch.stop, iy0:iy1, ix0:ix1] = p > thr
            if probs is not None:
                probs[batch.start : batch.stop, iy0:iy1, ix0:ix1] = p
            done += batch.stop - batch.start
            report(progress, done, total, _progress_text(done, total, time.perf_counter() - loop_start))
    end = time.perf_counter()
    result = [mask] + ([probs] if probs is not None else [])
    if return_info:
        result.append(InferenceInfo.from_plan(
            plan, crop_body=bool(crop_body), skip_slices=bool(skip_slices), batch_size=batch_size,
            seconds=end - start, seconds_analysis=analysed - start, seconds_network=network_s,
            seconds_loop=end - loop_start))
    return result[0] if len(result) == 1 else tuple(result)


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
    pixels; the network saw a band of context around that). Plain data: :meth:`as_dict` is JSON-ready and
    :meth:`from_dict` reads it back (the engine passes it between processes).
    """

    slices_total: int
    slices_run: int
    slice_range: Optional[tuple[int, int]]
    crop_box: Optional[tuple[int, int, int, int]]
    frame: tuple[int, int]
    input_shapes: list
    pixel_fraction: float
    crop_body: bool
    skip_slices: bool
    batch_size: int
    seconds: float
    seconds_analysis: float
    seconds_network: float
    slices_per_second: float
    notes: list = field(default_factory=list)
    windows: list = field(default_factory=list)

    @classmethod
    def from_plan(cls, plan, *, crop_body, skip_slices, batch_size, seconds, seconds_analysis,
                  seconds_network, seconds_loop) -> "InferenceInfo":
        shapes = sorted({b.shape for b in plan.batches})
        return cls(
            slices_total=plan.n_slices, slices_run=plan.slices_run, slice_range=plan.slice_range,
            crop_box=plan.image_box(), frame=plan.frame, input_shapes=[list(s) for s in shapes],
            pixel_fraction=plan.pixel_fraction, crop_body=crop_body, skip_slices=skip_slices,
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
        """One line for a status bar, e.g. "ran 58/64 slices, 67% of the pixels, 41 s (1.4 slices/s)"."""
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

    The fast path's windows change size from batch to batch. ``predict_on_batch``
    traces a graph for the first size, then retraces once more (about 1.4 s for
    the ResNet-50 Unet here) for a size-generic graph that it keeps; tracing the
    size-generic graph at once saves that retrace. It is no slower (ResNet-50
    Unet, batches of 4, best of four interleaved runs here: 169 against 154
    GFLOP/s for ``predict_on_batch``'s one-size graph at 512 x 512; 180 against
    178 for Keras' size-generic graph against a one-size ``tf.function`` at
    384 x 448) and gives the same output (largest difference 0).
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
        extra = target - size
        out.append((extra // 2, extra - extra // 2))
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
    """Choose where TensorFlow runs; call it once, BEFORE any model is built or run.

    ``"auto"`` uses a GPU when TensorFlow sees one, ``"gpu"`` insists on one
    (RuntimeError if none), ``"cpu"`` hides all GPUs. Visible GPUs get memory
    growth, so TensorFlow does not grab all GPU memory up front (napari and
    other processes share it). TensorFlow fixes its device set when it first
    uses a device; after that hiding GPUs or turning on memory growth is
    impossible and this raises RuntimeError for ``"cpu"``/``"gpu"`` (with
    ``"auto"`` it only warns). ``mixed_precision`` sets Keras' global
    ``mixed_float16`` policy for models built afterwards; it only pays off on
    GPUs and is ignored with a warning on CPU.

    Returns ``{"device": "cpu"|"gpu", "gpus": [names], "mixed_precision": bool}``.
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

"""Train the paper's network on annotated cases, with an honest split and safe checkpoints.

As Gencer & Toker 2024: Unet-ResNet50, one input channel, sigmoid; loss
binary cross-entropy + Jaccard (segmentation-models' ``bce_jaccard_loss``);
Adam, learning rate 1e-4; early stopping on validation loss with patience 8,
keeping the best weights; at most 1000 epochs; all slices, with and without
pneumothorax. Different from the paper by default: the split is by patient
(``split="slice"`` reproduces theirs), the HU window scaling is fixed (the
bundle records it), and ``patch_size`` trains on pneumothorax-biased crops so
training is feasible on a CPU (inference still runs on whole slices).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..progress import is_cancelled, report
from .cases import Case, load_cases
from .evaluate import evaluate_sets
from .resume import RunState, clear_state, load_state, save_state, settings_digest
from .sampling import Augment, SliceBatches
from .split import Split, split_cases


@dataclass
class TrainResult:
    """What a training run produced; ``model_path`` is None if no epoch completed."""

    model_path: Optional[Path]
    history: list[dict] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_val_loss: Optional[float] = None
    stopped: str = ""  # "early stopping", "max epochs", "time limit", "cancelled"
    table: dict[str, dict] = field(default_factory=dict)  # split -> Table 2 row
    split: dict = field(default_factory=dict)
    seconds: float = 0.0
    replicas: int = 1  # copies of the weights trained in step (MirroredStrategy: one per device)


def train(
    cases: Union[str, os.PathLike, Sequence[Any]],
    out: Union[str, os.PathLike],
    *,
    epochs: int = 1000,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    patience: int = 8,
    split: str = "patient",
    seed: int = 0,
    patch_size: Optional[int] = None,
    augment: bool = True,
    backbone: str = "resnet50",
    encoder_weights: Optional[str] = None,
    preprocessing: Optional[dict] = None,
    steps_per_epoch: Optional[int] = None,
    max_seconds: Optional[float] = None,
    bn_momentum: Optional[float] = None,
    validation: str = "slices",
    positive_fraction: float = 0.5,
    lr_decay: bool = False,
    pixel_spacing_mm: Union[str, float, None] = "auto",
    evaluate: Union[bool, Sequence[str]] = True,
    init_model: Union[str, os.PathLike, None] = None,
    devices: Optional[Sequence[str]] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Callable[[int, int, str], None]] = None,
    on_epoch: Optional[Callable[[int, dict], None]] = None,
    cancel: Any = None,
) -> TrainResult:
    """Train the paper's network on annotated cases and save the best model file.

    The best model so far is saved atomically after every improvement of the
    validation loss, so a crash or a cancel leaves the last best bundle usable.
    After training, each set's Table 2 row is computed by segmenting its cases
    with :func:`~napari_pneumoseg.model.segment` itself (whole slices), so it is
    what Segment + Measure give (see :mod:`.evaluate`); the rows are stored in
    the model's provenance.

    Parameters
    ----------
    cases : str, os.PathLike or sequence
        A dataset folder (one subfolder per patient: DICOM series + one mask
        file), or ``(ct, mask)`` / ``(hu, mask, spacing)`` pairs, or Cases
        (see :func:`~napari_pneumoseg.training.load_cases`).
    out : str or os.PathLike
        The ``.pnxmodel`` file to write.
    epochs : int, optional
        At most this many epochs (the paper: 1000 with early stopping).
    batch_size : int, optional
        Slices or patches per training batch.
    learning_rate : float, optional
        Adam's learning rate (the paper: 1e-4).
    patience : int, optional
        Epochs without a better validation loss before stopping (the paper: 8).
    split : {"patient", "slice"}, optional
        Whole patients per set (default), or the paper's split of slices.
    seed : int, optional
        Seeds the split, the patches and the augmentation.
    patch_size : int, optional
        Train on pneumothorax-biased square crops of this size (a multiple of
        32) instead of whole slices, so training is feasible on a CPU.
    augment : bool, optional
        Mild rotations, zoom, shifts and intensity jitter (no left-right flip).
    backbone : str, optional
        The Unet's encoder (the paper: ``"resnet50"``).
    encoder_weights : {None, "imagenet"}, optional
        ``"imagenet"`` needs the internet on first use.
    preprocessing : dict, optional
        HU scaling recorded in the bundle (default: the fixed window).
    steps_per_epoch : int, optional
        Cap on batches per epoch (default: one pass over the training slices).
    max_seconds : float, optional
        End training after the epoch that passes this time.
    bn_momentum : float, optional
        BatchNorm momentum (e.g. 0.9 instead of Keras' 0.99) so the running
        statistics, which inference uses, catch up within a short training.
    validation : {"slices", "patches"}, optional
        Validation loss on whole slices, as inference sees them (default), or
        on fixed patches (cheaper, but patches centred on pneumothorax flatter
        the false positives elsewhere).
    positive_fraction : float, optional
        Share of training patches centred on pneumothorax.
    lr_decay : bool, optional
        Lower the learning rate along a cosine to 0 over ``max_seconds`` (or
        ``epochs``); the paper kept it constant.
    pixel_spacing_mm : "auto", float or None, optional
        The in-plane pixel size to train at, recorded in the model so that
        :func:`~napari_pneumoseg.model.segment` resamples every CT to it (see
        :func:`training_pixel_spacing`; ``"auto"``: the cases' own, when they
        share one). Training at 1.4 mm costs about a quarter of 0.7 mm.
    evaluate : bool or sequence of str, optional
        Table 2 for all three sets (True), none, or the named sets.
    init_model : str or os.PathLike, optional
        Fine-tune: start from this ``.pnxmodel``'s weights and keep its encoder,
        preprocessing (HU scaling and pixel size) and threshold; ``backbone``,
        ``encoder_weights``, ``preprocessing`` and ``pixel_spacing_mm`` are then
        ignored. The file is only read (``out`` must be another file), and the new
        model's provenance records it as the parent (path, SHA-256, its cases and
        metrics).
    devices : sequence of str, optional
        TensorFlow devices to train on. None: every GPU when more than one is
        visible (``tf.distribute.MirroredStrategy``: each batch is split
        between them and the gradients summed), else TensorFlow's default
        device. Two or more names (e.g. ``["/gpu:0", "/gpu:1"]``, or logical
        CPUs ``["/cpu:0", "/cpu:1"]``) train mirrored on exactly those.
    resume : bool, optional
        Continue a run on the same cases and settings that was killed or
        cancelled (or stopped by ``max_seconds``): its weights, optimizer state,
        history, best loss and patience after its last finished epoch come from
        the state saved beside ``out`` (:mod:`~napari_pneumoseg.training.resume`),
        and training goes on from the next epoch up to ``epochs``. The state is
        written after every epoch and removed when a run ends by early stopping
        or after its last epoch.
    overwrite : bool, optional
        Replace an existing ``out``.
    progress : callable, optional
        ``progress(done, total, text)`` per batch.
    on_epoch : callable, optional
        ``on_epoch(epoch, logs)`` after every epoch.
    cancel : callable or threading.Event, optional
        Stops after the current batch; the best model so far is kept.

    Returns
    -------
    TrainResult
        Where the model is (None if no epoch completed), the history, the best
        epoch, why training stopped, the split and the Table 2 rows.

    Raises
    ------
    ValueError
        ``out`` does not end in ``.pnxmodel``, ``patch_size`` is not a multiple
        of 32, ``validation`` is unknown, the cases are inconsistent, the
        validation set is empty, ``init_model`` is ``out`` itself, or a name in
        ``devices`` is not a TensorFlow device.
    ModelLoadError
        ``init_model`` cannot be loaded, or is not one of our Unets.
    FileExistsError
        ``out`` exists and ``overwrite`` is False (and not ``resume``).
    FileNotFoundError
        ``resume`` with no saved state beside ``out``.

    Examples
    --------
    >>> result = train("dataset/", "my.pnxmodel", patch_size=256)  # doctest: +SKIP
    >>> result.table["test"]["dice"]                              # doctest: +SKIP
    """
    from ..model import ModelBundle, preprocess, save_model, volume_stats
    from ..model._backend import keras_modules
    from ..model.preprocess import validate_preprocessing

    start = time.monotonic()
    out = Path(out)
    if out.suffix != ".pnxmodel":
        raise ValueError(f"the model file must end in .pnxmodel: {out}")
    if out.exists() and not overwrite and not resume:
        raise FileExistsError(f"{out} exists; choose another name, allow replacing it, or resume its training")
    if patch_size is not None and (patch_size < 32 or patch_size % 32):
        raise ValueError(f"patch_size must be a multiple of 32 (at least 32), got {patch_size}")

    report(progress, 0, 1, "loading cases")
    data: list[Case] = load_cases(cases)
    the_split: Split = split_cases([c.n_slices for c in data], split, seed)
    if not the_split.validation:
        raise ValueError("the validation set is empty: give at least 3 slices")

    parent = None
    if init_model is not None:
        parent, backbone, encoder_weights, preprocessing, pixel_spacing_mm = _parent_model(init_model, out)
    target_mm, spacing_note = training_pixel_spacing([c.spacing for c in data], pixel_spacing_mm)
    preprocessing = validate_preprocessing(preprocessing)
    preprocessing.pop("pixel_spacing_mm", None)
    if target_mm is not None:
        preprocessing["pixel_spacing_mm"] = target_mm
    k = keras_modules()
    keras, sm, tf = k.keras, k.sm, k.tf
    strategy = training_strategy(tf, devices)
    # Variables made inside a MirroredStrategy's scope are mirrored on each of its devices.
    # What a resumed run must share with the one it continues (not its epoch budget, time or devices).
    digest = settings_digest({
        "cases": [(c.name, c.n_slices) for c in data], "split": the_split.describe(), "backbone": backbone,
        "preprocessing": preprocessing, "batch_size": batch_size, "learning_rate": learning_rate,
        "patience": patience, "patch_size": patch_size, "augment": augment, "seed": seed,
        "bn_momentum": bn_momentum, "validation": validation, "positive_fraction": positive_fraction,
        "lr_decay": lr_decay, "steps_per_epoch": steps_per_epoch,
        "parent": _sha256(init_model) if init_model is not None else None})
    state = load_state(out, digest) if resume else None
    if not resume:
        clear_state(out)  # a fresh run: an older run's state no longer applies
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        bundle = ModelBundle.build(backbone, 1, encoder_weights=encoder_weights, preprocessing=preprocessing)
        if parent is not None:
            bundle.model.set_weights(parent.model.get_weights())
            bundle.threshold = parent.threshold
        _bn_setter(keras, bn_momentum)(bundle.model)
        _compile(bundle.model, keras, sm, learning_rate)
        if state is not None:
            _restore(bundle.model, state, out)
    # The network learns at the model's pixel size; Table 2 then segments the cases as given.
    at_size = [resample_case(c, target_mm) for c in data]
    scaled = [preprocess(c.hu, bundle.preprocessing, volume_stats(c.hu, bundle.preprocessing))[..., 0]
              for c in at_size]
    masks = [c.mask for c in at_size]
    del at_size
    if validation not in ("slices", "patches"):
        raise ValueError(f"validation must be 'slices' or 'patches', got {validation!r}")
    train_batches = SliceBatches(scaled, masks, the_split.train, batch_size, patch_size=patch_size,
                                 augment_with=Augment() if augment else None, seed=seed,
                                 positive_fraction=positive_fraction)
    val_batches = SliceBatches(scaled, masks, _same_shape_runs(the_split.validation, scaled),
                               batch_size, seed=seed + 1, deterministic=True,
                               patch_size=patch_size if validation == "patches" else None,
                               positive_fraction=positive_fraction)


    hyper = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
             "patience": patience, "patch_size": patch_size, "augment": augment, "seed": seed,
             "backbone": backbone, "encoder_weights": encoder_weights, "loss": "bce_jaccard_loss",
             "optimizer": "Adam", "steps_per_epoch": steps_per_epoch, "bn_momentum": bn_momentum,
             "max_seconds": max_seconds, "validation": validation,
             "positive_fraction": positive_fraction, "lr_decay": lr_decay,
             "pixel_spacing_mm": target_mm, "pixel_spacing": spacing_note,
             "devices": list(strategy.extended.worker_devices) if strategy is not None else None}
    bundle.provenance = {
        "data": {"cases": [c.name for c in data], "slices": sum(c.n_slices for c in data),
                 "source": str(cases) if isinstance(cases, (str, os.PathLike)) else "in memory"},
        "split": the_split.describe(),
        "training": hyper,
    }
    if parent is not None:
        bundle.provenance["parent_model"] = _parent_record(parent, init_model)
    keeper = _BestKeeper(keras, bundle, out, patience, save_model, progress, on_epoch, cancel,
                         overwrite, deadline=None if max_seconds is None else start + max_seconds)
    n_steps = len(train_batches) if steps_per_epoch is None else min(steps_per_epoch, len(train_batches))
    keeper.steps = n_steps
    keeper.epochs = epochs
    keeper.set_model(bundle.model)

    def checkpoint(epochs_done: int) -> None:
        save_state(out, RunState(epochs_done, list(keeper.history), keeper.best, keeper.best_epoch, keeper.wait,
                                 keeper.saved, digest, bundle.model.get_weights(),
                                 [np.asarray(v) for v in bundle.model.optimizer.variables]))

    keeper.checkpoint = checkpoint
    first = 0
    if state is not None:
        first = state.epochs_done
        keeper.history, keeper.best, keeper.best_epoch = list(state.history), state.best, state.best_epoch
        keeper.wait, keeper.saved = state.wait, state.saved
        if state.saved:  # the best weights so far are those of the model file
            from ..model import load_model

            keeper.best_weights = load_model(out).model.get_weights()
    schedule = cosine_schedule(learning_rate, epochs, max_seconds, start) if lr_decay else None
    _fit(bundle.model, train_batches, val_batches, epochs, n_steps, keeper, schedule, first=first)
    if keeper.reason in ("", "early stopping"):  # finished: nothing to resume
        clear_state(out)
    result = TrainResult(
        model_path=out if keeper.saved else None, history=keeper.history,
        best_epoch=keeper.best_epoch, best_val_loss=keeper.best if keeper.saved else None,
        stopped=keeper.reason or "max epochs", split=the_split.describe(),
    )
    if keeper.best_weights is not None:
        bundle.model.set_weights(keeper.best_weights)
    wanted = set(the_split.sets()) if evaluate is True else set(evaluate or ())
    if wanted and keeper.saved and keeper.reason != "cancelled":
        report(progress, 0, 1, "evaluating (Table 2)")
        result.table = evaluate_sets(
            bundle, data, {name: items for name, items in the_split.sets().items() if name in wanted},
            progress=progress, cancel=cancel)
        bundle.provenance["metrics"] = result.table
        bundle.provenance["result"] = {"best_epoch": result.best_epoch,
                                       "best_val_loss": result.best_val_loss,
                                       "stopped": result.stopped, "epochs_run": len(result.history)}
        save_model(bundle, out, overwrite=True)
    result.seconds = time.monotonic() - start
    result.replicas = _replicas(bundle.model)
    return result


def _replicas(model) -> int:
    """How many devices hold a copy of the model's weights (a MirroredVariable has one per device)."""
    first = model.trainable_variables[0]
    return len(getattr(getattr(first, "value", first), "values", (first,)))


def training_strategy(tf, devices: Optional[Sequence[str]] = None):
    """The ``tf.distribute.MirroredStrategy`` to train with, or None for one device.

    Parameters
    ----------
    tf : module
        TensorFlow.
    devices : sequence of str, optional
        As :func:`train`'s ``devices``: None mirrors over every visible GPU when
        there are two or more.

    Returns
    -------
    tf.distribute.MirroredStrategy or None

    Raises
    ------
    ValueError
        A named device does not exist.
    """
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < 2:
            return None
        devices = [d.name for d in gpus]
    devices = list(devices)
    known = {_short_device(d.name) for d in tf.config.list_logical_devices()}
    missing = [name for name in devices if _short_device(name) not in known]
    if missing:
        raise ValueError(f"no TensorFlow device {', '.join(map(repr, missing))}; there are {', '.join(sorted(known))}")
    if len(devices) < 2:
        return None
    return tf.distribute.MirroredStrategy(devices=devices)


def _short_device(name: str) -> str:
    """``"/job:localhost/replica:0/task:0/device:GPU:1"``, ``"/gpu:1"`` or ``"GPU:1"`` -> ``"GPU:1"``."""
    return name.rsplit("/", 1)[-1].upper().removeprefix("DEVICE:")


def _restore(model, state, out: Path) -> None:
    """The weights and optimizer variables of a saved run state into a compiled ``model``."""
    try:
        model.set_weights(state.weights)
        model.optimizer.build(model.trainable_variables)
        variables = model.optimizer.variables
        if len(variables) != len(state.optimizer) or any(
                tuple(v.shape) != a.shape for v, a in zip(variables, state.optimizer)):
            raise ValueError("the optimizer's variables do not match")
        for v, a in zip(variables, state.optimizer):
            v.assign(a)
    except ValueError as exc:
        raise ValueError(f"{out}: the saved training state does not fit this network ({exc}); "
                         "train again without resume") from exc


def _sha256(path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parent_model(init_model, out: Path):
    """The model to fine-tune and the settings it fixes: (bundle, backbone, weights, preprocessing, pixel mm)."""
    from ..model import ModelLoadError, load_model

    if Path(init_model).resolve() == out.resolve():
        raise ValueError(f"init_model and out are the same file ({out}): fine-tuning writes a new model "
                         "and leaves its parent as it is; choose another output name")
    parent = load_model(init_model)
    arch = parent.architecture
    if arch.get("type") != "sm.Unet" or parent.input_channels != 1:
        raise ModelLoadError(f"{init_model}: only this plugin's 1-channel Unets can be fine-tuned "
                             f"(this one is {arch.get('type')} with {parent.input_channels} channels)")
    pre = dict(parent.preprocessing)
    return parent, arch["backbone"], None, pre, pre.get("pixel_spacing_mm")


def _parent_record(parent, init_model) -> dict:
    """What the new model's provenance says about the model it was fine-tuned from."""
    prov = parent.provenance or {}
    return {"path": str(Path(init_model).resolve()), "sha256": _sha256(init_model),
            "cases": (prov.get("data") or {}).get("cases"), "metrics": prov.get("metrics"),
            "parent_model": prov.get("parent_model", {}).get("path") if prov.get("parent_model") else None}


def training_pixel_spacing(spacings: Sequence[Sequence[float]],
                           pixel_spacing_mm: Union[str, float, None] = "auto") -> tuple[Optional[float], str]:
    """The in-plane pixel size a model is trained at, and why.

    Parameters
    ----------
    spacings : sequence of (z, y, x) spacings
        The training cases' voxel sizes in mm.
    pixel_spacing_mm : "auto", float or None
        A number: train at that pixel size (cases are resampled to it).
        ``"auto"``: the cases' own pixel size when they all share one (within
        :data:`~napari_pneumoseg.model.resample.SPACING_TOLERANCE`), else
        native. None: native (the model runs every CT at its own resolution,
        as the paper's 512 x 512 model).

    Returns
    -------
    target : float or None
        The pixel size to record in the model (None: native).
    note : str
        How it was chosen, for the provenance.

    Raises
    ------
    ValueError
        ``pixel_spacing_mm`` is neither ``"auto"``, None nor a positive number.

    Examples
    --------
    >>> training_pixel_spacing([(2.5, 0.7, 0.7), (5.0, 0.7, 0.7)])
    (0.7, 'the training data: all cases have 0.7 mm pixels')
    >>> training_pixel_spacing([(2.5, 0.6, 0.6), (2.5, 0.9, 0.9)])[0] is None
    True
    >>> training_pixel_spacing([(2.5, 0.7, 0.7)], 1.4)
    (1.4, 'chosen: 1.4 mm pixels')
    """
    from ..model.resample import SPACING_TOLERANCE

    if pixel_spacing_mm is None:
        return None, "native: every CT runs at its own resolution"
    if isinstance(pixel_spacing_mm, str):
        if pixel_spacing_mm != "auto":
            raise ValueError(f"pixel_spacing_mm must be 'auto', None or a number of mm, got {pixel_spacing_mm!r}")
        inplane = np.array([s[1:] for s in spacings], dtype=float).ravel()
        median = float(np.median(inplane))
        if np.all(np.abs(inplane / median - 1.0) <= SPACING_TOLERANCE):
            target = round(median, 4)
            return target, f"the training data: all cases have {target:g} mm pixels"
        return None, (f"native: the cases' pixels differ ({inplane.min():g}-{inplane.max():g} mm), "
                      "so every CT runs at its own resolution")
    try:
        target = float(pixel_spacing_mm)
    except (TypeError, ValueError):
        target = float("nan")
    if isinstance(pixel_spacing_mm, bool) or not (np.isfinite(target) and target > 0):
        raise ValueError(f"pixel_spacing_mm must be 'auto', None or a positive number of mm, "
                         f"got {pixel_spacing_mm!r}")
    return target, f"chosen: {target:g} mm pixels"


def resample_case(case: Case, target_mm: Optional[float]) -> Case:
    """``case`` with its slices resampled to ``target_mm`` pixels (itself when no resampling is needed).

    The CT is resampled linearly with anti-aliasing, the mask the same way and
    thresholded at one half, so a structure keeps its size.

    Parameters
    ----------
    case : Case
        The case.
    target_mm : float or None
        The pixel size; None keeps the case as it is.

    Returns
    -------
    Case
        A new Case (or ``case`` itself), spacing updated.
    """
    from ..model.resample import needs_resampling, resample_slices, target_shape

    sz, sy, sx = case.spacing
    if not needs_resampling((sy, sx), target_mm):
        return case
    ny, nx = case.hu.shape[1:]
    shape = target_shape((ny, nx), (sy, sx), target_mm)
    hu = resample_slices(case.hu, shape)
    mask = (resample_slices(case.mask, shape) > 0.5).astype(np.uint8)
    return Case(case.name, hu, (sz, sy * ny / shape[0], sx * nx / shape[1]), mask)


def cosine_schedule(learning_rate: float, epochs: int, max_seconds: Optional[float],
                    start: float) -> Callable[[int], float]:
    """Learning rate for an epoch: a cosine from ``learning_rate`` to 0 over the time
    budget (``max_seconds`` since ``start``) or, without one, over ``epochs``."""

    def rate(epoch: int) -> float:
        done = (time.monotonic() - start) / max_seconds if max_seconds else epoch / max(epochs, 1)
        return float(learning_rate * 0.5 * (1 + np.cos(np.pi * min(max(done, 0.0), 1.0))))

    return rate


def _same_shape_runs(items: list, volumes: list) -> list:
    """Items ordered so that consecutive ones share a slice shape (whole-slice batches stack)."""
    return sorted(items, key=lambda ck: (volumes[ck[0]].shape[1:], ck))


def _bn_setter(keras, momentum: Optional[float]):
    def apply(model) -> None:
        if momentum is None:
            return
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(momentum)

    return apply


def _compile(model, keras, sm, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=sm.losses.bce_jaccard_loss,
        metrics=[sm.metrics.FScore(threshold=0.5, name="dice")],
    )


def _fit(model, train_batches: SliceBatches, val_batches: SliceBatches, epochs: int,
         steps: int, keeper, schedule=None, first: int = 0) -> None:
    """The training loop: ``steps`` batches per epoch, then the validation loss.

    A plain loop over ``train_on_batch``/``test_on_batch`` rather than
    ``model.fit``, whose data-feeding threads made each step slower on a CPU
    (benchmarks/README.md). Keras callback hooks are called as fit would call them.
    Epochs ``first`` .. ``epochs - 1`` run (``first`` > 0 when resuming).
    """
    for epoch in range(first, epochs):
        if schedule is not None:
            model.optimizer.learning_rate.assign(schedule(epoch))
        keeper.on_epoch_begin(epoch)
        sums: dict[str, float] = {}
        n = 0
        for b in range(steps):
            x, y = train_batches[b]
            logs = model.train_on_batch(x, y, return_dict=True)
            for key, v in logs.items():
                sums[key] = sums.get(key, 0.0) + float(v) * len(x)
            n += len(x)
            keeper.on_train_batch_end(b, {k: v / n for k, v in sums.items()})
            if model.stop_training:
                break
        train_batches.on_epoch_end()
        logs = {k: v / max(n, 1) for k, v in sums.items()}
        if not model.stop_training:
            vsums: dict[str, float] = {}
            vn = 0
            for b in range(len(val_batches)):
                x, y = val_batches[b]
                for key, v in model.test_on_batch(x, y, return_dict=True).items():
                    vsums[key] = vsums.get(key, 0.0) + float(v) * len(x)
                vn += len(x)
            logs.update({f"val_{k}": v / vn for k, v in vsums.items()})
        keeper.on_epoch_end(epoch, logs)
        if model.stop_training:
            break


def _BestKeeper(keras, bundle, out, patience, save_model, progress, on_epoch, cancel, overwrite,
                deadline=None):
    """Progress and cancel per batch; checkpoint and patience per epoch (Keras callback hooks).

    Equivalent to ``EarlyStopping(monitor="val_loss", patience=patience,
    restore_best_weights=True)`` plus a checkpoint of the best model, written
    atomically as a bundle after every improvement.
    """

    class Keeper(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.best_epoch, self.wait = np.inf, None, 0
            self.best_weights = None
            self.history: list[dict] = []
            self.saved = False
            self.reason = ""
            self.steps = self.epochs = 0
            self.epoch = 0
            self.t0 = time.monotonic()
            self.checkpoint = None  # checkpoint(epochs_done) after each finished epoch

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.t0 = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            rate = (batch + 1) / max(time.monotonic() - self.t0, 1e-9)
            report(progress, batch + 1, self.steps,
                   f"epoch {self.epoch + 1}/{self.epochs}, batch {batch + 1}/{self.steps}"
                   + (f", loss {float(loss):.4f}" if loss is not None else "")
                   + f", {rate:.2f} batches/s")
            if is_cancelled(cancel):
                self.reason = "cancelled"
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            logs["epoch"] = epoch + 1
            logs["seconds"] = time.monotonic() - self.t0
            self.history.append(logs)
            if self.reason == "cancelled":  # an interrupted epoch's numbers are not comparable
                return
            val = logs.get("val_loss", np.inf)
            if val < self.best:
                self.best, self.best_epoch, self.wait = val, epoch + 1, 0
                self.best_weights = self.model.get_weights()
                bundle.provenance["result"] = {"best_epoch": epoch + 1, "best_val_loss": val,
                                               "epochs_run": epoch + 1}
                save_model(bundle, out, overwrite=self.saved or overwrite)
                self.saved = True
                logs["saved"] = True
            else:
                self.wait += 1
                if self.wait >= patience:
                    self.reason = "early stopping"
                    self.model.stop_training = True
            if deadline is not None and time.monotonic() > deadline and not self.reason:
                self.reason = "time limit"
                self.model.stop_training = True
            if self.checkpoint is not None:  # before on_epoch: a run killed from there can resume here
                self.checkpoint(epoch + 1)
            if on_epoch is not None:
                on_epoch(epoch + 1, logs)

    return Keeper()

"""Plain Keras model files from elsewhere: scanned first, then loaded without running their code.

:func:`~napari_pneumoseg.model.bundle.load_model` hands ``.keras`` and
``.h5`` / ``.hdf5`` files here. ``.keras`` and full-model ``.h5`` files are
loaded with Keras' ``safe_mode`` after our own scan of their architecture
JSON (:func:`scan_keras_config`) refuses Lambda layers, code-wrapping layers
and any class that is not a built-in Keras one; the scan runs before Keras
deserialises anything and does not rely on ``safe_mode``. A weights-only
``.h5`` (what the seed paper's checkpoints were) is loaded, arrays only, into
the paper's Unet-ResNet50. Their preprocessing is not recorded, so the paper's
per-volume min-max is assumed, with a warning.

Nothing outside the given file is read: no custom-object registry, no files
or models a layer might point to (such layers are refused).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ._backend import keras_modules
from .bundle import (
    DEFAULT_THRESHOLD,
    WEIGHTS_NAME,
    ModelBundle,
    ModelLoadError,
    _load_weights_checked,
    _unet_architecture,
)
from .network import PAPER_BACKBONE, build_unet
from .preprocess import PAPER_PREPROCESSING

__all__ = ["scan_keras_config"]

_MAX_FOREIGN_CONFIG_BYTES = 64 << 20

#: Layers that run code or load other files/models when built; never loaded.
_CODE_LAYERS = {
    "Lambda": "a Lambda layer (its function is Python code stored in the file)",
    "__lambda__": "a Python lambda stored in the file",
    "TFOpLambda": "a TFOpLambda layer (a TensorFlow operation wrapped as code)",
    "SlicingOpLambda": "a SlicingOpLambda layer (a TensorFlow operation wrapped as code)",
    "TFSMLayer": "a TFSMLayer (it loads another SavedModel from disk)",
    "TorchModuleWrapper": "a TorchModuleWrapper (a pickled PyTorch module)",
    "JaxLayer": "a JaxLayer (wraps arbitrary JAX functions)",
    "FlaxLayer": "a FlaxLayer (wraps arbitrary Flax modules)",
}
_MODEL_CLASSES = {"Functional", "Model", "Sequential"}


#: Modules whose plain functions (activations, losses, metrics) a config may name.
_FUNCTION_MODULES = ("activations", "losses", "metrics")


def _builtin_layer_names() -> set[str]:
    keras = keras_modules().keras
    return {n for n in dir(keras.layers) if isinstance(getattr(keras.layers, n), type)} | _MODEL_CLASSES


def scan_keras_config(config: Any) -> None:
    """Refuse a Keras architecture JSON that would run code or needs custom objects.

    Keras ``safe_mode`` already refuses Python lambdas; this check is stricter
    and independent of it: no Lambda-like layer at all (``Lambda``,
    ``TFOpLambda``, ``TFSMLayer``, ``TorchModuleWrapper``, ``JaxLayer``...),
    every layer a built-in Keras layer, nothing registered as a custom
    serialisable, and (Keras 3 files, which name the module of every object)
    every object from a ``keras`` module, plain functions only from its
    activations, losses and metrics. Only the JSON is inspected; nothing is
    built or imported from it.

    Parameters
    ----------
    config : Any
        The decoded architecture JSON: ``config.json`` of a ``.keras`` file,
        or the ``model_config`` attribute of a full-model ``.h5``.

    Returns
    -------
    None
        The config is acceptable.

    Raises
    ------
    ValueError
        It holds a code-running layer or a custom object; the message says which.

    Examples
    --------
    >>> scan_keras_config({"class_name": "Functional", "config": {"layers": [
    ...     {"class_name": "Lambda", "config": {"function": "..."}}]}})  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    ValueError: it contains a Lambda layer (its function is Python code stored in the file); ...
    """
    builtin = _builtin_layer_names()

    def visit(obj: Any, is_layer: bool) -> None:
        if isinstance(obj, list):
            for item in obj:
                visit(item, False)
            return
        if not isinstance(obj, dict):
            return
        name = obj.get("class_name")
        if isinstance(name, str):
            if name in _CODE_LAYERS:
                raise ValueError(
                    f"it contains {_CODE_LAYERS[name]}; such files are refused because "
                    "loading them could run code"
                )
            registered = obj.get("registered_name")
            module = obj.get("module")
            custom = ">" in name or (is_layer and name not in builtin)
            if isinstance(registered, str) and ">" in registered:
                custom = True  # registered with keras.saving.register_keras_serializable
            if "module" in obj:  # Keras 3 configs name the module of every object
                if not (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
                    custom = True
                elif name == "function" and not any(f".{m}" in module for m in _FUNCTION_MODULES):
                    custom = True  # only activations/losses/metrics, not e.g. keras.utils.get_file
            if custom:
                label = registered if isinstance(registered, str) else name
                where = f" (module {module!r})" if isinstance(module, str) else ""
                raise ValueError(
                    f"it needs the unknown custom object {label!r}{where}; only built-in Keras "
                    "layers are accepted (custom code is never loaded from model files)"
                )
        for key, value in obj.items():
            if key == "layers" and isinstance(value, list):
                for layer in value:
                    visit(layer, True)
            else:
                visit(value, False)

    visit(config, True)


def _foreign_warning(path: Path, what: str) -> str:
    return (
        f"{path.name}: {what} records no preprocessing; assuming the seed paper's per-volume "
        "min-max scaling to [0, 1] and threshold 0.5. If the model was trained otherwise its "
        "results will be wrong."
    )


def _wrap_foreign(model, path: Path, kind: str, architecture: dict) -> ModelBundle:
    _check_io_shapes(model, path)
    message = _foreign_warning(path, f"this {kind}")
    warnings.warn(message, UserWarning, stacklevel=4)
    if architecture.get("type") == "keras":
        architecture = {**architecture, "input_channels": int(model.input_shape[-1])}
    return ModelBundle(
        model=model,
        architecture=architecture,
        preprocessing=dict(PAPER_PREPROCESSING),
        threshold=DEFAULT_THRESHOLD,
        provenance={"source_file": path.name, "source_format": kind},
        source=path,
        warnings=[message],
    )


def _check_io_shapes(model, path: Path) -> None:
    try:
        ins, outs = model.input_shape, model.output_shape
    except Exception as exc:  # multi-input models etc.
        raise ModelLoadError(f"{path}: unsupported model inputs/outputs ({exc})") from None
    if not (isinstance(ins, tuple) and len(ins) == 4 and isinstance(outs, tuple) and len(outs) == 4):
        raise ModelLoadError(
            f"{path}: expected one image input (batch, y, x, channels) and one output of the "
            f"same kind, got input {ins} and output {outs}"
        )
    if outs[-1] != 1:
        raise ModelLoadError(f"{path}: expected a one-channel (sigmoid) output, got {outs[-1]} channels")


def _safe_keras_load(path: Path):
    keras = keras_modules().keras
    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: Keras could not load this model safely: {exc}") from None


def _load_keras_v3(path: Path) -> ModelBundle:
    keras_modules()
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.getinfo("config.json").file_size > _MAX_FOREIGN_CONFIG_BYTES:
                raise ModelLoadError(f"{path}: config.json is implausibly large")
            raw = zf.read("config.json")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ModelLoadError(f"{path}: not a valid .keras file ({exc})") from None
    try:
        scan_keras_config(json.loads(raw.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: refused: {exc}") from None
    model = _safe_keras_load(path)
    return _wrap_foreign(model, path, ".keras model", {"type": "keras", "file": path.name})


def _load_h5(path: Path) -> ModelBundle:
    import h5py

    keras_modules()
    try:
        with h5py.File(path, "r") as f:
            model_config = f.attrs.get("model_config")
            legacy_weights = "layer_names" in f.attrs
            v3_weights = "layers" in f and "vars" in f
    except OSError as exc:
        raise ModelLoadError(f"{path}: not a readable HDF5 file ({exc})") from None
    if model_config is not None:
        if isinstance(model_config, bytes):
            model_config = model_config.decode("utf-8")
        try:
            scan_keras_config(json.loads(model_config))
        except (ValueError, TypeError) as exc:
            raise ModelLoadError(f"{path}: refused: {exc}") from None
        model = _safe_keras_load(path)
        return _wrap_foreign(model, path, "full-model .h5 file", {"type": "keras", "file": path.name})
    if not (legacy_weights or v3_weights):
        raise ModelLoadError(f"{path}: HDF5 file holds neither a Keras model nor Keras weights")
    # Weights only (the paper's checkpoints): load into the paper's architecture.
    arch = _unet_architecture(PAPER_BACKBONE, 1)
    model = build_unet(PAPER_BACKBONE, 1, None)
    if v3_weights:
        with tempfile.TemporaryDirectory(prefix="pnxmodel-") as work:
            target = Path(work) / WEIGHTS_NAME  # Keras picks the reader by this suffix
            shutil.copyfile(path, target)
            _load_weights_checked(model, target, path)
    else:
        try:
            model.load_weights(str(path))  # Keras' legacy HDF5 loader: layer by layer, shapes checked
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: these weights do not fit the seed paper's Unet-ResNet50 with one input "
                f"channel: {exc}"
            ) from None
    return _wrap_foreign(model, path, "weights-only .h5 file (loaded into the paper's Unet-ResNet50)", arch)


"""Model files: a trained network plus everything needed to use it the way it was trained.

Our format, ``*.pnxmodel``, is one zip file holding exactly two members:

- ``config.json``: what to rebuild and how to feed it, e.g. ::

      {"format": "napari-pneumoseg-model", "schema_version": 1,
       "architecture": {"type": "sm.Unet", "backbone": "resnet50", "input_channels": 1,
                        "classes": 1, "activation": "sigmoid"},
       "preprocessing": {"method": "window", "hu_min": -1100.0, "hu_max": 300.0},
       "threshold": 0.5,
       "provenance": {... free-form: data, split, epochs, metrics ...},
       "software": {"napari_pneumoseg": "0.1.0", "keras": "3.15.0", ...}}

- ``model.weights.h5``: the weights only (Keras 3 ``save_weights``; no optimizer state).

Loading rebuilds the architecture with our own :func:`build_unet` from the
checked config and loads only arrays, so a model file cannot run code.

Plain Keras files from elsewhere are accepted too: ``.keras`` and full-model
``.h5`` files are loaded with Keras' ``safe_mode`` after our own scan of their
architecture JSON refuses Lambda layers, code-wrapping layers and any class
that is not a built-in Keras one; a weights-only ``.h5`` (what the seed
paper's checkpoints were) is loaded into the paper's Unet-ResNet50. Their
preprocessing is not recorded, so the paper's per-volume min-max is assumed,
with a warning. (Checked with Keras 3.15: ``safe_mode`` also covers legacy
``.h5`` full models there, refusing Python lambdas as for ``.keras``; our scan
does not rely on it and runs before Keras deserialises anything.)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from ._backend import keras_modules
from .network import PAPER_BACKBONE, build_unet, check_architecture_args
from .preprocess import DEFAULT_PREPROCESSING, PAPER_PREPROCESSING, validate_preprocessing

FORMAT_NAME = "napari-pneumoseg-model"
SCHEMA_VERSION = 1
SUFFIX = ".pnxmodel"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.weights.h5"
DEFAULT_THRESHOLD = 0.5
ARCHITECTURE_TYPE = "sm.Unet"
_MAX_CONFIG_BYTES = 1 << 20
_MAX_FOREIGN_CONFIG_BYTES = 64 << 20
_MAX_WEIGHTS_BYTES = 4 << 30

PathLike = Union[str, os.PathLike]


class ModelLoadError(ValueError):
    """A model file was refused or could not be loaded; the message names the file and why."""


@dataclass
class ModelBundle:
    """A Keras segmentation network and how to use it (plain data, no behaviour).

    ``architecture`` says how to rebuild ``model``: ``{"type": "sm.Unet",
    "backbone", "input_channels", "classes": 1, "activation": "sigmoid"}`` for
    our networks, ``{"type": "keras", ...}`` for a foreign full Keras model
    (usable, but not re-savable as ``.pnxmodel``). ``warnings`` collects what
    the user should know (e.g. an assumed preprocessing); ``source`` is the
    file it was loaded from, if any.
    """

    model: Any
    architecture: dict
    preprocessing: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))
    threshold: float = DEFAULT_THRESHOLD
    provenance: dict = field(default_factory=dict)
    source: Optional[Path] = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        backbone: str = PAPER_BACKBONE,
        input_channels: int = 1,
        *,
        encoder_weights: Optional[str] = None,
        preprocessing: Optional[Mapping[str, Any]] = None,
        threshold: float = DEFAULT_THRESHOLD,
        provenance: Optional[Mapping[str, Any]] = None,
    ) -> "ModelBundle":
        """A new (untrained) bundle around :func:`build_unet`; preprocessing defaults to the HU window."""
        arch = _unet_architecture(backbone, input_channels)
        return cls(
            model=build_unet(arch["backbone"], arch["input_channels"], encoder_weights),
            architecture=arch,
            preprocessing=validate_preprocessing(preprocessing),
            threshold=_check_threshold(threshold),
            provenance=dict(provenance or {}),
        )

    @property
    def input_channels(self) -> int:
        return int(self.architecture.get("input_channels", 1))

    @property
    def config(self) -> dict:
        """The JSON-ready config that :func:`save_model` writes."""
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "architecture": dict(self.architecture),
            "preprocessing": dict(self.preprocessing),
            "threshold": float(self.threshold),
            "provenance": dict(self.provenance),
        }


def _unet_architecture(backbone: Any, input_channels: Any) -> dict:
    backbone, input_channels = check_architecture_args(backbone, input_channels)
    return {
        "type": ARCHITECTURE_TYPE,
        "backbone": backbone,
        "input_channels": input_channels,
        "classes": 1,
        "activation": "sigmoid",
    }


def _check_threshold(value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {value!r}") from None
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {t}")
    return t


def validate_config(config: Any) -> dict:
    """Check a ``config.json`` dict; return it normalised. Raises ValueError saying what is wrong."""
    if not isinstance(config, dict):
        raise ValueError("config is not a JSON object")
    if config.get("format") != FORMAT_NAME:
        raise ValueError(f"not a {FORMAT_NAME} config (format={config.get('format')!r})")
    version = config.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {version} is newer than this napari-pneumoseg understands "
            f"({SCHEMA_VERSION}); update napari-pneumoseg"
        )
    if version < 1:
        raise ValueError(f"invalid schema_version {version}")
    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise ValueError("missing 'architecture'")
    if arch.get("type") != ARCHITECTURE_TYPE:
        raise ValueError(f"unknown architecture type {arch.get('type')!r} (expected {ARCHITECTURE_TYPE!r})")
    if arch.get("classes", 1) != 1 or arch.get("activation", "sigmoid") != "sigmoid":
        raise ValueError("only one-class sigmoid networks are supported")
    unknown = set(arch) - {"type", "backbone", "input_channels", "classes", "activation"}
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}")
    provenance = config.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ValueError("'provenance' must be a JSON object")
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "architecture": _unet_architecture(arch.get("backbone"), arch.get("input_channels", 1)),
        "preprocessing": validate_preprocessing(config.get("preprocessing")),
        "threshold": _check_threshold(config.get("threshold", DEFAULT_THRESHOLD)),
        "provenance": provenance,
    }


# --------------------------------------------------------------------------- saving


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, _dt.date, _dt.datetime)):
        return str(obj)
    raise TypeError(f"provenance value of type {type(obj).__name__} is not JSON-serialisable")


def _software_versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("napari-pneumoseg", "keras", "tensorflow", "segmentation-models"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_model(bundle: ModelBundle, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``bundle`` to one ``.pnxmodel`` file, atomically; return the path.

    The file is assembled as a temp file in the same folder and only then
    moved into place, so a crash or a full disk never leaves a half-written
    model under the final name. An existing file is replaced only with
    ``overwrite=True`` (FileExistsError otherwise).
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"model files must end in {SUFFIX}: {path}")
    if bundle.architecture.get("type") != ARCHITECTURE_TYPE:
        raise ValueError(
            f"cannot save as {SUFFIX}: this model came from a plain Keras file and its "
            "architecture is not one napari-pneumoseg can rebuild; keep the original file"
        )
    try:
        config = validate_config(bundle.config)
    except ValueError as exc:
        raise ValueError(f"cannot save this model as {SUFFIX}: {exc}") from None
    config["provenance"] = bundle.provenance
    config["software"] = _software_versions()
    config["saved"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    config_bytes = json.dumps(config, indent=2, default=_json_default).encode("utf-8")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder does not exist: {path.parent}")

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(prefix="pnxmodel-") as work:
            weights = Path(work) / WEIGHTS_NAME
            _save_layer_weights(bundle.model, weights)
            with os.fdopen(fd, "wb") as fh:
                fd = -1
                with zipfile.ZipFile(fh, "w") as zf:
                    zf.writestr(CONFIG_NAME, config_bytes, compress_type=zipfile.ZIP_DEFLATED)
                    # Float weights barely compress; storing keeps saving and loading fast.
                    zf.write(weights, WEIGHTS_NAME, compress_type=zipfile.ZIP_STORED)
                fh.flush()
                os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_clobber(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return path


def _save_layer_weights(model, path: Path) -> None:
    """The layers' weights only: a compiled (training) model would also store its optimizer."""
    from keras.src.saving import saving_lib

    skip = [o for o in (getattr(model, "optimizer", None), getattr(model, "_compile_metrics", None),
                        getattr(model, "_compile_loss", None)) if o is not None]
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip)


def _move_no_clobber(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless something appeared there meanwhile."""
    try:
        os.link(tmp, path)  # atomic and fails if path exists
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
    except OSError:  # file system without hard links
        if path.exists():
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


# --------------------------------------------------------------------------- loading


def load_model(path: PathLike) -> ModelBundle:
    """Load a ``.pnxmodel`` bundle, or a plain Keras ``.keras`` / ``.h5`` file, as a :class:`ModelBundle`.

    Raises FileNotFoundError for a missing file and :class:`ModelLoadError`
    (naming the file and the reason) for anything refused or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == SUFFIX:
        return _load_bundle(path)
    if suffix == ".keras":
        return _load_keras_v3(path)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path)
    raise ModelLoadError(
        f"{path}: unsupported model file type {path.suffix!r}; "
        f"expected {SUFFIX}, .keras or .h5"
    )


def _load_bundle(path: Path) -> ModelBundle:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{path}: not a valid {SUFFIX} file (not a zip: {exc})") from None
    with zf, tempfile.TemporaryDirectory(prefix="pnxmodel-") as work:
        names = set(zf.namelist())
        missing = {CONFIG_NAME, WEIGHTS_NAME} - names
        if missing:
            raise ModelLoadError(f"{path}: not a valid {SUFFIX} file (missing {sorted(missing)})")
        sizes = zf.getinfo(CONFIG_NAME).file_size, zf.getinfo(WEIGHTS_NAME).file_size
        if sizes[0] > _MAX_CONFIG_BYTES or sizes[1] > _MAX_WEIGHTS_BYTES:
            raise ModelLoadError(f"{path}: implausibly large members; not a {SUFFIX} file")
        try:
            config = validate_config(json.loads(zf.read(CONFIG_NAME).decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path}: invalid {CONFIG_NAME}: {exc}") from None
        # Extract only the weights, under a fixed name (never a name taken from the zip).
        weights = Path(work) / WEIGHTS_NAME
        with zf.open(WEIGHTS_NAME) as src, open(weights, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        arch = config["architecture"]
        model = build_unet(arch["backbone"], arch["input_channels"], None)
        _load_weights_checked(model, weights, path)
    return ModelBundle(
        model=model,
        architecture=arch,
        preprocessing=config["preprocessing"],
        threshold=config["threshold"],
        provenance=config["provenance"],
        source=path,
    )


def _load_weights_checked(model, weights: Path, path: Path) -> None:
    """Load a Keras 3 ``.weights.h5`` into ``model``; refuse partial or mismatched loads.

    Keras 3 only *warns* when parts of a weights file do not match the model
    (and keeps fresh random weights there), so the stored arrays' shapes are
    compared first and any loading warning is turned into an error.
    """
    import h5py

    try:
        with h5py.File(weights, "r") as f:
            stored = []
            f.visititems(lambda name, obj: stored.append(tuple(obj.shape)) if isinstance(obj, h5py.Dataset) else None)
    except OSError as exc:
        raise ModelLoadError(f"{path}: weights are not a readable HDF5 file ({exc})") from None
    expected = [tuple(int(d) for d in w.shape) for w in model.weights]
    if sorted(stored) != sorted(expected):
        raise ModelLoadError(
            f"{path}: weights do not match the architecture in its config "
            f"({len(stored)} stored arrays, {len(expected)} expected)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(weights))
        except Exception as exc:
            raise ModelLoadError(f"{path}: weights do not fit the architecture: {exc}") from None
    problems = [
        str(w.message)
        for w in caught
        if any(k in str(w.message).lower() for k in ("skipping", "could not be loaded", "freshly-initialized"))
    ]
    if problems:
        raise ModelLoadError(f"{path}: weights were only partly loaded: {problems[0]}")


# ----- foreign Keras files

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
    """Refuse an architecture JSON that would run code or needs custom objects (raises ValueError).

    Keras ``safe_mode`` already refuses Python lambdas; this check is stricter
    and independent of it: no Lambda-like layer at all, every layer a built-in
    Keras layer, and (Keras 3 files) every object from a ``keras`` module.
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


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

Plain Keras files from elsewhere (``.keras``, full-model or weights-only
``.h5``) are accepted too, through the same :func:`load_model`; how they are
checked before Keras sees them is in :mod:`napari_pneumoseg.model.foreign`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from ..io.atomic import atomic_path
from .network import PAPER_BACKBONE, build_unet, check_architecture_args
from .preprocess import DEFAULT_PREPROCESSING, validate_preprocessing

FORMAT_NAME = "napari-pneumoseg-model"
SCHEMA_VERSION = 1
SUFFIX = ".pnxmodel"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.weights.h5"
DEFAULT_THRESHOLD = 0.5
ARCHITECTURE_TYPE = "sm.Unet"
_MAX_CONFIG_BYTES = 1 << 20
_MAX_WEIGHTS_BYTES = 4 << 30

PathLike = Union[str, os.PathLike]


class ModelLoadError(ValueError):
    """A model file was refused or could not be loaded; the message names the file and why."""


@dataclass
class ModelBundle:
    """A Keras segmentation network and how to use it (plain data, no behaviour).

    Made by :meth:`build` (a new network), :func:`load_model` (a file) or
    training; written by :func:`save_model`. Inference and training read
    ``preprocessing`` and ``threshold`` from here, so a model is always fed as
    it was trained.

    Parameters
    ----------
    model : keras.Model
        The network: ``(n, y, x, input_channels)`` in, one sigmoid channel out.
    architecture : dict
        How to rebuild ``model``: ``{"type": "sm.Unet", "backbone",
        "input_channels", "classes": 1, "activation": "sigmoid"}`` for our
        networks, ``{"type": "keras", ...}`` for a foreign full Keras model
        (usable, but not re-savable as ``.pnxmodel``).
    preprocessing : dict, optional
        See :func:`~napari_pneumoseg.model.preprocess.validate_preprocessing`;
        default the fixed HU window (``DEFAULT_PREPROCESSING``).
    threshold : float, default 0.5
        A voxel is pneumothorax when its probability is above it (see
        :func:`~napari_pneumoseg.model.inference.foreground`).
    provenance : dict, optional
        Free-form, JSON-serialisable record of how the model was made (data,
        split, epochs, metrics).
    source : pathlib.Path, optional
        The file it was loaded from, if any.
    warnings : list of str, optional
        What the user should know (e.g. an assumed preprocessing).

    Examples
    --------
    >>> bundle = ModelBundle.build("resnet18", provenance={"note": "untrained"})  # doctest: +SKIP
    >>> bundle.config["architecture"]["backbone"]  # doctest: +SKIP
    'resnet18'
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
        """A new, untrained bundle around :func:`~napari_pneumoseg.model.network.build_unet`.

        Imports TensorFlow.

        Parameters
        ----------
        backbone : str, default "resnet50"
            Encoder, one of :data:`~napari_pneumoseg.model.network.KNOWN_BACKBONES`
            (the paper's is ResNet-50).
        input_channels : int, default 1
            Input channels, 1 to 16.
        encoder_weights : {None, "imagenet"}, optional
            None (random initialisation, as the paper) or ImageNet weights
            (downloaded on first use).
        preprocessing : mapping, optional
            Checked by :func:`~napari_pneumoseg.model.preprocess.validate_preprocessing`;
            default the fixed HU window.
        threshold : float, default 0.5
            Strictly between 0 and 1.
        provenance : mapping, optional
            Copied into the bundle.

        Returns
        -------
        ModelBundle
            With ``architecture`` filled in for ``sm.Unet``.

        Raises
        ------
        ValueError
            Unknown backbone, bad channel count, ``encoder_weights`` other than
            None or ``"imagenet"``, invalid preprocessing or threshold.
        napari_pneumoseg.model.WeightsDownloadError
            ImageNet weights were asked for and cannot be downloaded.

        Examples
        --------
        >>> bundle = ModelBundle.build("resnet18", threshold=0.4)  # doctest: +SKIP
        >>> bundle.architecture  # doctest: +SKIP
        {'type': 'sm.Unet', 'backbone': 'resnet18', 'input_channels': 1, 'classes': 1, 'activation': 'sigmoid'}
        """
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
        """The number of input channels the network takes (1 unless the architecture says otherwise)."""
        return int(self.architecture.get("input_channels", 1))

    @property
    def config(self) -> dict:
        """The model's config as :func:`save_model` writes it (before its checks and versions).

        A new dict: ``format``, ``schema_version``, ``architecture``,
        ``preprocessing``, ``threshold`` and ``provenance`` (shallow copies).
        """
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
    """Check the ``config.json`` of a ``.pnxmodel`` file and return it normalised.

    Everything a model file may say is checked before any network is built:
    format name, schema version (newer than this package: refused), an
    ``sm.Unet`` architecture with one sigmoid output and known keys only,
    preprocessing and threshold. Keys outside those (e.g. ``software``,
    ``saved``) are dropped.

    Parameters
    ----------
    config : object
        The parsed JSON.

    Returns
    -------
    dict
        ``format``, ``schema_version``, ``architecture`` (with defaults filled
        in), ``preprocessing`` (normalised), ``threshold`` and ``provenance``
        (as given).

    Raises
    ------
    ValueError
        Saying what is wrong: not a JSON object, another format, a bad or
        newer schema version, an unknown architecture type, backbone, key or
        channel count, not one sigmoid class, invalid preprocessing or
        threshold, or a ``provenance`` that is not an object.

    Examples
    --------
    >>> config = validate_config({"format": "napari-pneumoseg-model", "schema_version": 1,
    ...                           "architecture": {"type": "sm.Unet", "backbone": "resnet18"}})
    >>> config["architecture"]["input_channels"], config["preprocessing"], config["threshold"]
    (1, {'method': 'window', 'hu_min': -1100.0, 'hu_max': 300.0}, 0.5)
    >>> validate_config({"format": "napari-pneumoseg-model", "schema_version": 2})
    Traceback (most recent call last):
    ...
    ValueError: schema_version 2 is newer than this napari-pneumoseg understands (1); update napari-pneumoseg
    """
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
    """Write ``bundle`` to one ``.pnxmodel`` file, atomically.

    The file is assembled as a hidden temp file in the same folder and only
    then moved into place (see :func:`~napari_pneumoseg.io.atomic.atomic_path`),
    so a crash, a cancel or a full disk never leaves a half-written model under
    the final name, nor a temp file. The model gets the permissions of a new
    file under the user's umask. Only the layers' weights are stored (no
    optimizer state).

    Parameters
    ----------
    bundle : ModelBundle
        A bundle of one of our networks (``architecture["type"] == "sm.Unet"``).
    path : str or os.PathLike
        The file to write; must end in ``.pnxmodel`` and its folder must exist.
    overwrite : bool, default False
        Replace an existing file (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Wrong suffix, a foreign Keras model (not re-savable), or an invalid
        config (threshold, preprocessing...).
    FileExistsError
        ``path`` exists (or appears while saving) and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.
    TypeError
        ``bundle.provenance`` holds a value that cannot be written as JSON.

    Examples
    --------
    >>> bundle = ModelBundle.build("resnet18")  # doctest: +SKIP
    >>> save_model(bundle, "lungs.pnxmodel")  # doctest: +SKIP
    PosixPath('lungs.pnxmodel')
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

    with atomic_path(path, overwrite=overwrite) as tmp, \
            tempfile.TemporaryDirectory(prefix="pnxmodel-") as work:
        weights = Path(work) / WEIGHTS_NAME
        _save_layer_weights(bundle.model, weights)
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(CONFIG_NAME, config_bytes, compress_type=zipfile.ZIP_DEFLATED)
            # Float weights barely compress; storing keeps saving and loading fast.
            zf.write(weights, WEIGHTS_NAME, compress_type=zipfile.ZIP_STORED)
    return path


def _save_layer_weights(model, path: Path) -> None:
    """The layers' weights only: a compiled (training) model would also store its optimizer."""
    from keras.src.saving import saving_lib

    skip = [o for o in (getattr(model, "optimizer", None), getattr(model, "_compile_metrics", None),
                        getattr(model, "_compile_loss", None)) if o is not None]
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip)


# --------------------------------------------------------------------------- loading


def load_model(path: PathLike) -> ModelBundle:
    """Load a ``.pnxmodel`` bundle, or a plain Keras ``.keras`` / ``.h5`` file, as a :class:`ModelBundle`.

    The one entry point for every model file, dispatching by suffix. No model
    file can run code: ``.pnxmodel`` rebuilds our own architecture from its
    checked config and loads arrays only; plain Keras files are scanned and
    refused if they hold code-running layers or custom objects (see
    :mod:`napari_pneumoseg.model.foreign`), and are then used with the seed
    paper's preprocessing assumed (a :class:`UserWarning`, also recorded in
    ``bundle.warnings``).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pnxmodel``, ``.keras``, ``.h5`` or ``.hdf5`` file.

    Returns
    -------
    ModelBundle
        The network with its preprocessing, threshold and provenance;
        ``source`` is ``path``.

    Raises
    ------
    FileNotFoundError
        ``path`` is not an existing file.
    ModelLoadError
        The file was refused or could not be loaded (the message names the
        file and the reason), or its suffix is not one of the above.

    Examples
    --------
    >>> bundle = load_model("lungs.pnxmodel")  # doctest: +SKIP
    >>> bundle.preprocessing  # doctest: +SKIP
    {'method': 'window', 'hu_min': -1100.0, 'hu_max': 300.0}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == SUFFIX:
        return _load_bundle(path)
    if suffix in (".keras", ".h5", ".hdf5"):
        from .foreign import _load_h5, _load_keras_v3  # imports this module: keep it lazy

        return _load_keras_v3(path) if suffix == ".keras" else _load_h5(path)
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
            # Read no more than the member declares (a zip can lie about it): memory and disk stay bounded.
            with zf.open(CONFIG_NAME) as src:
                text = src.read(sizes[0] + 1)
            if len(text) > sizes[0]:
                raise ModelLoadError(f"{path}: {CONFIG_NAME} is larger than the zip declares; not a {SUFFIX} file")
            config = validate_config(json.loads(text.decode("utf-8")))
            # Extract only the weights, under a fixed name (never a name taken from the zip).
            weights = Path(work) / WEIGHTS_NAME
            written = 0
            with zf.open(WEIGHTS_NAME) as src, open(weights, "wb") as dst:
                while chunk := src.read(1 << 22):
                    written += len(chunk)
                    if written > sizes[1]:
                        raise ModelLoadError(f"{path}: {WEIGHTS_NAME} is larger than the zip declares; "
                                             f"not a {SUFFIX} file")
                    dst.write(chunk)
        except ModelLoadError:
            raise
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelLoadError(f"{path}: invalid {CONFIG_NAME}: {exc}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise ModelLoadError(f"{path}: the zip is damaged or truncated ({exc}); get the file again") from None
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
            stored, kinds = [], set()

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    stored.append(tuple(obj.shape))
                    kinds.add(obj.dtype.kind)

            f.visititems(visit)
    except OSError as exc:
        raise ModelLoadError(f"{path}: weights are not a readable HDF5 file ({exc})") from None
    if kinds - {"f"}:
        raise ModelLoadError(f"{path}: weights must be floating-point arrays, found dtype kinds {sorted(kinds)}")
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

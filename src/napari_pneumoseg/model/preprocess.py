"""Turn HU slices into network input: the one preprocessing shared by training and inference.

Pure numpy (no TensorFlow). A preprocessing is described by a small dict that
is stored in every model bundle, so a model is always fed as it was trained:

- ``{"method": "window", "hu_min": -1100, "hu_max": 300}`` (default): clip HU to
  the window and scale it to [0, 1], as Wu et al. 2021. The window is fixed,
  so every study is scaled the same way.
- ``{"method": "minmax"}``: the seed paper's code: per-volume min-max to [0, 1]
  over the whole volume (scikit-learn ``MinMaxScaler`` on the flattened
  volume). The scale then depends on each study's extreme voxels.

Either may add ``"pixel_spacing_mm"``: the in-plane pixel size the model was
trained at. Every CT is then resampled to it before the network and the
result back onto the CT's grid (:mod:`.resample`); without it (older models,
models trained at native resolution) a CT runs at its own resolution.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

DEFAULT_PREPROCESSING: dict[str, Any] = {"method": "window", "hu_min": -1100.0, "hu_max": 300.0}
PAPER_PREPROCESSING: dict[str, Any] = {"method": "minmax"}

_KEYS = {"window": {"method", "hu_min", "hu_max", "pixel_spacing_mm"},
         "minmax": {"method", "pixel_spacing_mm"}}


def validate_preprocessing(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Check a preprocessing dict and return a normalised copy.

    Unknown methods or keys are errors rather than ignored: a setting this
    version does not understand would otherwise silently change the input.

    Parameters
    ----------
    config : mapping or None
        ``{"method": "window", "hu_min": ..., "hu_max": ...}`` (bounds
        default to -1100 and 300 HU) or ``{"method": "minmax"}``, either with
        an optional ``"pixel_spacing_mm"`` (a positive number, or None: kept
        only when set); None means :data:`DEFAULT_PREPROCESSING`.

    Returns
    -------
    dict
        A new dict; for ``window`` with ``hu_min`` and ``hu_max`` as floats.

    Raises
    ------
    ValueError
        Not a mapping, an unknown method or key, window bounds that are
        not finite numbers with ``hu_min < hu_max``, or a pixel spacing that is
        not a positive number.

    Examples
    --------
    >>> validate_preprocessing(None)
    {'method': 'window', 'hu_min': -1100.0, 'hu_max': 300.0}
    >>> validate_preprocessing({"method": "window", "hu_max": 400})
    {'method': 'window', 'hu_min': -1100.0, 'hu_max': 400.0}
    >>> validate_preprocessing({"method": "window", "level": -600})
    Traceback (most recent call last):
    ...
    ValueError: unknown keys for preprocessing 'window': ['level']
    >>> validate_preprocessing({"method": "minmax", "pixel_spacing_mm": 2.8})
    {'method': 'minmax', 'pixel_spacing_mm': 2.8}
    """
    if config is None:
        return dict(DEFAULT_PREPROCESSING)
    if not isinstance(config, Mapping):
        raise ValueError(f"preprocessing must be a dict, got {type(config).__name__}")
    method = config.get("method")
    if method not in _KEYS:
        raise ValueError(
            f"unknown preprocessing method {method!r}; known: {sorted(_KEYS)}"
        )
    unknown = set(config) - _KEYS[method]
    if unknown:
        raise ValueError(f"unknown keys for preprocessing {method!r}: {sorted(unknown)}")
    out: dict[str, Any] = {"method": method}
    if method == "window":
        try:
            lo = float(config.get("hu_min", DEFAULT_PREPROCESSING["hu_min"]))
            hi = float(config.get("hu_max", DEFAULT_PREPROCESSING["hu_max"]))
        except (TypeError, ValueError):
            raise ValueError(f"window hu_min/hu_max must be numbers, got {dict(config)}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"window needs finite hu_min < hu_max, got {lo} and {hi}")
        out.update(hu_min=lo, hu_max=hi)
    spacing = config.get("pixel_spacing_mm")
    if spacing is not None:
        try:
            spacing = float(spacing)
        except (TypeError, ValueError):
            spacing = float("nan")
        if isinstance(config.get("pixel_spacing_mm"), bool) or not (np.isfinite(spacing) and spacing > 0):
            raise ValueError(f"pixel_spacing_mm must be a positive number of mm, got "
                             f"{config.get('pixel_spacing_mm')!r}")
        out["pixel_spacing_mm"] = spacing
    return out


def volume_stats(hu_volume: np.ndarray, config: Optional[Mapping[str, Any]] = None) -> Optional[dict]:
    """The whole-volume statistics a preprocessing needs: ``{"min", "max"}`` for min-max, else None.

    Compute them once on the whole volume and pass them to every
    :func:`preprocess` call when slices are processed batch by batch.

    Parameters
    ----------
    hu_volume : array_like
        The whole CT in HU.
    config : mapping, optional
        The preprocessing (see :func:`validate_preprocessing`); default the
        fixed window, which needs no statistics.

    Returns
    -------
    dict or None
        ``{"min": float, "max": float}`` for ``minmax``; None otherwise.

    Raises
    ------
    ValueError
        Invalid ``config``; or, for ``minmax``, an empty volume or one with
        NaN or infinite values.

    Examples
    --------
    >>> hu = np.array([[[-1024.0, 40.0], [300.0, 1500.0]]])
    >>> volume_stats(hu) is None
    True
    >>> volume_stats(hu, {"method": "minmax"})
    {'min': -1024.0, 'max': 1500.0}
    """
    cfg = validate_preprocessing(config)
    if cfg["method"] != "minmax":
        return None
    hu = np.asarray(hu_volume)
    if hu.size == 0:
        raise ValueError("cannot compute min-max statistics of an empty volume")
    lo, hi = float(hu.min()), float(hu.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("the CT contains non-finite values (NaN or inf)")
    return {"min": lo, "max": hi}


def centred_padding(size: int, target: int) -> tuple[int, int]:
    """Pixels to add before and after an axis of ``size`` to reach ``target``: centred.

    The one padding rule of the package: inference pads each slice to the
    network's frame this way (with the volume's lowest HU) and training pads
    slices and patches the same way (with the volume's lowest scaled value).

    Parameters
    ----------
    size, target : int
        Current and wanted length; ``target >= size``.

    Returns
    -------
    tuple of int
        ``(before, after)``, ``before = (target - size) // 2``.

    Raises
    ------
    ValueError
        ``target`` is smaller than ``size``.

    Examples
    --------
    >>> centred_padding(500, 512), centred_padding(5, 8)
    ((6, 6), (1, 2))
    """
    extra = int(target) - int(size)
    if extra < 0:
        raise ValueError(f"cannot pad {size} pixels to {target}")
    return extra // 2, extra - extra // 2


_volume_stats = volume_stats  # preprocess() has a parameter of the same name


def preprocess(
    hu_slices: np.ndarray,
    config: Optional[Mapping[str, Any]] = None,
    volume_stats: Optional[Mapping[str, float]] = None,
    *,
    channels: int = 1,
) -> np.ndarray:
    """Scale HU slices to network input: float32 ``(n, y, x, channels)``, the same for training and inference.

    ``window`` clips HU to ``[hu_min, hu_max]`` and maps that range to
    [0, 1]. ``minmax`` maps the volume's ``[min, max]`` to [0, 1] (a
    constant volume to 0).

    Parameters
    ----------
    hu_slices : array_like
        HU slices ``(n, y, x)``, or one slice ``(y, x)`` (then ``n = 1``).
    config : mapping, optional
        The preprocessing (see :func:`validate_preprocessing`); default the
        fixed window.
    volume_stats : mapping, optional
        For ``minmax``: :func:`volume_stats` of the whole volume. Without it
        the given slices are taken to be the whole volume. Ignored by
        ``window``.
    channels : int, default 1
        With ``channels > 1`` the single scaled image is repeated in every
        channel.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, y, x, channels)``.

    Raises
    ------
    ValueError
        Invalid ``config``, input that is not 2-D or 3-D, ``channels < 1``,
        or (``minmax`` without ``volume_stats``) an empty or non-finite
        volume.

    Examples
    --------
    >>> hu = np.array([[-2000.0, -1100.0], [-400.0, 300.0]])
    >>> x = preprocess(hu)
    >>> x.shape, x.dtype
    ((1, 2, 2, 1), dtype('float32'))
    >>> x[0, ..., 0].tolist()
    [[0.0, 0.0], [0.5, 1.0]]
    >>> stats = {"min": -1000.0, "max": 3000.0}  # volume_stats() of the whole volume
    >>> preprocess([[-1000.0, 0.0], [1000.0, 3000.0]], {"method": "minmax"}, stats)[0, ..., 0].tolist()
    [[0.0, 0.25], [0.5, 1.0]]
    >>> preprocess(hu, channels=3).shape
    (1, 2, 2, 3)
    """
    cfg = validate_preprocessing(config)
    hu = np.asarray(hu_slices)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3:
        raise ValueError(f"expected HU slices (n, y, x) or one slice (y, x), got shape {hu.shape}")
    if int(channels) < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    hu = hu.astype(np.float32, copy=False)

    if cfg["method"] == "window":
        lo, hi = np.float32(cfg["hu_min"]), np.float32(cfg["hu_max"])
        out = (np.clip(hu, lo, hi) - lo) / (hi - lo)
    else:  # minmax
        if volume_stats is None:
            volume_stats = _volume_stats(hu, cfg)
        lo, hi = float(volume_stats["min"]), float(volume_stats["max"])
        if hi > lo:
            out = (hu - np.float32(lo)) / np.float32(hi - lo)
        else:  # constant volume: MinMaxScaler maps it to 0
            out = np.zeros_like(hu)
    out = out.astype(np.float32, copy=False)[..., None]
    if channels > 1:
        out = np.repeat(out, int(channels), axis=-1)
    return out

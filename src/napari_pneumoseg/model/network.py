"""The segmentation network: segmentation-models' Unet, as the seed paper built it.

Gencer & Toker 2024 used ``sm.Unet('resnet50', encoder_weights=None,
input_shape=(None, None, 1))`` with one sigmoid output: 32,554,836 parameters,
32,507,282 trainable. It is fully convolutional; slice height and width must
be multiples of 32 (five 2x downsamplings).

ImageNet encoder weights (``encoder_weights="imagenet"``) need internet access
on first use (Keras caches them under ``$KERAS_HOME/models``). They were
trained on 3-channel RGB. segmentation-models itself cannot load them into a
network with another number of input channels: with ``input_shape=(None, None,
1)`` it stops with "Shape mismatch in layer #0 (named bn_data) ... expects
shape (1,) ... received (3,)". :func:`build_unet` therefore builds the
3-channel ImageNet network and copies its weights into the requested one,
adapting only the layers that touch the input channels: first-convolution
kernels are averaged over the 3 RGB channels and scaled by ``3 /
input_channels`` (for one channel they are summed, as timm does, so that
convolution answers a grey image as it answered the grey image repeated in R,
G and B), and the per-channel input BatchNorm (``bn_data``) parameters are
averaged. Those encoders expect
0-255 RGB-like input, not our [0, 1] scale, so ImageNet weights are only a
starting point for training, never a model to run as is.
"""

from __future__ import annotations

import urllib.error
from typing import Any, Optional

import numpy as np

from ._backend import keras_modules

PAPER_BACKBONE = "resnet50"
#: Parameter counts of the paper's network (resnet50, 1 input channel).
PAPER_TOTAL_PARAMS = 32_554_836
PAPER_TRAINABLE_PARAMS = 32_507_282
#: Network cost of one 512x512 slice (GFLOP). The benchmarks scale it by the pixels a
#: run fed the network to report GFLOP/s (see benchmarks/README.md).
PAPER_GFLOP_PER_512_SLICE = 84.2

#: Backbones accepted in model files. All build with Keras 3 here (resnet18/34/
#: 50/101, vgg16, seresnet18/50, resnext50, mobilenetv2, inceptionv3 and
#: efficientnetb0 were built and run; the others share their family's code).
#: densenet* fail to build under Keras 3 (layer names with "/"); mobilenet,
#: inceptionresnetv2 and senet154 were not tried.
KNOWN_BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
    "resnext50", "resnext101",
    "vgg16", "vgg19",
    "mobilenetv2", "inceptionv3",
    "efficientnetb0", "efficientnetb1", "efficientnetb2", "efficientnetb3",
    "efficientnetb4", "efficientnetb5", "efficientnetb6", "efficientnetb7",
)  # fmt: skip

MAX_INPUT_CHANNELS = 16


class WeightsDownloadError(RuntimeError):
    """ImageNet encoder weights were requested but could not be downloaded."""


def check_architecture_args(backbone: Any, input_channels: Any) -> tuple[str, int]:
    """Check a backbone name and input channel count; return them normalised.

    The one check of architecture arguments, shared by :func:`build_unet` and
    model files (:func:`~napari_pneumoseg.model.bundle.validate_config`).

    Parameters
    ----------
    backbone : object
        Must be one of :data:`KNOWN_BACKBONES`.
    input_channels : object
        An integer (not a bool) from 1 to :data:`MAX_INPUT_CHANNELS`.

    Returns
    -------
    tuple of (str, int)
        ``(backbone, input_channels)``.

    Raises
    ------
    ValueError
        Unknown backbone (the message lists the known ones), or a channel
        count that is not an integer in range.

    Examples
    --------
    >>> check_architecture_args("resnet50", np.int64(1))
    ('resnet50', 1)
    >>> check_architecture_args("resnet50", 0)
    Traceback (most recent call last):
    ...
    ValueError: input_channels must be 1..16, got 0
    """
    if backbone not in KNOWN_BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(KNOWN_BACKBONES)}")
    if isinstance(input_channels, bool) or not isinstance(input_channels, (int, np.integer)):
        raise ValueError(f"input_channels must be an integer, got {input_channels!r}")
    if not 1 <= int(input_channels) <= MAX_INPUT_CHANNELS:
        raise ValueError(f"input_channels must be 1..{MAX_INPUT_CHANNELS}, got {input_channels}")
    return str(backbone), int(input_channels)


def build_unet(backbone: str = PAPER_BACKBONE, input_channels: int = 1, encoder_weights: Optional[str] = None):
    """Build ``sm.Unet(backbone, input_shape=(None, None, input_channels), classes=1, activation="sigmoid")``.

    Imports TensorFlow. The network is fully convolutional: slice height and
    width must be multiples of 32.

    Parameters
    ----------
    backbone : str, default "resnet50"
        Encoder, one of :data:`KNOWN_BACKBONES` (the paper's is ResNet-50).
    input_channels : int, default 1
        Input channels, 1 to :data:`MAX_INPUT_CHANNELS`.
    encoder_weights : {None, "imagenet"}, optional
        None: random initialisation, as the paper. ``"imagenet"``: ImageNet
        encoder weights, downloaded on first use and adapted to
        ``input_channels`` as the module docstring describes; a starting
        point for training only.

    Returns
    -------
    keras.Model
        Not compiled. For ``resnet50`` with one channel it has
        :data:`PAPER_TOTAL_PARAMS` parameters, :data:`PAPER_TRAINABLE_PARAMS`
        trainable, as the paper's.

    Raises
    ------
    ValueError
        Unknown backbone, bad channel count (see
        :func:`check_architecture_args`), or ``encoder_weights`` other than
        None or ``"imagenet"``.
    WeightsDownloadError
        ImageNet weights were asked for and cannot be downloaded.

    Examples
    --------
    >>> model = build_unet("resnet50")  # doctest: +SKIP
    >>> count_parameters(model) == (PAPER_TOTAL_PARAMS, PAPER_TRAINABLE_PARAMS)  # doctest: +SKIP
    True
    """
    backbone, input_channels = check_architecture_args(backbone, input_channels)
    if encoder_weights not in (None, "imagenet"):
        raise ValueError(f"encoder_weights must be None or 'imagenet', got {encoder_weights!r}")
    sm = keras_modules().sm

    def unet(channels: int, weights: Optional[str]):
        return sm.Unet(
            backbone,
            encoder_weights=weights,
            input_shape=(None, None, channels),
            classes=1,
            activation="sigmoid",
        )

    if encoder_weights is None:
        return unet(input_channels, None)
    try:
        rgb = unet(3, "imagenet")
    except Exception as exc:
        if _is_download_error(exc):
            raise WeightsDownloadError(
                f"ImageNet weights for the {backbone} encoder cannot be downloaded ({exc}). "
                "Without internet access use encoder_weights=None (random initialisation, "
                "as the seed paper did), or put the weights file into $KERAS_HOME/models."
            ) from exc
        raise
    if input_channels == 3:
        return rgb
    model = unet(input_channels, None)
    _copy_adapting_input_channels(rgb, model, input_channels)
    return model


def _is_download_error(exc: BaseException) -> bool:
    # keras.utils.get_file re-raises network failures as a bare Exception("URL fetch failure on ...").
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)) or (
        "URL fetch failure" in str(exc) or "Incomplete or corrupted file" in str(exc)
    )


def _copy_adapting_input_channels(src, dst, channels: int) -> None:
    """Copy all weights of ``src`` (3 input channels) into ``dst`` (``channels`` channels)."""
    if len(src.layers) != len(dst.layers):
        raise RuntimeError("ImageNet and target networks differ in layers; cannot transfer weights")
    for a, b in zip(src.layers, dst.layers):
        if type(a) is not type(b):
            raise RuntimeError(f"layer mismatch during weight transfer: {a.name} vs {b.name}")
        weights = a.get_weights()
        if not weights:
            continue
        out = []
        for w, target in zip(weights, b.get_weights()):
            if w.shape == target.shape:
                out.append(w)
            elif w.ndim == 4 and w.shape[2] == 3 and w.shape[:2] + w.shape[3:] == target.shape[:2] + target.shape[3:]:
                mean = w.mean(axis=2, keepdims=True) * (3.0 / channels)
                out.append(np.repeat(mean, channels, axis=2).astype(w.dtype))
            elif w.ndim == 1 and w.shape[0] == 3:
                out.append(np.full(target.shape, w.mean(), dtype=w.dtype))
            else:
                raise RuntimeError(
                    f"cannot adapt weight of layer {a.name} from shape {w.shape} to {target.shape}"
                )
        b.set_weights(out)


def count_parameters(model) -> tuple[int, int]:
    """The total and trainable parameter counts of a Keras model.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    tuple of (int, int)
        ``(total, trainable)``.

    Examples
    --------
    >>> count_parameters(build_unet("resnet50"))  # doctest: +SKIP
    (32554836, 32507282)
    """
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return int(model.count_params()), trainable

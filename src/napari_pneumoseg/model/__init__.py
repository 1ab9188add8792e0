"""The segmentation network, its model files, preprocessing and inference.

Importing this package does not import TensorFlow (seconds to load); the
functions that need it import it when first called.
"""

from .bundle import ModelBundle, ModelLoadError, load_model, save_model
from .inference import InferenceInfo, SegmentResult, configure_device, segment
from .network import WeightsDownloadError, build_unet
from .preprocess import DEFAULT_PREPROCESSING, PAPER_PREPROCESSING, preprocess, volume_stats

__all__ = [
    "build_unet",
    "ModelBundle",
    "save_model",
    "load_model",
    "ModelLoadError",
    "WeightsDownloadError",
    "segment",
    "SegmentResult",
    "InferenceInfo",
    "configure_device",
    "preprocess",
    "volume_stats",
    "DEFAULT_PREPROCESSING",
    "PAPER_PREPROCESSING",
]

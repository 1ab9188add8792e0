"""napari-pneumoseg: find and measure pneumothorax on chest CT.

The public API is importable from here without TensorFlow: functions that
need the network import it lazily when they are called.
"""

from .annotate import interpolate_slices
from .ct import CTReadError, CTVolume, read_ct
from .io import MaskFileError, MaskGeometryError, read_mask, write_mask
from .measure import Measurement, measure, metrics_from_counts
from .model import ModelBundle, ModelLoadError, SegmentResult, build_unet, load_model, save_model, segment
from .phantom import Phantom, make_phantom, write_phantom_case
from .pleural import PleuralAir, find_pleural_air
from .progress import Cancelled
from .report import write_report
from .simulate import SimulatedCase, simulate_pneumothorax
from .training import TrainResult, add_case, train

__version__ = "0.1.0"

__all__ = [
    "CTVolume", "CTReadError", "read_ct",
    "read_mask", "write_mask", "MaskFileError", "MaskGeometryError",
    "Measurement", "measure", "metrics_from_counts",
    "ModelBundle", "ModelLoadError", "build_unet", "load_model", "save_model",
    "segment", "SegmentResult", "train", "TrainResult",
    "Phantom", "make_phantom", "write_phantom_case", "SimulatedCase", "simulate_pneumothorax",
    "PleuralAir", "find_pleural_air", "write_report", "interpolate_slices", "add_case",
    "Cancelled", "__version__",
]

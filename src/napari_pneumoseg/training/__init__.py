"""Training the network on annotated cases (runs in the engine process or a script)."""

from .cases import Case, add_case, load_cases
from .split import Split, split_cases
from .train import TrainResult, train

__all__ = ["Case", "add_case", "load_cases", "Split", "split_cases", "TrainResult", "train"]

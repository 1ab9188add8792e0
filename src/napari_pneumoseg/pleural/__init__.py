"""Pleural air found from the CT alone, with no trained model (a first answer and a pre-annotation)."""

from ._find import PleuralAir, find_pleural_air

__all__ = ["PleuralAir", "find_pleural_air"]

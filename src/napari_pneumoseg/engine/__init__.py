"""The engine process that runs the network outside napari's process."""

from .client import Engine, EngineError, JobFiles

__all__ = ["Engine", "EngineError", "JobFiles"]

"""The engine process that runs the network outside napari's process."""

from .client import Engine, EngineBusy, EngineError, JobFiles
from .requests import Request, SegmentRequest, SelfTestRequest, TrainRequest

__all__ = ["Engine", "EngineBusy", "EngineError", "JobFiles", "Request", "SegmentRequest", "SelfTestRequest",
           "TrainRequest"]

"""What a client asks the engine to do: one typed request per job kind, shared by both sides.

The client (napari's process, TensorFlow-free) builds a request, the engine
rebuilds the same dataclass from plain data and runs it, so the parameters of
a job are written down once. Large arrays travel as ``.npy`` files named in the
request (see :class:`~napari_pneumoseg.engine.JobFiles`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ..ct.volume import STANDARD_AXIAL, CTVolume
from ..model.inference import DEFAULT_BATCH_SIZE


@dataclass
class Request:
    """Base of every engine request: ``kind`` names the job, fields are plain data."""

    kind: ClassVar[str] = ""

    def as_params(self) -> dict[str, Any]:
        """The fields as plain data (what crosses the process boundary)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Request":
        """Rebuild a request; unknown fields are an error (client and engine must agree).

        Raises
        ------
        ValueError
            ``params`` has fields this request does not know.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise ValueError(f"unknown {cls.kind} job parameters: {sorted(unknown)}")
        return cls(**params)


@dataclass
class SegmentRequest(Request):
    """Segment one CT with a model file (:func:`~napari_pneumoseg.model.segment`'s options).

    ``ct`` is a float32 HU ``.npy`` file ``(z, y, x)``; ``spacing``, ``origin``
    and ``direction`` its geometry (as :class:`~napari_pneumoseg.CTVolume`);
    the engine writes ``mask.npy`` (and ``probabilities.npy``) into ``out_dir``.
    """

    kind: ClassVar[str] = "segment"
    ct: str
    out_dir: str
    model: str
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: list = field(default_factory=lambda: STANDARD_AXIAL.tolist())
    batch_size: int = DEFAULT_BATCH_SIZE
    threshold: Optional[float] = None
    probabilities: bool = False
    crop_chest: bool = True
    skip_slices: bool = True

    @classmethod
    def for_ct(cls, ct: CTVolume, *, ct_file: str, out_dir: str, model: str, **options) -> "SegmentRequest":
        """A request for ``ct`` (its voxels already saved to ``ct_file``) with its geometry."""
        return cls(ct=str(ct_file), out_dir=str(out_dir), model=str(model),
                   spacing=tuple(ct.spacing), origin=tuple(ct.origin),
                   direction=ct.direction.tolist(), **options)


@dataclass
class TrainRequest(Request):
    """Train a model (:func:`~napari_pneumoseg.training.train`) on a dataset folder or saved arrays.

    Either ``dataset`` (a folder) or ``cases``: dicts ``{"ct": npy, "mask": npy,
    "spacing": [z, y, x]}``. Options left at None take ``train()``'s defaults.
    """

    kind: ClassVar[str] = "train"
    out: str
    dataset: Optional[str] = None
    cases: list = field(default_factory=list)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    patience: Optional[int] = None
    split: Optional[str] = None
    seed: Optional[int] = None
    patch_size: Optional[int] = None
    augment: Optional[bool] = None
    backbone: Optional[str] = None
    encoder_weights: Optional[str] = None
    steps_per_epoch: Optional[int] = None
    max_seconds: Optional[float] = None
    init_model: Optional[str] = None  # fine-tune from this model file
    resume: bool = False  # continue an interrupted run writing ``out``
    overwrite: bool = False

    #: Options whose None means "train()'s default" (patch_size, steps_per_epoch,
    #: max_seconds and init_model are None in train() too, so None passes through the same way).
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "epochs", "batch_size", "learning_rate", "patience", "split", "seed", "patch_size",
        "augment", "backbone", "encoder_weights", "steps_per_epoch", "max_seconds", "init_model",
        "resume", "overwrite")

    def train_options(self) -> dict[str, Any]:
        """Keyword arguments for ``train()``: the options that were set."""
        return {k: getattr(self, k) for k in self.OPTIONS if getattr(self, k) is not None}


@dataclass
class SelfTestRequest(Request):
    """Exercise the engine's plumbing without the network (diagnostics and tests).

    Counts ``steps`` steps of ``step_s`` seconds, honouring cancel between steps
    unless ``ignore_cancel`` (to check the client's hard cancel); ``fail=k``
    raises a ValueError at step k, ``crash=k`` ends the process there; ``events``
    sends an event per step.
    """

    kind: ClassVar[str] = "selftest"
    steps: int = 5
    step_s: float = 0.1
    fail: int = 0
    crash: int = 0
    ignore_cancel: bool = False
    events: bool = False


#: Every request type by its kind (the engine's dispatch table).
REQUESTS: dict[str, type[Request]] = {r.kind: r for r in (SegmentRequest, TrainRequest, SelfTestRequest)}

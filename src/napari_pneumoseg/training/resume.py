"""Where a training run stands after each epoch, so that ``train(..., resume=True)`` continues a killed run.

The state of a run writing ``out`` lives beside it in the hidden folder
``.<out name>.resume/``: ``state.json`` (the epochs done, their history, the
best loss and epoch, the patience counter, and a digest of the run's settings)
and ``weights.npz`` (the network's weights and the optimizer's variables at the
end of the last epoch, plain arrays: loading them runs no code). It is replaced
atomically after every epoch, so a run killed at any moment leaves the state of
its last finished epoch, and the best model itself is already in ``out``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

STATE_NAME = "state.json"
ARRAYS_NAME = "weights.npz"


def state_folder(out) -> Path:
    """The hidden folder holding the resume state of a run writing ``out``."""
    out = Path(out)
    return out.parent / f".{out.name}.resume"


def settings_digest(settings: dict) -> str:
    """SHA-256 (16 hex digits) of what a resumed run must share with the one it continues."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RunState:
    """A run after ``epochs_done`` epochs."""

    epochs_done: int
    history: list = field(default_factory=list)
    best: float = float("inf")
    best_epoch: Optional[int] = None
    wait: int = 0
    saved: bool = False
    digest: str = ""
    weights: list = field(default_factory=list)
    optimizer: list = field(default_factory=list)


def save_state(out, state: RunState) -> None:
    """Replace the resume state of ``out`` with ``state`` (atomically: the old one or the new one)."""
    from ..io.atomic import atomic_folder

    meta = {"epochs_done": state.epochs_done, "history": state.history,
            "best": None if not np.isfinite(state.best) else float(state.best),
            "best_epoch": state.best_epoch, "wait": state.wait, "saved": state.saved,
            "digest": state.digest, "n_weights": len(state.weights), "n_optimizer": len(state.optimizer)}
    with atomic_folder(state_folder(out), overwrite=True) as tmp:
        arrays = {f"w{k}": np.asarray(a) for k, a in enumerate(state.weights)}
        arrays.update({f"o{k}": np.asarray(a) for k, a in enumerate(state.optimizer)})
        np.savez(tmp / ARRAYS_NAME, **arrays)
        (tmp / STATE_NAME).write_text(json.dumps(meta, indent=1))


def load_state(out, digest: str) -> RunState:
    """The resume state of ``out``, checked to belong to a run with these settings.

    Raises
    ------
    FileNotFoundError
        There is no state to resume from.
    ValueError
        The state was written by a run with other settings (cases, split,
        network, hyperparameters), or it is damaged.
    """
    folder = state_folder(out)
    if not (folder / STATE_NAME).is_file():
        raise FileNotFoundError(f"{out}: no interrupted training to resume (no {folder.name}/); "
                                "train without resume")
    try:
        meta = json.loads((folder / STATE_NAME).read_text())
        with np.load(folder / ARRAYS_NAME, allow_pickle=False) as npz:
            weights = [npz[f"w{k}"] for k in range(int(meta["n_weights"]))]
            optimizer = [npz[f"o{k}"] for k in range(int(meta["n_optimizer"]))]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{out}: the saved training state in {folder} is damaged ({exc}); "
                         "train again without resume") from exc
    if meta.get("digest") != digest:
        raise ValueError(f"{out}: the saved training state is of a run with other cases or settings; "
                         "resume with the same ones, or train again without resume")
    best = meta.get("best")
    return RunState(epochs_done=int(meta["epochs_done"]), history=list(meta["history"]),
                    best=float("inf") if best is None else float(best), best_epoch=meta.get("best_epoch"),
                    wait=int(meta["wait"]), saved=bool(meta["saved"]), digest=digest,
                    weights=weights, optimizer=optimizer)


def clear_state(out) -> None:
    """Remove the resume state of ``out`` (a finished run needs none)."""
    shutil.rmtree(state_folder(out), ignore_errors=True)

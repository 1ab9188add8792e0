"""train(resume=True): a run killed after an epoch continues from its last saved epoch with its history."""

from __future__ import annotations

import numpy as np
import pytest
from test_train import tiny_cases  # the same tiny cases as the training tests

from napari_pneumoseg.training import train
from napari_pneumoseg.training.resume import load_state, state_folder

OPTIONS = dict(batch_size=4, patch_size=32, backbone="resnet18", learning_rate=1e-3, patience=50,
               steps_per_epoch=2, evaluate=False)


class Killed(Exception):
    """Stands for the process dying after an epoch (the engine test kills it for real)."""


def test_a_killed_run_resumes_from_its_last_epoch_with_its_history(tmp_path):
    out = tmp_path / "m.pnxmodel"

    def die_after_two(epoch, logs):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_cases(), out, epochs=4, on_epoch=die_after_two, **OPTIONS)
    assert out.is_file()  # the best model so far is kept
    saved = load_state(out, _digest_of_saved(out))
    assert saved.epochs_done == 2 and [h["epoch"] for h in saved.history] == [1, 2]
    with pytest.raises(FileExistsError):
        train(tiny_cases(), out, epochs=4, **OPTIONS)  # neither resume nor overwrite: refused
    seen = []
    result = train(tiny_cases(), out, epochs=4, resume=True, on_epoch=lambda e, logs: seen.append(e), **OPTIONS)
    assert seen == [3, 4]  # only the epochs that were left
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[:2] == saved.history  # the history carried over as it was
    assert result.model_path == out and not state_folder(out).exists()  # finished: no state left
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)


def _digest_of_saved(out):
    import json

    return json.loads((state_folder(out) / "state.json").read_text())["digest"]


def test_the_optimizer_state_carries_over(tmp_path):
    out = tmp_path / "m.pnxmodel"

    def stop(epoch, logs):
        raise Killed

    with pytest.raises(Killed):
        train(tiny_cases(), out, epochs=3, on_epoch=stop, **OPTIONS)
    state = load_state(out, _digest_of_saved(out))
    iterations = [a for a in state.optimizer if a.shape == ()]
    assert int(max(iterations)) == 2  # Adam had taken its two steps; a resumed run goes on from there
    assert any(a.ndim == 4 and np.abs(a).max() > 0 for a in state.optimizer)  # its moments, not zeros


def test_resume_refuses_other_settings_and_a_missing_state(tmp_path):
    out = tmp_path / "m.pnxmodel"
    with pytest.raises(FileNotFoundError, match="no interrupted training"):
        train(tiny_cases(), out, epochs=2, resume=True, **OPTIONS)

    def stop(epoch, logs):
        raise Killed

    with pytest.raises(Killed):
        train(tiny_cases(), out, epochs=3, on_epoch=stop, **OPTIONS)
    with pytest.raises(ValueError, match="other cases or settings"):
        train(tiny_cases(), out, epochs=3, resume=True, **{**OPTIONS, "learning_rate": 1e-2})
    with pytest.raises(ValueError, match="other cases or settings"):
        train(tiny_cases(n=5), out, epochs=3, resume=True, **OPTIONS)
    assert state_folder(out).exists()  # a refused resume leaves the state for the right one

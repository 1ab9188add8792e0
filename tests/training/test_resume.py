"""train(resume=True): a run killed after an epoch continues from its last saved epoch with its history."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_train import tiny_cases  # the same tiny cases as the training tests

from napari_pneumoseg.training import train
from napari_pneumoseg.training.resume import load_state, state_folder

OPTIONS = dict(batch_size=4, patch_size=32, backbone="resnet18", learning_rate=1e-3, patience=50,
               steps_per_epoch=2, evaluate=False)


class Killed(Exception):
    """Stands for the process dying after an epoch (the engine test kills it for real)."""


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A 4-epoch run that died after its second epoch: the model file and the state beside it."""
    out = tmp_path_factory.mktemp("killed") / "m.pnxmodel"

    def die_after_two(epoch, logs):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_cases(), out, epochs=4, on_epoch=die_after_two, **OPTIONS)
    return out


@pytest.fixture
def killed(killed_run, tmp_path):
    """A fresh copy of the killed run (model file and state) to resume or refuse."""
    out = tmp_path / killed_run.name
    shutil.copy2(killed_run, out)
    shutil.copytree(state_folder(killed_run), state_folder(out))
    return out


def _digest(out) -> str:
    return json.loads((state_folder(out) / "state.json").read_text())["digest"]


def test_the_state_after_the_last_epoch_is_kept_with_the_best_model(killed):
    assert killed.is_file()  # the best model so far
    state = load_state(killed, _digest(killed))
    assert state.epochs_done == 2 and [h["epoch"] for h in state.history] == [1, 2]
    iterations = [a for a in state.optimizer if a.shape == ()]
    assert int(max(iterations)) == 4  # Adam had taken its 2 x 2 steps: a resumed run goes on from there
    assert any(a.ndim == 4 and np.abs(a).max() > 0 for a in state.optimizer)  # its moments, not zeros


def test_a_killed_run_resumes_from_its_last_epoch_with_its_history(killed):
    saved = load_state(killed, _digest(killed))
    with pytest.raises(FileExistsError):
        train(tiny_cases(), killed, epochs=4, **OPTIONS)  # neither resume nor overwrite: refused
    seen = []
    result = train(tiny_cases(), killed, epochs=4, resume=True, on_epoch=lambda e, logs: seen.append(e), **OPTIONS)
    assert seen == [3, 4]  # only the epochs that were left
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[:2] == saved.history  # the history carried over as it was
    assert result.model_path == killed and not state_folder(killed).exists()  # finished: no state left
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)


def test_resume_refuses_other_settings_and_a_missing_state(killed, tmp_path):
    with pytest.raises(FileNotFoundError, match="no interrupted training"):
        train(tiny_cases(), tmp_path / "other.pnxmodel", epochs=2, resume=True, **OPTIONS)
    with pytest.raises(ValueError, match="other cases or settings"):
        train(tiny_cases(), killed, epochs=4, resume=True, **{**OPTIONS, "learning_rate": 1e-2})
    with pytest.raises(ValueError, match="other cases or settings"):
        train(tiny_cases(n=5), killed, epochs=4, resume=True, **OPTIONS)
    assert state_folder(killed).exists()  # a refused resume leaves the state for the right one

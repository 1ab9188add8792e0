"""Training: the loss falls, early stopping, best-bundle checkpoints, cancel keeps a model.

A small backbone (resnet18) and 64x64 slices with 32x32 patches keep this fast on a CPU;
the training code is the same for the paper's resnet50.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg.model import load_model, segment
from napari_pneumoseg.training import load_cases, train


def tiny_cases(n=4, z=6, size=64, seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for c in range(n):
        hu = np.full((z, size, size), 40, np.float32)  # soft tissue
        hu[:, 8:56, 30:58] = -850  # a lung
        mask = np.zeros((z, size, size), np.uint8)
        top = 10 + c
        mask[:, top:top + 12, 30:58] = 1  # pleural air above it
        hu[mask == 1] = -1000
        hu += rng.normal(0, 15, hu.shape).astype(np.float32)
        cases.append((hu, mask, (2.5, 1.0, 1.0)))
    return cases


def test_loss_falls_and_best_bundle_reloads_and_segments(tmp_path):
    out = tmp_path / "m.pnxmodel"
    epochs_seen = []
    result = train(tiny_cases(), out, epochs=4, batch_size=4, patch_size=32, backbone="resnet18",
                   learning_rate=1e-3, on_epoch=lambda e, logs: epochs_seen.append(logs))
    losses = [h["loss"] for h in result.history]
    assert [h["epoch"] for h in epochs_seen] == list(range(1, 5))
    assert min(losses[-2:]) < losses[0]
    assert result.model_path == out and out.is_file()
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    bundle = load_model(out)
    prov = bundle.provenance
    assert prov["split"]["mode"] == "patient" and prov["training"]["patch_size"] == 32
    assert prov["result"]["best_epoch"] == result.best_epoch
    assert set(result.table) == {"train", "validation", "test"}
    for row in result.table.values():
        assert {"loss", "auc", "binary_accuracy", "iou", "precision", "recall", "tp", "tn",
                "fp", "fn", "dice", "dice_per_slice", "jaccard"} <= set(row)
        assert row["tp"] + row["fp"] + row["tn"] + row["fn"] == row["slices"] * 64 * 64
    assert prov["metrics"]["test"]["dice"] == pytest.approx(result.table["test"]["dice"])
    hu, _, _ = tiny_cases(1, seed=5)[0]
    mask = segment(hu, bundle).mask
    assert mask.shape == hu.shape and mask.dtype == np.uint8


def test_early_stopping_stops_at_patience_when_validation_never_improves(tmp_path):
    """The epoch logic on a validation loss that only gets worse after epoch 1.

    (A real run cannot be forced never to improve: even at learning rate 0,
    BatchNorm statistics move. So the callback is driven with chosen losses.)
    """
    from napari_pneumoseg.model._backend import keras_modules
    from napari_pneumoseg.training.train import _BestKeeper

    class FakeModel:
        stop_training = False

        def get_weights(self):
            return ["w"]

    saves = []
    keeper = _BestKeeper(keras_modules().keras, type("B", (), {"provenance": {}})(),
                         tmp_path / "m.pnxmodel", 3, lambda b, p, overwrite: saves.append(overwrite),
                         None, None, None, False)
    keeper.set_model(FakeModel())
    epoch = 0
    while not keeper.model.stop_training and epoch < 100:
        keeper.on_epoch_begin(epoch)
        keeper.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0 + 0.1 * epoch})
        epoch += 1
    assert epoch == 1 + 3 and keeper.reason == "early stopping"
    assert keeper.best_epoch == 1 and saves == [False]  # saved once, at the only improvement
    # An improvement resets the patience count.
    keeper.model.stop_training, keeper.reason, keeper.wait = False, "", 2
    keeper.on_epoch_end(epoch, {"val_loss": 0.5})
    assert keeper.wait == 0 and keeper.best_epoch == epoch + 1 and saves == [False, True]


def test_cancel_keeps_the_last_best_bundle(tmp_path):
    out = tmp_path / "m.pnxmodel"
    epochs_done = []

    def cancel():
        return len(epochs_done) >= 2  # stop in the first batch of the third epoch

    result = train(tiny_cases(), out, epochs=20, batch_size=4, patch_size=32, backbone="resnet18",
                   steps_per_epoch=2, on_epoch=lambda e, logs: epochs_done.append(e), cancel=cancel)
    assert result.stopped == "cancelled"
    assert len(result.history) == 3 and result.best_epoch in (1, 2)
    assert "val_loss" not in result.history[-1]  # the interrupted epoch is not validated
    assert result.model_path == out
    assert load_model(out).provenance["result"]["best_epoch"] == result.best_epoch
    assert not result.table  # no evaluation after a cancel


def test_refuses_to_replace_an_existing_model_and_bad_patch(tmp_path):
    out = tmp_path / "m.pnxmodel"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        train(tiny_cases(), out, epochs=1)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="multiple of 32"):
        train(tiny_cases(), tmp_path / "x.pnxmodel", patch_size=50)


def test_case_mismatch_is_an_error_naming_the_case():
    hu, mask, sp = tiny_cases(1)[0]
    with pytest.raises(ValueError, match="case 2: the mask has shape"):
        load_cases([(hu, mask, sp), (hu, mask[:, :-1], sp)])


def test_cosine_schedule_goes_from_the_rate_to_zero(monkeypatch):
    import importlib
    from types import SimpleNamespace

    # The module, not the train() function that napari_pneumoseg.training exports by that name.
    train_module = importlib.import_module("napari_pneumoseg.training.train")
    cosine_schedule = train_module.cosine_schedule

    # The time budget reads the train module's clock: a fake one makes this exact.
    now = [1000.0]
    monkeypatch.setattr(train_module, "time", SimpleNamespace(monotonic=lambda: now[0]))

    by_epoch = cosine_schedule(1e-3, 4, None, now[0])
    assert [round(by_epoch(e), 7) for e in range(5)] == [1e-3, 8.536e-4, 5e-4, 1.464e-4, 0.0]
    assert by_epoch(9) == 0.0  # past the last epoch it stays at zero
    now[0] += 123.0  # without a time budget the clock does not matter
    assert [round(by_epoch(e), 7) for e in range(5)] == [1e-3, 8.536e-4, 5e-4, 1.464e-4, 0.0]

    start = now[0]
    by_time = cosine_schedule(1e-3, 1000, 100.0, start)
    rates = []
    for elapsed in (-5.0, 0.0, 25.0, 50.0, 75.0, 100.0, 250.0):  # before the start .. past the budget
        now[0] = start + elapsed
        rates.append(round(by_time(0), 7))
    assert rates == [1e-3, 1e-3, 8.536e-4, 5e-4, 1.464e-4, 0.0, 0.0]
    now[0] = start + 50.0  # half-way: the epoch number is ignored when there is a time budget
    assert by_time(0) == by_time(999) == pytest.approx(5e-4, rel=1e-12)


def _file_state(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_fine_tune_starts_from_the_parent_and_records_it(tmp_path):
    from napari_pneumoseg.model import ModelBundle, save_model

    parent_path = tmp_path / "parent.pnxmodel"
    window = {"method": "window", "hu_min": -1200.0, "hu_max": 200.0}
    parent = ModelBundle.build("resnet18", preprocessing=window, threshold=0.4,
                               provenance={"data": {"cases": ["a", "b"]}, "metrics": {"test": {"dice": 0.5}}})
    save_model(parent, parent_path)
    before = _file_state(parent_path)
    # Zero epochs of learning: the weights stay the parent's (lr 0 would still move BatchNorm statistics).
    out = tmp_path / "child.pnxmodel"
    result = train(tiny_cases(), out, epochs=1, batch_size=4, patch_size=32, steps_per_epoch=1,
                   learning_rate=1e-3, init_model=parent_path, backbone="resnet50", evaluate=False)
    child = load_model(out)
    assert child.architecture["backbone"] == "resnet18"  # the parent's encoder, not the argument's
    assert child.preprocessing["hu_min"] == -1200.0 and child.threshold == pytest.approx(0.4)
    rec = child.provenance["parent_model"]
    assert rec["path"] == str(parent_path.resolve()) and rec["sha256"] == before[0] and rec["cases"] == ["a", "b"]
    # It learnt from the parent's weights: the encoder's first convolution moved only a step away.
    p0 = load_model(parent_path).model.get_weights()
    c0 = child.model.get_weights()
    first = next(k for k, w in enumerate(p0) if w.ndim == 4)
    assert np.abs(c0[first] - p0[first]).max() < 0.05 < np.abs(p0[first]).max()
    assert _file_state(parent_path) == before and result.model_path == out
    assert result.replicas == 1  # one device: no mirrored copies
    with pytest.raises(ValueError, match="same file"):
        train(tiny_cases(), parent_path, init_model=parent_path, overwrite=True)


def test_a_cancelled_fine_tune_leaves_the_parent_untouched(tmp_path):
    from napari_pneumoseg.model import ModelBundle, save_model

    parent_path = tmp_path / "parent.pnxmodel"
    save_model(ModelBundle.build("resnet18"), parent_path)
    before = _file_state(parent_path)
    result = train(tiny_cases(), tmp_path / "child.pnxmodel", epochs=5, batch_size=4, patch_size=32,
                   init_model=parent_path, cancel=lambda: True)
    assert result.stopped == "cancelled" and result.model_path is None
    assert not (tmp_path / "child.pnxmodel").exists()
    assert _file_state(parent_path) == before

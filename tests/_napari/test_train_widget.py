"""The Train widget under Xvfb: a short training in the engine, live curves, Table 2, default model."""

from __future__ import annotations

import numpy as np

from napari_pneumoseg._napari.train_widget import TrainWidget
from napari_pneumoseg.preferences import load_preferences


def _add_case(viewer, k, rng):
    hu = np.full((6, 64, 64), 40, np.float32)
    hu[:, 8:56, 30:58] = -850
    mask = np.zeros(hu.shape, np.uint8)
    mask[:, 10 + k:22 + k, 30:58] = 1
    hu[mask == 1] = -1000
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    viewer.add_image(hu, name=f"ct{k}", scale=(2.5, 1, 1))
    viewer.add_labels(mask, name=f"ct{k} truth", scale=(2.5, 1, 1))


def _widget_with_cases(viewer, seed):
    """A Train widget (small encoder for speed) with three CT + truth pairs chosen."""
    rng = np.random.default_rng(seed)
    for k in range(3):
        _add_case(viewer, k, rng)
    w = TrainWidget(viewer)
    w.backbone = "resnet18"
    w.images.value = [viewer.layers[f"ct{k}"] for k in range(3)]
    return w


def test_train_widget_trains_draws_curves_and_sets_default_model(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = _widget_with_cases(viewer, 0)
    viewer.window.add_dock_widget(w)
    w.out.value = tmp_path / "w.pnxmodel"
    w.epochs.value, w.batch_size.value, w.patch_size.value, w.steps.value = 2, 4, 32, 2
    w.run()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.last_error is None, w.last_error
    assert w.result["model_path"] == str(tmp_path / "w.pnxmodel")
    assert [h["epoch"] for h in w.history] == [1, 2]
    assert (tmp_path / "w.curves.png").is_file()
    assert len(w.figure.axes) == 2 and w.figure.axes[0].lines  # curves drawn in the dock
    assert w.table.rowCount() == 3  # train / validation / test
    assert load_preferences()["last_trained_model"] == str(tmp_path / "w.pnxmodel")
    # The Segment widget now offers it by default.
    from napari_pneumoseg._napari.segment_widget import SegmentWidget

    assert str(SegmentWidget(viewer).model.value) == str(tmp_path / "w.pnxmodel")


def test_missing_truth_is_a_clear_message(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="lonely")
    w = TrainWidget(viewer)
    w.images.value = [viewer.layers["lonely"]]
    w.out.value = tmp_path / "x.pnxmodel"
    w.run()
    assert "no ground-truth mask for 'lonely'" in w.last_error


def test_stop_keeps_the_best_model(make_napari_viewer, qtbot, tmp_path):
    w = _widget_with_cases(make_napari_viewer(), 1)
    w.out.value = tmp_path / "s.pnxmodel"
    w.epochs.value, w.batch_size.value, w.patch_size.value, w.steps.value = 50, 4, 32, 2
    w.run()
    qtbot.waitUntil(lambda: len(w.history) >= 2, timeout=300_000)
    w.stop()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.result["stopped"] == "cancelled"
    assert w.result["model_path"] == str(tmp_path / "s.pnxmodel")
    assert len(w.history) < 50
    # Read the bundle's config directly: load_model would import TensorFlow into this
    # (OpenGL-drawing) process.
    import json
    import zipfile

    from napari_pneumoseg.model.bundle import CONFIG_NAME

    with zipfile.ZipFile(tmp_path / "s.pnxmodel") as zf:
        assert json.loads(zf.read(CONFIG_NAME))["provenance"]["result"]["best_epoch"] >= 1

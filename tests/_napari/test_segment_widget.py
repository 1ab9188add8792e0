"""The Segment widget under Xvfb: the engine segments while napari draws; cancel; errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_pneumoseg._napari.segment_widget import NO_MODEL, SegmentWidget


@pytest.fixture
def ct_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    hu = np.full((12, 96, 96), -1000, np.float32)
    hu[:, 16:80, 16:80] = 40 + rng.normal(0, 10, (12, 64, 64))
    viewer.add_image(hu, name="ct", scale=(2.5, 0.7, 0.7), translate=(10, 0, 0),
                     contrast_limits=(-1000, 400))
    return viewer


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def test_segment_adds_labels_while_viewer_draws(ct_viewer, qtbot, tiny_model_path):
    viewer = ct_viewer
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model.value = tiny_model_path
    w.batch_size.value = 2
    w.probabilities.value = True
    w.run()
    shots = []
    while w.busy:  # napari keeps drawing while the engine works
        shots.append(viewer.screenshot(canvas_only=True))
        qtbot.wait(200)
    _wait(qtbot, w)
    assert w.last_error is None, w.last_error
    name = "ct pneumothorax (tiny)"
    labels = viewer.layers[name]
    assert labels.data.shape == (12, 96, 96) and labels.data.dtype == np.uint8
    np.testing.assert_allclose(labels.scale, (2.5, 0.7, 0.7))
    np.testing.assert_allclose(labels.translate, (10, 0, 0))
    assert labels.metadata["pneumoseg_result"]["model_config"]["architecture"]["backbone"] == "resnet18"
    assert f"{name} probability" in viewer.layers
    assert shots and shots[0].std() > 0  # the CT was really drawn
    assert "ran " in w.status.value and "% of the pixels" in w.status.value
    assert "tensorflow" not in sys.modules  # the network ran in the engine process
    # Running again asks before replacing; saying no gives a new name.
    w.confirm_replace = lambda n: False
    w.run()
    _wait(qtbot, w)
    assert f"{name} [2]" in viewer.layers


def test_cancel_stops_quickly_and_adds_no_layer(ct_viewer, qtbot, tiny_model_path):
    viewer = ct_viewer
    viewer.layers["ct"].data = np.repeat(viewer.layers["ct"].data, 40, axis=0)  # 480 slices
    w = SegmentWidget(viewer)
    w.model.value = tiny_model_path
    w.batch_size.value = 1
    n_layers = len(viewer.layers)
    w.run()
    qtbot.waitUntil(lambda: w.last_progress is not None and w.last_progress[0] > 0,
                    timeout=120_000)  # running slices now
    at_cancel = w.last_progress[0]
    w.cancel()
    _wait(qtbot, w, timeout=60_000)  # a hang guard, not a speed test
    # The engine stopped within a few batches of the cancel (batches of one slice), far from the end.
    done, total = w.last_progress
    assert total == 480 and done < 480 and done - at_cancel <= 60, (at_cancel, done)
    assert len(viewer.layers) == n_layers
    assert "cancelled" in w.status.value


def test_no_model_says_how_to_get_one(ct_viewer):
    w = SegmentWidget(ct_viewer)
    w.model.value = ""
    w.run()
    assert w.last_error == NO_MODEL and "Train" in NO_MODEL


def test_a_broken_model_file_is_a_clear_message(ct_viewer, qtbot, tmp_path):
    bad = tmp_path / "bad.pnxmodel"
    bad.write_bytes(b"not a zip")
    w = SegmentWidget(ct_viewer)
    w.model.value = bad
    w.run()
    _wait(qtbot, w)
    assert w.last_error and "bad.pnxmodel" in w.last_error
    assert "Traceback" not in w.last_error

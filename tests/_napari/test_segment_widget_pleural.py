"""The Segment widget's "Pleural air (no model)" method under Xvfb: no engine, progress, cancel.

The engine is replaced by a recorder in every test here: the pleural-air method
must never reach it (and no engine process is started for these tests at all).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import napari_pneumoseg._napari.segment_widget as segment_widget
from napari_pneumoseg import find_pleural_air, make_phantom
from napari_pneumoseg._napari.measure_widget import MeasureWidget
from napari_pneumoseg._napari.segment_widget import NETWORK, PLEURAL_AIR, SegmentWidget
from napari_pneumoseg.ct.volume import GEOMETRY_KEY, geometry_metadata
from napari_pneumoseg.progress import is_cancelled


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=0, side="left", n_slices=24, shape_yx=(128, 128))


@pytest.fixture(scope="module")
def expected(phantom):
    """What the core finds on the phantom, called directly (it is deterministic)."""
    return find_pleural_air(phantom.ct)


@pytest.fixture
def engine_calls(monkeypatch):
    """Every use of the engine by the widget, recorded; a job sent to it fails the test."""
    calls = []

    class NoEngine:
        def run(self, request, **kwargs):
            raise AssertionError(f"the engine was asked to run {type(request).__name__}")

        def cancel(self):
            calls.append("cancel")

    def shared_engine(device="auto"):
        calls.append(("shared_engine", device))
        return NoEngine()

    monkeypatch.setattr(segment_widget, "shared_engine", shared_engine)
    # A real Engine must not even be started behind the recorder's back.
    from napari_pneumoseg.engine.client import Engine

    monkeypatch.setattr(Engine, "start", lambda self: calls.append("Engine.start") or self)
    return calls


@pytest.fixture
def viewer(make_napari_viewer, phantom):
    viewer = make_napari_viewer()
    ct = phantom.ct
    viewer.add_image(ct.hu, name="chest", scale=ct.spacing, translate=ct.translate,
                     metadata=geometry_metadata(ct), contrast_limits=(-1000, 400))
    return viewer


def _pleural_widget(viewer, engine_calls) -> SegmentWidget:
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.method.value = PLEURAL_AIR
    w.model.value = ""  # no model is needed
    engine_calls.clear()  # the widget warms the engine up for the default method, the network
    return w


def _wait(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)  # a hang guard, not a speed test


def test_pleural_air_adds_a_labels_layer_on_the_ct_grid_without_the_engine(
        viewer, qtbot, engine_calls, phantom, expected):
    import napari.layers

    w = _pleural_widget(viewer, engine_calls)
    assert w.image.enabled and w.method.enabled and w.run_button.enabled
    assert not any(widget.enabled for widget in (w.model, w.batch_size, w.threshold, w.device,
                                                 w.crop_chest, w.skip_slices, w.probabilities))
    n_layers = len(viewer.layers)
    w.run()
    _wait(qtbot, w)
    assert w.last_error is None, w.last_error
    assert engine_calls == []
    assert "tensorflow" not in sys.modules
    assert len(viewer.layers) == n_layers + 1
    layer = viewer.layers["chest pleural air"]
    assert isinstance(layer, napari.layers.Labels)
    assert layer.data.shape == phantom.ct.shape and layer.data.dtype == np.uint8
    np.testing.assert_array_equal(layer.data, expected.mask)  # the core's answer, unchanged
    np.testing.assert_allclose(layer.scale, phantom.ct.spacing)
    np.testing.assert_allclose(layer.translate, phantom.ct.translate)
    # The CT's geometry travels with the layer (saving a mask needs it), as for the network.
    assert layer.metadata[GEOMETRY_KEY] == viewer.layers["chest"].metadata[GEOMETRY_KEY]
    result = layer.metadata["pneumoseg_result"]
    assert result["method"] == "pleural-air" and result["source_layer"] == "chest"
    assert result["volume_ml"] == expected.volume_ml
    # Progress arrived from the core while it ran: the first of its steps at least.
    assert w.last_progress is not None
    done, total = w.last_progress
    assert 1 <= done <= total
    # The summary (volumes per side) and every warning are in the status line.
    assert expected.summary() in w.status.value
    assert w.last_warnings == expected.warnings
    for warning in expected.warnings:
        assert f"warning: {warning}" in w.status.value
    assert w.run_button.enabled and not w.cancel_button.enabled

    # Measure takes it like any pneumothorax layer.
    m = MeasureWidget(viewer)
    m.prediction.value, m.ct.value = layer, viewer.layers["chest"]
    assert m.compute().volume_ml == pytest.approx(expected.volume_ml["total"], rel=1e-6)

    # Running again asks before replacing; saying no gives a new name.
    w.confirm_replace = lambda name: False
    w.run()
    _wait(qtbot, w)
    assert "chest pleural air [2]" in viewer.layers
    assert engine_calls == []

    # Back to the network: its options come back and its engine is warmed up.
    w.method.value = NETWORK
    assert all(widget.enabled for widget in (w.model, w.batch_size, w.threshold, w.device))
    assert engine_calls == [("shared_engine", "auto")]


def test_cancel_adds_no_layer_and_never_touches_the_engine(viewer, qtbot, engine_calls,
                                                           monkeypatch, expected):
    """The core is held after its first step until the widget cancels: no race with the end."""
    real = segment_widget.find_pleural_air
    held = {"times": 0}

    def held_after_first_step(ct, *, progress=None, cancel=None):
        def report(done, total, text):
            progress(done, total, text)
            if held["times"] == 0:
                held["times"] += 1
                deadline = time.monotonic() + 60  # a hang guard: the test cancels long before
                while not is_cancelled(cancel) and time.monotonic() < deadline:
                    time.sleep(0.01)

        return real(ct, progress=report, cancel=cancel)

    monkeypatch.setattr(segment_widget, "find_pleural_air", held_after_first_step)
    w = _pleural_widget(viewer, engine_calls)
    n_layers = len(viewer.layers)
    w.run()
    # The first step's progress is shown while the core waits.
    qtbot.waitUntil(lambda: w.last_progress is not None, timeout=60_000)
    assert w.busy and w.last_progress[0] == 1 and "step 1/" in w.status.value
    w.cancel()
    _wait(qtbot, w)
    assert held["times"] == 1
    assert len(viewer.layers) == n_layers
    assert w.last_error is None and "cancelled" in w.status.value
    assert engine_calls == []

    # The next run is not cancelled by the last one's cancel.
    monkeypatch.setattr(segment_widget, "find_pleural_air", real)
    w.run()
    _wait(qtbot, w)
    assert w.last_error is None, w.last_error
    np.testing.assert_array_equal(viewer.layers["chest pleural air"].data, expected.mask)


def test_a_ct_without_lungs_gives_an_empty_layer_and_says_why(make_napari_viewer, qtbot,
                                                               engine_calls):
    viewer = make_napari_viewer()
    hu = np.full((6, 64, 64), -1000, np.float32)
    hu[:, 8:56, 8:56] = 40  # a water box: no lungs
    viewer.add_image(hu, name="water", scale=(2.5, 0.8, 0.8))
    w = _pleural_widget(viewer, engine_calls)
    w.run()
    _wait(qtbot, w)
    assert w.last_error is None, w.last_error
    assert not viewer.layers["water pleural air"].data.any()
    assert any("no lungs found" in warning for warning in w.last_warnings)
    assert "no lungs found" in w.status.value
    # The layer had no CT geometry: what was assumed is said too.
    assert any("no patient orientation" in warning for warning in w.last_warnings)
    assert engine_calls == []


def test_the_core_refusing_a_ct_is_a_clear_message_and_no_layer(viewer, qtbot, engine_calls):
    image = viewer.layers["chest"]
    meta = dict(image.metadata)
    meta[GEOMETRY_KEY] = {**meta[GEOMETRY_KEY], "patient_position": "HFDL"}  # decubitus
    image.metadata = meta
    w = _pleural_widget(viewer, engine_calls)
    n_layers = len(viewer.layers)
    w.run()
    _wait(qtbot, w)
    assert w.last_error and "patient position" in w.last_error and "Traceback" not in w.last_error
    assert w.last_error in w.status.value
    assert len(viewer.layers) == n_layers
    assert engine_calls == []

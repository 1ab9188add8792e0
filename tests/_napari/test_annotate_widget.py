"""The Annotate dock under Xvfb: pre-annotate, edit, interpolate, save a case, fine-tune, Segment's default."""

from __future__ import annotations

import json

import numpy as np

from napari_pneumoseg._napari.annotate_widget import EMPTY, PLEURAL_AIR, AnnotateWidget
from napari_pneumoseg.preferences import load_preferences

TIMEOUT_MS = 300_000


def _dice(a, b):
    a, b = a != 0, b != 0
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _widget(viewer):
    viewer.open_sample("napari-pneumoseg", "phantom")
    ct, truth = viewer.layers
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = ct
    return w, ct, truth


def test_annotate_end_to_end(make_napari_viewer, qtbot, tmp_path, tiny_model_path):
    viewer = make_napari_viewer()
    w, ct, truth = _widget(viewer)
    t = np.asarray(truth.data)
    # 1. Pre-annotate with pleural air (napari's worker): an editable layer on the CT's grid.
    w.start.value = PLEURAL_AIR
    w.pre_annotate()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.last_error is None, w.last_error
    layer = viewer.layers[f"{ct.name} annotation"]
    assert layer is w.layer and np.allclose(layer.scale, ct.scale) and layer.mode == "paint"
    assert _dice(layer.data, t) > 0.8  # a good first answer on the phantom
    assert w.changes.value.startswith("Corrections: +0.0 mL (0 voxels)")
    # 2. Start over from nothing and outline every 2nd slice by hand (here: copied from the truth;
    #    the sample has 5 mm slices, so that is every 10 mm, as every 4th slice at 2.5 mm).
    w.start.value = EMPTY
    w.pre_annotate()
    ks = np.flatnonzero(t.reshape(t.shape[0], -1).any(axis=1))
    outlined = list(range(ks[0] - 1, ks[-1] + 2, 2))
    data = np.zeros_like(layer.data)
    data[outlined] = t[outlined]
    w.layer.data = data
    assert "added" in w.changes.value and f"on {sum(t[k].any() for k in outlined)} slice" in w.changes.value
    # 3. Interpolate between the edited slices (in a worker).
    w.interpolate()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.last_error is None, w.last_error
    assert _dice(w.layer.data, t) > 0.9 > _dice(data, t)
    # 4. Save the case; a second save of that patient is refused and leaves the first alone.
    w.dataset.value = tmp_path / "dataset"
    w.patient.value = "phantom-1"
    w.save_case()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.last_error is None, w.last_error
    record = json.loads((tmp_path / "dataset" / "phantom-1" / "case.json").read_text())
    assert record["provenance"]["pre_annotation"].startswith("none") and record["provenance"]["voxels_added"] > 0
    w.save_case()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert "exists" in w.last_error
    # 5. Fine-tune a few steps from a model in the engine; the new model becomes Segment's default.
    w.init_model.value = tiny_model_path
    w.out.value = tmp_path / "tuned.pnxmodel"
    w.epochs.value, w.patch_size.value, w.steps.value = 1, 32, 1
    w.fine_tune()
    assert w.stop_button.enabled
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.last_error is None, w.last_error
    assert w.result["model_path"] == str(tmp_path / "tuned.pnxmodel")
    assert load_preferences()["last_model"] == str(tmp_path / "tuned.pnxmodel")
    from napari_pneumoseg._napari.segment_widget import SegmentWidget

    assert str(SegmentWidget(viewer).model.value) == str(tmp_path / "tuned.pnxmodel")


def test_stop_during_pre_annotation_adds_no_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w, ct, _ = _widget(viewer)
    w.start.value = PLEURAL_AIR
    w.pre_annotate()
    assert w.stop_button.enabled
    w.stop()  # before the worker's first check: it ends as cancelled
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert f"{ct.name} annotation" not in viewer.layers and w.layer is None
    assert w.status.value == "stopped" and not w.stop_button.enabled


def test_interpolate_needs_two_edited_slices_and_layers_on_the_grid(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w, ct, truth = _widget(viewer)
    w.interpolate()
    assert w.last_error == "Pre-annotate first."
    w.start.value = EMPTY
    w.pre_annotate()
    w.interpolate()
    assert "at least two slices" in w.last_error
    viewer.add_labels(np.zeros((3, 4, 4), np.uint8), name="small")
    w.start.value = viewer.layers["small"]
    w.pre_annotate()
    assert "not on the grid" in w.last_error
    w.start.value = truth  # a Labels layer on the grid: taken as the first answer
    w.pre_annotate()
    assert np.array_equal(w.layer.data != 0, np.asarray(truth.data) != 0)

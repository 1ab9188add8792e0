"""The Measure widget: layers in, the core's numbers out, with units and clear errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_pneumoseg._napari.measure_widget import MeasureWidget
from napari_pneumoseg.measure import measure


def _masks():
    truth = np.zeros((6, 20, 30), np.uint8)
    truth[1:5, 5:15, 3:10] = 1
    pred = truth.copy()
    pred[1:5, 5:15, 10:12] = 1  # 80 false positives
    return pred, truth


def _value(widget, label):
    for r in range(widget.table.rowCount()):
        if widget.table.item(r, 0).text() == label:
            return widget.table.item(r, 1).text()
    raise KeyError(label)


def test_measure_widget_matches_core_and_uses_layer_scale(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth, name="truth", scale=(2.0, 0.5, 0.5))
    w = MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.prediction.value = viewer.layers["pred"]
    w.truth.value = viewer.layers["truth"]
    result = w.run()
    core = measure(pred, spacing=(2.0, 0.5, 0.5), truth=truth)
    assert result.dice == pytest.approx(core.dice)
    assert result.volume_ml == pytest.approx((280 + 80) * 0.5 / 1000)
    assert _value(w, "Volume (mL)") == f"{core.volume_ml:.2f}"
    assert _value(w, "Dice (volumetric)") == f"{core.dice:.4f}"
    assert "Quantity\tValue" in w.table_text()
    w.save(tmp_path / "m.csv")
    row = next(csv.DictReader(open(tmp_path / "m.csv")))
    assert row["prediction"] == "pred" and float(row["dice"]) == pytest.approx(core.dice, rel=1e-5)
    with pytest.raises(FileExistsError):
        w.save(tmp_path / "m.csv")


def test_unit_scale_uses_the_paper_default_and_says_so(make_napari_viewer):
    viewer = make_napari_viewer()
    pred, _ = _masks()
    viewer.add_labels(pred, name="pred")
    w = MeasureWidget(viewer)
    w.prediction.value = viewer.layers["pred"]
    result = w.run()
    assert result.spacing_mm[0] == 2.5
    assert "assumed 2.5 mm" in w.note.value


def test_shape_mismatch_is_a_message_not_a_traceback(make_napari_viewer):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth[:, :, :-1], name="truth", scale=(2.0, 0.5, 0.5))
    w = MeasureWidget(viewer)
    w.prediction.value = viewer.layers["pred"]
    w.truth.value = viewer.layers["truth"]
    assert w.run() is None
    assert "does not match" in w.last_error and "(6, 20, 29)" in w.last_error


def test_spacing_mismatch_is_refused(make_napari_viewer):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth, name="truth", scale=(5.0, 0.5, 0.5))
    w = MeasureWidget(viewer)
    w.prediction.value = viewer.layers["pred"]
    w.truth.value = viewer.layers["truth"]
    assert w.run() is None and "voxel size" in w.last_error


def test_measure_on_the_sample_phantom_gives_dice_one_and_left_volume(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pneumoseg", "phantom")
    ct_layer, truth_layer = viewer.layers
    assert ct_layer.scale[0] == 5.0 and truth_layer.scale[0] == 5.0
    w = MeasureWidget(viewer)
    w.prediction.value = truth_layer
    w.truth.value = truth_layer
    w.ct.value = ct_layer
    result = w.run()
    assert result.dice == 1.0 and _value(w, "Dice (volumetric)") == "1.0000"
    expected = np.count_nonzero(truth_layer.data) * np.prod(truth_layer.scale) / 1000
    assert result.volume_ml == pytest.approx(expected)
    assert result.left_ml == pytest.approx(expected, rel=0.01)  # the sample is a left pneumothorax
    assert result.right_ml == pytest.approx(0, abs=0.5)
    assert 0 < result.left_pct_hemithorax < 100

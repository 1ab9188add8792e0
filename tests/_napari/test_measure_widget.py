"""The Measure widget: layers in, the core's numbers out (in a worker), with units and clear errors."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest

from napari_pneumoseg._napari.measure_widget import MEASURING, MeasureWidget
from napari_pneumoseg.measure import measure

TIMEOUT_MS = 120_000  # generous: the machine is shared; waits end as soon as the worker is done


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


def _run(qtbot, w):
    """Start a measurement, check the running state, and wait until the worker has finished."""
    w.run()
    # Nothing the worker sends is handled before the event loop runs: this state is certain.
    assert w.busy and not w.measure_button.enabled and w.note.value == MEASURING
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.measure_button.enabled
    return w.result


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error."""
    import napari.utils.notifications

    shown = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", shown.append)
    return shown


def _widget(viewer, pred=None, truth=None, ct=None):
    w = MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)
    if pred is not None:
        w.prediction.value = pred
    w.truth.value = truth
    w.ct.value = ct
    return w


def test_measure_widget_matches_core_and_uses_layer_scale(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth, name="truth", scale=(2.0, 0.5, 0.5))
    w = _widget(viewer, viewer.layers["pred"], viewer.layers["truth"])
    result = _run(qtbot, w)
    core = measure(pred, spacing=(2.0, 0.5, 0.5), truth=truth)
    assert w.last_error is None
    assert result.dice == pytest.approx(core.dice)
    assert result.volume_ml == pytest.approx((280 + 80) * 0.5 / 1000)
    assert _value(w, "Volume (mL)") == f"{core.volume_ml:.2f}"
    assert _value(w, "Dice (volumetric)") == f"{core.dice:.4f}"
    assert "Quantity\tValue" in w.table_text()
    assert w.compute().dice == pytest.approx(core.dice)  # the same, on the calling thread
    w.save(tmp_path / "m.csv")
    row = next(csv.DictReader(open(tmp_path / "m.csv")))
    assert row["prediction"] == "pred" and row["truth"] == "truth" and row["ct"] == ""
    assert float(row["dice"]) == pytest.approx(core.dice, rel=1e-5)
    with pytest.raises(FileExistsError):
        w.save(tmp_path / "m.csv")


def test_unit_scale_uses_the_paper_default_and_says_so(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    pred, _ = _masks()
    viewer.add_labels(pred, name="pred")
    w = _widget(viewer, viewer.layers["pred"])
    result = _run(qtbot, w)
    assert result.spacing_mm == (2.5, 1.0, 1.0)
    assert "assumed 2.5 mm" in w.note.value


def test_the_truths_scale_fills_an_unknown_prediction_scale(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred")  # napari's default scale: not known
    viewer.add_labels(truth, name="truth", scale=(5.0, 0.5, 0.5))
    w = _widget(viewer, viewer.layers["pred"], viewer.layers["truth"])
    assert _run(qtbot, w).spacing_mm == (5.0, 0.5, 0.5)
    assert "not known" not in w.note.value


def test_shape_mismatch_is_a_message_not_a_traceback(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth[:, :, :-1], name="truth", scale=(2.0, 0.5, 0.5))
    w = _widget(viewer, viewer.layers["pred"], viewer.layers["truth"])
    assert _run(qtbot, w) is None
    assert "does not match" in w.last_error and "(6, 20, 29)" in w.last_error
    assert errors == [f"Cannot measure: {w.last_error}"]
    assert w.note.value == errors[0] and w.table.rowCount() == 0


@pytest.mark.parametrize(
    "truth_scale, ct_scale, message",
    [
        ((5.0, 0.5, 0.5), None,
         "the truth's voxel size (5, 0.5, 0.5) mm does not match the mask's voxel size (2, 0.5, 0.5) mm"),
        (None, (5.0, 0.5, 0.5),
         "the mask's voxel size (2, 0.5, 0.5) mm does not match the CT's spacing (5, 0.5, 0.5) mm"),
        ((5.0, 0.5, 0.5), (2.0, 0.5, 0.5),
         "the truth's voxel size (5, 0.5, 0.5) mm does not match the CT's spacing (2, 0.5, 0.5) mm"),
    ],
)
def test_spacing_mismatch_is_refused_by_the_core(make_napari_viewer, qtbot, errors, truth_scale, ct_scale,
                                                 message):
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    t = viewer.add_labels(truth, name="truth", scale=truth_scale) if truth_scale else None
    ct = viewer.add_image(np.zeros(pred.shape, np.float32), name="ct", scale=ct_scale) if ct_scale else None
    w = _widget(viewer, viewer.layers["pred"], t, ct)
    assert _run(qtbot, w) is None
    assert w.last_error == message
    assert errors == [f"Cannot measure: {message}"]


def test_no_prediction_layer_is_a_message(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    w = _widget(viewer)
    assert _run(qtbot, w) is None
    assert "no pneumothorax Labels layer" in w.last_error and len(errors) == 1
    with pytest.raises(ValueError, match="measure first"):
        w.save("never-written.csv")


def test_final_state_is_set_once_by_the_run_that_returned(make_napari_viewer, qtbot, errors):
    """Handlers run on the GUI thread; a second click while busy is ignored; a failed run clears the
    previous result; a late message from an earlier run changes nothing."""
    viewer = make_napari_viewer()
    pred, truth = _masks()
    viewer.add_labels(pred, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth[:, :, :-1], name="bad truth", scale=(2.0, 0.5, 0.5))
    w = _widget(viewer, viewer.layers["pred"])
    threads = []
    fill = w._fill
    w._fill = lambda result: (threads.append(threading.current_thread()), fill(result))

    w.run()
    first = w.worker
    w.run()  # busy: ignored
    assert w.worker is first
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert threads == [threading.main_thread()]
    good = w.result
    assert good is not None and w.table.rowCount() > 0
    stale_job = w.job

    w.truth.value = viewer.layers["bad truth"]
    assert _run(qtbot, w) is None
    assert w.worker is not first and w.table.rowCount() == 0 and "does not match" in w.last_error
    note, error = w.note.value, w.last_error

    stale_job._result((good, None))  # what a late message of the earlier run would deliver
    stale_job._progress(("progress", 1, 1, "late"))
    assert w.result is None and w.table.rowCount() == 0
    assert (w.note.value, w.last_error) == (note, error)
    assert len(errors) == 1


def test_measure_on_the_sample_phantom_gives_dice_one_and_left_volume(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pneumoseg", "phantom")
    ct_layer, truth_layer = viewer.layers
    assert ct_layer.scale[0] == 5.0 and truth_layer.scale[0] == 5.0
    w = _widget(viewer, truth_layer, truth_layer, ct_layer)
    result = _run(qtbot, w)
    assert result.dice == 1.0 and _value(w, "Dice (volumetric)") == "1.0000"
    expected = np.count_nonzero(truth_layer.data) * np.prod(truth_layer.scale) / 1000
    assert result.volume_ml == pytest.approx(expected)
    assert result.left_ml == pytest.approx(expected, rel=0.01)  # the sample is a left pneumothorax
    assert result.right_ml == pytest.approx(0, abs=0.5)
    assert 0 < result.left_pct_hemithorax < 100
    assert "orientation" not in w.note.value and "scale" not in w.note.value  # the geometry was all there


def test_measure_draws_the_lines_on_the_mask_plots_the_area_and_goes_to_a_rows_slice(make_napari_viewer, qtbot,
                                                                                      tmp_path, errors):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pneumoseg", "phantom")
    ct_layer, truth_layer = viewer.layers
    w = _widget(viewer, truth_layer, None, ct_layer)
    result = _run(qtbot, w)
    lines = result.sizing.lines
    assert {ln.kind for ln in lines} >= {"rim_depth", "hilum_distance"}
    shapes = viewer.layers[f"{truth_layer.name} sizes"]
    assert set(shapes.shape_type) == {"line"} and len(shapes.data) == len(lines)
    assert np.allclose(shapes.scale, truth_layer.scale) and np.allclose(shapes.translate, truth_layer.translate)
    assert list(shapes.features["label"]) == [ln.label for ln in lines]
    mask = np.asarray(truth_layer.data)
    for ends in shapes.data:  # every line lies on the pneumothorax
        for t in np.linspace(0.05, 0.95, 10):
            k, j, i = (int(np.floor(v + 0.5)) for v in ends[0] + t * (ends[1] - ends[0]))
            assert mask[k, j, i]
    # The plot shows the area per slice of each side.
    area = w.plot.lines["left"] * 100 * truth_layer.scale[0] / 1000
    assert area.sum() == pytest.approx(result.left_ml, rel=1e-6)
    # A row with a slice moves the viewer there; its text names the slice.
    rim = result.sizing.line("rim_depth", "left")
    row = next(r for r in range(w.table.rowCount()) if w.table.item(r, 0).text() == "Left rim depth (mm)")
    assert w.table.item(row, 1).text() == f"{result.left_rim_depth_mm:.1f}  (slice {rim.slice})"
    assert _value(w, "Left size, 35 mm rule") == result.left_class_35mm
    w.table.cellClicked.emit(row, 0)
    assert viewer.dims.point[0] == pytest.approx(truth_layer.data_to_world([rim.slice, 0, 0])[0])
    # Save report: written by a worker; an existing file is refused with a message and left alone.
    out = tmp_path / "report.html"
    w.report_ids.value = ["patient_id"]
    w.save_report(out)
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert out.read_text().startswith("<!DOCTYPE html>") and w.note.value == f"report saved: {out}"
    assert "Patient ID" in out.read_text() and "Patient name" not in out.read_text()
    out.write_text("mine")
    w.save_report(out)
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert out.read_text() == "mine" and "exists" in w.note.value and errors
    # Measuring again replaces the lines layer instead of adding a second one.
    _run(qtbot, w)
    assert sum(layer.name.endswith(" sizes") for layer in viewer.layers) == 1

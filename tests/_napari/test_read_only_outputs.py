"""A read-only output folder is said at once by the widgets that write files, before any work or engine."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest


@pytest.fixture
def read_only(tmp_path):
    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_train_widget_says_a_read_only_folder_before_training(make_napari_viewer, read_only, monkeypatch):
    from napari_pneumoseg._napari import train_widget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="ct")
    w = train_widget.TrainWidget(viewer)  # (opening it warms the engine up in the background)
    monkeypatch.setattr(train_widget, "shared_engine", lambda *a: pytest.fail("a job was sent to the engine"))
    w.out.value = read_only / "m.pnxmodel"
    w.run()
    assert "read-only" in w.last_error and str(read_only / "m.pnxmodel") in w.last_error
    assert not w.busy


def test_annotate_fine_tune_says_a_read_only_folder_before_training(make_napari_viewer, read_only, tmp_path,
                                                                   monkeypatch):
    from napari_pneumoseg._napari import annotate_widget

    viewer = make_napari_viewer()
    w = annotate_widget.AnnotateWidget(viewer)
    monkeypatch.setattr(annotate_widget, "shared_engine", lambda *a: pytest.fail("a job was sent to the engine"))
    (tmp_path / "dataset").mkdir()
    (tmp_path / "parent.pnxmodel").write_bytes(b"a model")
    w.dataset.value, w.init_model.value = tmp_path / "dataset", tmp_path / "parent.pnxmodel"
    w.out.value = read_only / "tuned.pnxmodel"
    w.fine_tune()
    assert "read-only" in w.last_error

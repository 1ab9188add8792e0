"""The npe2 reader: a DICOM folder opened in napari becomes our CT layer, in mm."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_pneumoseg import read_ct
from napari_pneumoseg._napari.reader import get_reader

PLUGIN = "napari-pneumoseg"


def test_get_reader_accepts_dicom_and_declines_others(chest_dir, tmp_path):
    assert callable(get_reader(str(chest_dir)))
    assert callable(get_reader(str(next(chest_dir.iterdir()))))
    (tmp_path / "x.txt").write_text("no")
    assert get_reader(str(tmp_path / "x.txt")) is None
    assert get_reader(str(tmp_path)) is None


def test_layer_data_has_physical_geometry(chest_dir):
    (data, kwargs, kind), = get_reader(str(chest_dir))(str(chest_dir))
    ct = read_ct(chest_dir)
    assert kind == "image"
    np.testing.assert_array_equal(data, ct.hu)
    assert kwargs["scale"] == pytest.approx(ct.spacing)
    lo, hi = kwargs["contrast_limits"]
    assert lo <= -900 and hi >= 100  # lung and soft tissue visible
    meta = kwargs["metadata"]["pneumoseg_ct"]
    assert meta["spacing"] == list(ct.spacing) and len(meta["files"]) == 64
    assert "chest_ct_tcia_A0001_5mm" in kwargs["name"]


def test_opening_a_dicom_folder_in_napari_gives_our_layer(make_napari_viewer, chest_dir):
    viewer = make_napari_viewer()
    layers = viewer.open(str(chest_dir), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == (64, 512, 512)
    np.testing.assert_allclose(layer.scale, (5.0, 0.841796875, 0.841796875))
    assert "pneumoseg_ct" in layer.metadata
    assert layer.data.min() == -1024


def test_preferred_reader_setting_routes_dicom_folders_to_us(make_napari_viewer, chest_dir):
    """With the reader preference napari offers (its "remember my choice"), napari picks us.

    ``viewer.open`` defaults to ``plugin="napari"``; ``plugin=None`` is what File > Open
    does: consult the preferences, else ask the user when several readers fit.
    """
    from napari.settings import get_settings

    viewer = make_napari_viewer()  # resets settings: set the preference after
    settings = get_settings()
    settings.plugins.extension2reader = {**settings.plugins.extension2reader, "*/": PLUGIN}
    (layer,) = viewer.open(str(chest_dir), plugin=None)
    assert layer.source.reader_plugin == PLUGIN
    assert "pneumoseg_ct" in layer.metadata
    np.testing.assert_allclose(layer.scale, (5.0, 0.841796875, 0.841796875))


def test_opening_in_napari_does_not_import_tensorflow(chest_dir):
    code = (
        "import sys, napari\n"
        "from napari.plugins import _initialize_plugins\n"
        "_initialize_plugins()\n"
        "v = napari.components.ViewerModel()\n"
        f"v.open({str(chest_dir)!r}, plugin='napari-pneumoseg')\n"
        "assert v.layers[0].data.shape == (64, 512, 512)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'segmentation_models')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_dicom_seg_file_opens_as_labels_on_its_ct(make_napari_viewer, chest_dir, tmp_path):
    import numpy as np

    from napari_pneumoseg import write_mask

    ct = read_ct(chest_dir)
    mask = np.zeros(ct.shape, np.uint8)
    mask[30:34, 100:140, 300:340] = 1
    write_mask(mask, tmp_path / "seg.dcm", ct)
    viewer = make_napari_viewer()
    viewer.open(str(chest_dir), plugin=PLUGIN)
    (layer,) = viewer.open(str(tmp_path / "seg.dcm"), plugin=PLUGIN)
    assert layer._type_string == "labels"
    np.testing.assert_array_equal(np.asarray(layer.data) > 0, mask > 0)
    np.testing.assert_allclose(layer.scale, viewer.layers[0].scale)

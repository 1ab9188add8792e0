"""CTVolume from a layer's geometry (napari_pneumoseg.ct.volume.ct_from_geometry), without napari."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from napari_pneumoseg import CTVolume
from napari_pneumoseg.ct.volume import GEOMETRY_KEY, STANDARD_AXIAL, ct_from_geometry

NO_SCALE = "CT layer 'c' has no physical scale: assumed 2.5 mm slices and 1 mm pixels"
NO_ORIENTATION = ("CT layer 'c' has no patient orientation: assumed a standard axial orientation "
                  "(columns run to the patient's left)")


def _hu(shape=(4, 6, 8)):
    return np.arange(np.prod(shape), dtype=np.int16).reshape(shape)


def _flipped_direction():
    d = STANDARD_AXIAL.copy()
    d[2] = [-1.0, 0.0, 0.0]  # columns run to the patient's right
    return d


@pytest.mark.parametrize("scale", [None, (1.0, 1.0, 1.0), (1, 1, 1, 1)])
def test_without_geometry_everything_is_assumed_and_noted(scale):
    hu = _hu()
    ct, notes = ct_from_geometry(hu, scale, None, None, name="CT layer 'c'")
    assert ct.spacing == (2.5, 1.0, 1.0)
    assert np.array_equal(ct.direction, STANDARD_AXIAL)
    assert ct.origin == (0.0, 0.0, 0.0)
    assert notes == [NO_SCALE, NO_ORIENTATION]
    assert np.shares_memory(ct.hu, hu)  # not copied
    assert ct.warnings == [] and ct.metadata == {}


def test_the_assumed_spacing_comes_from_measure(monkeypatch):
    """One home for the assumption: measure's DEFAULT_*_SPACING_MM."""
    m = importlib.import_module("napari_pneumoseg.measure")
    monkeypatch.setattr(m, "DEFAULT_SLICE_SPACING_MM", 3.0)
    monkeypatch.setattr(m, "DEFAULT_PIXEL_SPACING_MM", 0.5)
    ct, notes = ct_from_geometry(_hu())
    assert ct.spacing == (3.0, 0.5, 0.5)
    assert notes[0] == "the CT has no physical scale: assumed 3 mm slices and 0.5 mm pixels"


def test_reader_geometry_round_trips_without_notes():
    """What the reader puts on a layer gives back the same CTVolume."""
    from napari_pneumoseg._napari.reader import ct_layer_data  # imports no napari

    src = CTVolume(hu=_hu(), spacing=(2.5, 0.7, 0.8), origin=(-180.0, -200.0, 35.0),
                   direction=_flipped_direction(), warnings=["uneven slices"],
                   metadata={"series_description": "CHEST", "window": (40, 400)})
    data, kwargs, kind = ct_layer_data(src, source="chest")
    ct, notes = ct_from_geometry(data, kwargs["scale"], kwargs["translate"], kwargs["metadata"])
    assert notes == []
    assert ct.spacing == src.spacing and ct.origin == src.origin
    assert np.array_equal(ct.direction, src.direction)
    assert ct.translate == pytest.approx(kwargs["translate"])
    assert ct.warnings == ["uneven slices"]
    assert ct.metadata == {"series_description": "CHEST", "window": (40, 400)}


def test_origin_from_translate_when_the_metadata_has_none():
    direction = _flipped_direction()
    src = CTVolume(hu=_hu(), spacing=(5.0, 1.0, 1.0), origin=(120.0, -90.0, 40.0), direction=direction)
    meta = {GEOMETRY_KEY: {"direction": direction.tolist()}}
    ct, notes = ct_from_geometry(src.hu, (5.0, 1.0, 1.0), src.translate, meta)
    assert notes == []
    assert ct.origin == pytest.approx(src.origin)
    assert np.allclose(ct.index_to_lps([[1, 2, 3]]), src.index_to_lps([[1, 2, 3]]))
    # Recorded origin wins over the translate (a layer dragged in the viewer stays in the patient).
    meta[GEOMETRY_KEY]["origin"] = [1.0, 2.0, 3.0]
    ct, _ = ct_from_geometry(src.hu, (5.0, 1.0, 1.0), (99.0, 99.0, 99.0), meta)
    assert ct.origin == (1.0, 2.0, 3.0)


def test_scale_spacing_and_recorded_spacing():
    hu = _hu()
    meta = {GEOMETRY_KEY: {"spacing": [1.0, 1.0, 1.0], "direction": STANDARD_AXIAL.tolist()}}
    # A real 1 mm isotropic CT shows napari's default scale: the recorded spacing says it is real.
    ct, notes = ct_from_geometry(hu, (1.0, 1.0, 1.0), None, meta)
    assert ct.spacing == (1.0, 1.0, 1.0) and notes == []
    # A 4-D scale (time, z, y, x): the last three entries.
    ct, notes = ct_from_geometry(hu, (7.0, 5.0, 0.5, 0.5), None, {})
    assert ct.spacing == (5.0, 0.5, 0.5) and notes == [NO_ORIENTATION.replace("CT layer 'c'", "the CT")]
    # A scale that disagrees with the recorded spacing: the scale (what the viewer shows), noted.
    meta[GEOMETRY_KEY]["spacing"] = [2.5, 0.7, 0.7]
    ct, notes = ct_from_geometry(hu, (5.0, 0.7, 0.7), None, meta, name="CT layer 'c'")
    assert ct.spacing == (5.0, 0.7, 0.7)
    assert notes == ["CT layer 'c': the layer's scale (5, 0.7, 0.7) mm differs from the CT's recorded "
                     "spacing (2.5, 0.7, 0.7) mm: used the scale"]


def test_recorded_shape_that_is_not_the_data_is_noted():
    meta = {GEOMETRY_KEY: {"shape": [10, 6, 8], "direction": STANDARD_AXIAL.tolist(), "origin": [0, 0, 0]}}
    _, notes = ct_from_geometry(_hu(), (5.0, 1.0, 1.0), None, meta, name="CT layer 'c'")
    assert notes == ["CT layer 'c': its recorded geometry is for shape (10, 6, 8) but the data has shape "
                     "(4, 6, 8): its position may be off"]


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="3-D"):
        ct_from_geometry(np.zeros((6, 8)))
    with pytest.raises(ValueError, match="spacing must be three positive numbers"):
        ct_from_geometry(_hu(), (5.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        ct_from_geometry(_hu(), None, None, {GEOMETRY_KEY: {"direction": [1.0, 0.0]}})


def test_the_geometry_feeds_measure_per_side():
    """A flipped-columns CT given only as layer geometry: sides follow the patient."""
    from napari_pneumoseg import measure

    hu = np.full((4, 40, 60), -1000.0, np.float32)
    hu[:, 4:36, 4:56] = 40
    hu[:, 8:32, 8:26] = hu[:, 8:32, 34:52] = -850
    mask = np.zeros(hu.shape, np.uint8)
    mask[:, 10:20, 10:20] = 1  # low columns: the patient's left once the columns run right
    meta = {GEOMETRY_KEY: {"direction": _flipped_direction().tolist(), "origin": [59.0 * 2, 0.0, 0.0]}}
    ct, notes = ct_from_geometry(hu, (5.0, 2.0, 2.0), None, meta)
    r = measure(mask, ct=ct)
    assert notes == [] and r.left_ml == pytest.approx(r.volume_ml) and r.right_ml == 0.0

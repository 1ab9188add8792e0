"""The napari sample data: the phantom, and a real CT with a simulated pneumothorax, as layer data."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from napari_pneumoseg._napari._sample_data import sample_phantom, sample_real_ct
from napari_pneumoseg.ct import ct_from_geometry
from napari_pneumoseg.data import SAMPLE_CT_FILE, load_sample_ct

PLUGIN = "napari-pneumoseg"
SAMPLE_SPACING = (5.0, 2 * 0.841796875, 2 * 0.841796875)


def _files():
    return resources.files("napari_pneumoseg.data")


def _check_layers(layers, name, spacing):
    (hu, kw, kind), (truth, tkw, tkind) = layers
    assert kind == "image" and tkind == "labels"
    assert kw["name"] == name and tkw["name"] == f"{name} truth"
    # Scale in mm, the same grid for both layers, a non-empty truth.
    assert kw["scale"] == pytest.approx(spacing) and tkw["scale"] == kw["scale"]
    assert tkw["translate"] == kw["translate"]
    assert hu.ndim == 3 and truth.shape == hu.shape and truth.any()
    assert kw["contrast_limits"] == (-1000, 400)
    # The image's metadata gives back the CT's geometry.
    ct, notes = ct_from_geometry(hu, scale=kw["scale"], translate=kw["translate"], metadata=kw["metadata"])
    assert notes == [] and ct.translate == pytest.approx(kw["translate"])
    return hu, kw, truth, tkw


def test_sample_phantom_layers():
    hu, kw, truth, tkw = _check_layers(sample_phantom(), "Pneumothorax phantom", (5.0, 1.4, 1.4))
    assert hu.shape == (60, 256, 256)
    assert kw["metadata"]["phantom"]["side"] == "left"


def test_sample_real_ct_layers():
    hu, kw, truth, tkw = _check_layers(sample_real_ct(), "Real chest CT with simulated pneumothorax",
                                       SAMPLE_SPACING)
    source = load_sample_ct()
    assert hu.shape == source.shape and kw["translate"] == pytest.approx(source.translate)
    facts = kw["metadata"]["simulation"]
    assert tkw["metadata"]["simulation"] == facts
    assert (facts["parameters"]["side"], facts["parameters"]["size"]) == ("right", "moderate")
    vol = facts["volume_ml"]
    assert vol["left"] == 0 and vol["total"] == pytest.approx(vol["right"])
    assert vol["total"] == pytest.approx(truth.sum() * np.prod(SAMPLE_SPACING) / 1000, rel=1e-6, abs=0.05)
    # The other side (the patient's left, high x) keeps the packaged CT's HU exactly.
    left = slice(2 * hu.shape[2] // 3, None)
    np.testing.assert_array_equal(hu[..., left], source.hu[..., left])
    assert np.median(hu[truth > 0]) < -900  # the air is in the image where the truth says
    # The pneumothorax is on the patient's right: LPS x below the body's middle (x runs to the left).
    zz, yy, xx = np.nonzero(truth)
    lps_x = source.index_to_lps(np.stack([zz, yy, xx], axis=1))[:, 0]
    body_x = source.index_to_lps([0, 0, hu.shape[2] / 2])[0]
    assert np.median(lps_x) < body_x


def test_sample_ct_is_the_real_chest_on_its_patient_grid(chest_dir):
    """Same place in the patient as the source series: a 2x2 block mean of its pixels."""
    from napari_pneumoseg.ct import read_ct

    ct, src = load_sample_ct(), read_ct(chest_dir)
    assert ct.shape[0] == src.shape[0] == 64 and ct.spacing == pytest.approx(SAMPLE_SPACING)
    np.testing.assert_allclose(ct.direction, src.direction)
    with np.load(_files().joinpath(SAMPLE_CT_FILE), allow_pickle=False) as npz:
        y0, _, x0, _ = npz["crop_yx"].tolist()
    # Voxel (k, j, i) is the mean of source pixels 2j..2j+1, 2i..2i+1 of the crop: same LPS centre.
    np.testing.assert_allclose(ct.index_to_lps([3, 10, 20]), src.index_to_lps([3, y0 + 20.5, x0 + 40.5]),
                               atol=1e-6)
    block = src.hu[30, y0 + 100: y0 + 102, x0 + 200: x0 + 202].mean()
    assert ct.hu[30, 50, 100] == pytest.approx(np.rint(block))
    assert -1100 < ct.hu.min() and ct.hu.max() > 1000 and ct.hu.dtype == np.float32


def test_sample_file_is_small_and_loads_without_pickle():
    ref = _files().joinpath(SAMPLE_CT_FILE)
    with resources.as_file(ref) as path:
        assert path.stat().st_size < 3_500_000  # about 3 MB (3.2 MB)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}  # every entry loads without pickles
    assert arrays["hu"].dtype == np.int16 and arrays["hu"].shape[0] == 64
    assert arrays["direction"].shape == (3, 3) and arrays["spacing"].shape == (3,)
    assert all(a.dtype != object for a in arrays.values())


def test_licence_and_readme_ship_beside_the_sample():
    folder = _files()
    licence = folder.joinpath("LICENSE-tcia-cc-by-4.0").read_text(encoding="utf-8")
    assert "Creative Commons Attribution 4.0" in licence and "Lung-PET-CT-Dx" in licence
    readme = folder.joinpath("README.md").read_text(encoding="utf-8")
    for words in ("Lung-PET-CT-Dx", "A0001", "The Cancer Imaging Archive", "CC BY 4.0",
                  "LICENSE-tcia-cc-by-4.0", "block mean"):
        assert words in readme, words


def test_napari_opens_the_real_ct_sample_and_lists_both(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "real_ct")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    image, labels = layers
    np.testing.assert_allclose(image.scale, SAMPLE_SPACING)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert labels.data.any() and labels.data.shape == image.data.shape
    assert [s.display_name for s in _manifest_samples()] == ["Pneumothorax phantom",
                                                            "Real chest CT with simulated pneumothorax"]


def _manifest_samples():
    from npe2 import PluginManager

    return PluginManager.instance().get_manifest(PLUGIN).contributions.sample_data

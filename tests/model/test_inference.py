"""segment(): batching, padding/cropping, preprocessing statistics, progress, cancel, devices."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from napari_pneumoseg import CTVolume
from napari_pneumoseg.model import configure_device, preprocess, save_model, segment, volume_stats
from napari_pneumoseg.model.bundle import ModelBundle
from napari_pneumoseg.progress import Cancelled


@pytest.fixture(scope="module")
def ct():
    """Three 50x70 slices (not multiples of 32) of lung-like HU with structure."""
    rng = np.random.default_rng(3)
    hu = rng.normal(-800, 150, (3, 50, 70)).astype(np.float32)
    hu[:, 10:30, 20:50] = rng.normal(40, 20, (3, 20, 30))
    return CTVolume(hu, spacing=(5.0, 0.7, 0.7))


def _manual(bundle, hu, pad_to=(64, 96), batch_size=None):
    """What segment must compute: pad (centred, lowest HU), preprocess with volume stats, predict, crop.

    ``batch_size`` (default: all slices at once) should match segment's: outputs
    can differ by more than 1e-5 between batch compositions.
    """
    ny, nx = hu.shape[1:]
    py, px = pad_to[0] - ny, pad_to[1] - nx
    padded = np.pad(hu, ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)), constant_values=hu.min())
    x = preprocess(padded, bundle.preprocessing, volume_stats(hu, bundle.preprocessing))
    step = batch_size or len(x)
    y = np.concatenate([np.asarray(bundle.model.predict_on_batch(x[k : k + step]))
                        for k in range(0, len(x), step)])[..., 0]
    return y[:, py // 2 : py // 2 + ny, px // 2 : px // 2 + nx]


def test_mask_and_probabilities_have_the_ct_shape_and_padding_is_cropped_back(small_bundle, ct):
    result = segment(ct, small_bundle, batch_size=2, return_probabilities=True)
    mask, probs = result.mask, result.probabilities
    assert mask.shape == probs.shape == (3, 50, 70)
    assert mask.dtype == np.uint8 and probs.dtype == np.float32
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, (probs > 0.5).astype(np.uint8))
    np.testing.assert_allclose(probs, _manual(small_bundle, ct.hu, batch_size=2), atol=1e-5)
    assert probs.std() > 0.01  # the random network's output is not flat, so the comparison means something


def test_minmax_uses_whole_volume_statistics_whatever_the_batch_size(small_bundle, ct):
    hu = ct.hu.copy()
    hu[2] += 1500  # per-batch min-max would scale slice 2 very differently
    bundle = dataclasses.replace(small_bundle, preprocessing={"method": "minmax"})
    one = segment(hu, bundle, batch_size=1, return_probabilities=True).probabilities
    three = segment(hu, bundle, batch_size=3, return_probabilities=True).probabilities
    np.testing.assert_allclose(one, three, atol=1e-5)
    np.testing.assert_allclose(one, _manual(bundle, hu, batch_size=1), atol=1e-5)


def test_threshold_defaults_to_the_bundle_and_can_be_overridden(small_bundle, ct):
    probs = segment(ct, small_bundle, return_probabilities=True).probabilities
    t = float(np.median(probs))
    assert np.array_equal(segment(ct, small_bundle, threshold=t).mask, probs > t)
    bundle = dataclasses.replace(small_bundle, threshold=t)
    assert np.array_equal(segment(ct.hu, bundle).mask, probs > t)


def test_progress_is_reported_per_batch_with_rate_and_eta(small_bundle, ct):
    calls = []
    segment(ct, small_bundle, batch_size=2, progress=lambda *a: calls.append(a))
    assert [(done, total) for done, total, _ in calls] == [(0, 3), (2, 3), (3, 3)]
    for _, _, text in calls[1:]:
        assert "slices/s" in text and "ETA" in text


def test_cancel_between_batches_raises(small_bundle, ct):
    stop = threading.Event()
    calls = []

    def progress(done, total, text):
        calls.append(done)
        if done >= 1:
            stop.set()

    with pytest.raises(Cancelled):
        segment(ct, small_bundle, batch_size=1, progress=progress, cancel=stop)
    assert calls == [0, 1]  # stopped after the first batch
    with pytest.raises(Cancelled):
        segment(ct, small_bundle, cancel=lambda: True)


def test_model_can_be_given_as_a_file(small_bundle, ct, tmp_path):
    path = save_model(small_bundle, tmp_path / "m.pnxmodel")
    np.testing.assert_array_equal(segment(ct, str(path)).mask, segment(ct, small_bundle).mask)


def test_fixed_size_foreign_model_is_padded_to_its_input_size(keras):
    inp = keras.Input((64, 64, 1))
    net = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    bundle = ModelBundle(model=net, architecture={"type": "keras", "input_channels": 1})
    hu = np.random.default_rng(0).normal(-500, 300, (2, 50, 60)).astype(np.float32)
    probs = segment(hu, bundle, return_probabilities=True).probabilities
    np.testing.assert_allclose(probs, _manual(bundle, hu, pad_to=(64, 64)), atol=1e-6)
    with pytest.raises(ValueError, match="only takes 64x64"):
        segment(np.zeros((1, 50, 70), np.float32), bundle)


def test_bad_inputs_are_refused(small_bundle):
    with pytest.raises(ValueError, match="3-D"):
        segment(np.zeros((50, 70)), small_bundle)
    with pytest.raises(ValueError, match="batch_size"):
        segment(np.zeros((1, 32, 32)), small_bundle, batch_size=0)
    with pytest.raises(TypeError, match="ModelBundle"):
        segment(np.zeros((1, 32, 32)), object())


def test_configure_device_cpu_path(keras):
    info = configure_device("cpu")
    assert info["device"] == "cpu" and info["mixed_precision"] is False
    with pytest.warns(RuntimeWarning, match="only useful on a GPU"):
        assert configure_device("cpu", mixed_precision=True)["mixed_precision"] is False
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ValueError, match="device"):
        configure_device("tpu")


def test_configure_device_gpu_without_gpu_is_a_clear_error():
    if configure_device("auto")["gpus"]:
        pytest.skip("a GPU is visible here")
    with pytest.raises(RuntimeError, match="sees no GPU"):
        configure_device("gpu")


def test_the_compiled_graph_serves_every_size_and_does_not_keep_a_dropped_model_alive(keras):
    import gc
    import weakref

    from napari_pneumoseg.model import inference

    inp = keras.Input((None, None, 1))
    net = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    bundle = ModelBundle(model=net, architecture={"type": "keras", "input_channels": 1})
    for shape in [(2, 40, 50), (3, 64, 70)]:  # two frame sizes, one graph
        hu = np.random.default_rng(0).normal(-500, 300, shape).astype(np.float32)
        probs = segment(hu, bundle, crop_chest=False, skip_slices=False, return_probabilities=True).probabilities
        np.testing.assert_allclose(probs, _manual(bundle, hu, pad_to=(64, 64 if shape[2] <= 64 else 96)),
                                   atol=1e-6)
    assert inference._predictor(net).experimental_get_tracing_count() == 1
    alive = weakref.ref(net)
    del net, bundle
    gc.collect()
    assert alive() is None

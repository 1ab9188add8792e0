"""Preprocessing: fixed HU window (default) and the paper's per-volume min-max."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg.model.preprocess import (
    DEFAULT_PREPROCESSING,
    PAPER_PREPROCESSING,
    preprocess,
    validate_preprocessing,
    volume_stats,
)


def test_window_clips_and_scales_to_unit_range():
    hu = np.array([[[-3000, -1100, -400, 300, 2000]]], dtype=np.int16)
    out = preprocess(hu, DEFAULT_PREPROCESSING)
    assert out.dtype == np.float32 and out.shape == (1, 1, 5, 1)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_default_is_the_fixed_window_and_independent_of_the_study():
    assert validate_preprocessing(None) == {"method": "window", "hu_min": -1100.0, "hu_max": 300.0}
    a = np.full((2, 4, 4), -1000.0)
    b = a.copy()
    b[1] = 3000.0  # a bright object elsewhere in the volume changes nothing for the window
    np.testing.assert_array_equal(preprocess(a)[0], preprocess(b)[0])
    assert volume_stats(a) is None


def test_custom_window():
    out = preprocess(np.array([[-1000.0, -500.0, 0.0]]), {"method": "window", "hu_min": -1000, "hu_max": 0})
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.5, 1.0])


def test_minmax_over_whole_volume_on_hand_made_values():
    hu = np.array([[[-1000, 0], [1000, 3000]], [[500, 500], [500, 500]]], dtype=np.float32)
    out = preprocess(hu, PAPER_PREPROCESSING)
    np.testing.assert_allclose(out[..., 0], [[[0.0, 0.25], [0.5, 1.0]], [[0.375] * 2] * 2])
    assert volume_stats(hu, PAPER_PREPROCESSING) == {"min": -1000.0, "max": 3000.0}


def test_minmax_batches_with_volume_stats_equal_the_whole_volume():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, -900, (6, 8, 8)).astype(np.float32)
    hu[4:] += 2500  # the extremes are in the last slices only
    whole = preprocess(hu, PAPER_PREPROCESSING)
    stats = volume_stats(hu, PAPER_PREPROCESSING)
    batches = np.concatenate([preprocess(hu[i : i + 2], PAPER_PREPROCESSING, stats) for i in range(0, 6, 2)])
    np.testing.assert_array_equal(batches, whole)
    # Without the volume's statistics a batch would be scaled on its own: different input.
    assert not np.allclose(preprocess(hu[:2], PAPER_PREPROCESSING), whole[:2])


def test_minmax_constant_volume_is_zero_like_sklearn():
    out = preprocess(np.full((2, 3, 3), -1000.0), {"method": "minmax"})
    assert out.shape == (2, 3, 3, 1) and not out.any()


def test_single_slice_and_channel_repeat():
    out = preprocess(np.array([[-1100.0, 300.0]]), channels=3)
    assert out.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize(
    "config, message",
    [
        ({"method": "zscore"}, "unknown preprocessing method"),
        ({"method": "window", "hu_min": 300, "hu_max": -1100}, "hu_min < hu_max"),
        ({"method": "window", "hu_min": "low"}, "must be numbers"),
        ({"method": "minmax", "clip": True}, "unknown keys"),
        ("window", "must be a dict"),
    ],
)
def test_invalid_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        preprocess(np.zeros((1, 2, 2)), config)


def test_rejects_wrong_dimensions():
    with pytest.raises(ValueError, match="expected HU slices"):
        preprocess(np.zeros((1, 2, 2, 2)))

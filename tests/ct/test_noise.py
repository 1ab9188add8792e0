"""The scan's air noise model and its measurement around the patient."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg.ct.noise import FALLBACK_AIR, AirModel, measure_air


def _scene(model, rng, shape=(6, 160, 160)):
    """Air of a known model around a 'body' of soft tissue low in the field of view."""
    hu = model.sample(shape, rng)
    hu[:, 60:140, 30:130] = 40.0
    return hu


@pytest.mark.parametrize("floor", [None, -1024.0, -1000.0])
def test_the_models_moments_are_those_of_what_it_makes(floor):
    m = AirModel(mu=-1005.0, sigma=30.0, floor=floor, texture_px=0.7, voxels=1)
    v = m.sample((8, 128, 128), np.random.default_rng(0)).astype(np.float64)
    assert v.mean() == pytest.approx(m.mean, abs=1.0)
    assert v.std() == pytest.approx(m.std, rel=0.03)
    if floor is not None:
        assert v.min() == floor


@pytest.mark.parametrize("texture", [0.5, 0.9])
def test_measuring_the_air_around_the_patient_recovers_the_noise(texture):
    truth = AirModel(mu=-995.0, sigma=40.0, floor=-1024.0, texture_px=texture, voxels=1)
    hu = _scene(truth, np.random.default_rng(1))
    hu[:, 20:24, 10:150] = 300.0  # a blanket in front of the patient: kept out by the clearance
    got = measure_air(hu, (5.0, 0.8, 0.8))
    assert got.floor == -1024.0 and got.voxels > 2000
    assert got.mu == pytest.approx(-995.0, abs=3) and got.sigma == pytest.approx(40.0, rel=0.08)
    assert got.texture_px == pytest.approx(texture, abs=0.15)
    assert got.mean == pytest.approx(truth.mean, abs=3) and got.std == pytest.approx(truth.std, rel=0.08)


def test_the_table_behind_the_patient_is_not_air():
    truth = AirModel(mu=-1000.0, sigma=10.0, floor=None, texture_px=0.6, voxels=1)
    hu = _scene(truth, np.random.default_rng(2))
    hu[:, 140:160, :] = -700.0  # table foam behind (below) the patient
    assert measure_air(hu, (5.0, 0.8, 0.8)).mean == pytest.approx(-1000.0, abs=2)


def test_without_air_around_the_patient_a_nominal_model_is_used():
    hu = np.full((3, 64, 64), 40.0, np.float32)
    m = measure_air(hu, (5.0, 1.0, 1.0))
    assert m.voxels == 0 and (m.mu, m.sigma) == FALLBACK_AIR
    assert "nominal" in m.as_dict()["measured_in"]

"""find_pleural_air: pleural air from HU alone, on phantoms, real CTs as they are, and simulated real cases.

The bounds here leave room for noise; the measured figures are in benchmarks/README.md
(``benchmarks/bench_pleural_air.py``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

from napari_pneumoseg import CTVolume, find_pleural_air, read_ct
from napari_pneumoseg.phantom import make_phantom
from napari_pneumoseg.progress import Cancelled
from napari_pneumoseg.simulate import simulate_pneumothorax

REAL_CHESTS = ["chest_ct_tcia_A0001_5mm", "chest_ct_lidc_idri_1011_2p5mm", "chest_ct_4dlung_113_3mm"]


def dice(a, b) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def real_cts(real_data):
    return {name: read_ct(real_data / name) for name in REAL_CHESTS}


def test_a_ct_without_lungs_gives_an_empty_mask_and_says_why():
    pa = find_pleural_air(CTVolume(np.zeros((4, 32, 32)), (5.0, 1.0, 1.0)))
    assert pa.mask.shape == (4, 32, 32) and pa.mask.dtype == np.uint8 and not pa.mask.any()
    assert pa.volume_ml == {"left": 0.0, "right": 0.0, "total": 0.0}
    assert "no lungs found" in pa.warnings[0]


@pytest.mark.parametrize("hu", [np.zeros((32, 32)), np.zeros((1, 32, 32))], ids=["2-D", "one slice"])
def test_what_cannot_hold_lungs_is_refused(hu):
    with pytest.raises(ValueError, match="3-D|too small"):
        find_pleural_air(CTVolume(hu, (5.0, 1.0, 1.0)) if hu.ndim == 3 else type("X", (), {"hu": hu})())


def test_non_axial_slices_are_refused():
    ct = CTVolume(np.zeros((8, 16, 16)), (1.0, 1.0, 1.0), direction=np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="not axial"):
        find_pleural_air(ct)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=0, side="left")


def test_on_a_phantom_it_finds_the_pneumothorax_on_its_side(phantom):
    pa = find_pleural_air(phantom.ct)
    assert dice(pa.mask, phantom.truth) >= 0.93
    truth_ml = float((phantom.truth > 0).sum()) * phantom.ct.voxel_volume_ml
    assert abs(pa.volume_ml["total"] - truth_ml) <= 0.10 * truth_ml
    assert pa.volume_ml["left"] >= 0.95 * pa.volume_ml["total"]
    assert pa.volume_ml["total"] == pytest.approx(float(pa.mask.sum()) * phantom.ct.voxel_volume_ml)
    assert set(np.unique(pa.lungs)) <= {0, 1, 2} and (pa.lungs == 1).any() and (pa.lungs == 2).any()
    kept = [p for p in pa.pockets if p["kept"]]
    assert kept and all(p["side"] == "left" for p in kept if p["volume_ml"] > 10)


def test_progress_runs_to_the_end_and_cancel_stops_it(phantom):
    seen = []
    find_pleural_air(phantom.ct, progress=lambda done, total, text: seen.append((done, total, text)))
    assert [d for d, _, _ in seen] == list(range(1, seen[0][1] + 1)) and all(t for _, _, t in seen)
    stop = threading.Event()

    def progress(done, total, text):
        if done == 2:
            stop.set()

    with pytest.raises(Cancelled):
        find_pleural_air(phantom.ct, progress=progress, cancel=stop)


def test_a_flipped_series_gives_the_same_anatomy():
    ph = make_phantom(seed=1, side="right", n_slices=40, shape_yx=(256, 256))
    pa = find_pleural_air(ph.ct)
    assert pa.volume_ml["right"] > 10.0 and pa.volume_ml["left"] < 0.05 * pa.volume_ml["right"]
    ct = ph.ct
    # The same patient stored feet-first and mirrored left-right: the array is reversed along z and x,
    # and the direction matrix says so.
    d = np.array(ct.direction, float).copy()
    d[0] *= -1
    d[2] *= -1
    flipped = CTVolume(np.ascontiguousarray(ct.hu[::-1, :, ::-1]), ct.spacing, origin=ct.origin, direction=d,
                       metadata=dict(ct.metadata))
    pb = find_pleural_air(flipped)
    assert dice(pb.mask[::-1, :, ::-1], pa.mask) >= 0.99
    assert pb.volume_ml["right"] == pytest.approx(pa.volume_ml["right"], rel=0.01)


def test_an_air_cyst_inside_the_lung_is_not_pleural_air_and_is_named():
    ph = make_phantom(seed=2, side="none")
    hu = np.array(ph.ct.hu, dtype=np.float32)
    lungs = find_pleural_air(ph.ct).lungs
    sz, sy, sx = ph.ct.spacing
    depth = ndimage.distance_transform_edt(lungs == 2, sampling=(sz, sy, sx))
    z, y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)  # the deepest point of the left lung
    zz, yy, xx = np.ogrid[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    ball = ((zz - z) * sz) ** 2 + ((yy - y) * sy) ** 2 + ((xx - x) * sx) ** 2 <= 12.0 ** 2
    assert (lungs[ball] == 2).mean() > 0.9  # the cyst lies inside the left lung
    hu[ball] = -1000.0 + np.random.default_rng(0).normal(0, 10, int(ball.sum()))
    pa = find_pleural_air(CTVolume(hu, ph.ct.spacing, origin=ph.ct.origin, direction=ph.ct.direction,
                                   metadata=dict(ph.ct.metadata)))
    assert (pa.mask[ball] > 0).mean() < 0.05
    assert any("bulla" in w for w in pa.warnings)


@pytest.mark.parametrize("name", REAL_CHESTS)
def test_a_real_ct_without_pneumothorax_has_almost_no_pleural_air(real_cts, name):
    pa = find_pleural_air(real_cts[name])
    assert pa.volume_ml["total"] <= 8.0, pa.pockets
    assert pa.facts["airway_found"]


@pytest.mark.parametrize("name, side, size, seed, bar", [
    ("chest_ct_tcia_A0001_5mm", "left", "moderate", 0, 0.93),
    ("chest_ct_lidc_idri_1011_2p5mm", "right", "small", 1, 0.90),
    ("chest_ct_4dlung_113_3mm", "left", "large", 0, 0.93),
])
def test_a_simulated_pneumothorax_in_a_real_ct_is_found(real_cts, name, side, size, seed, bar):
    case = simulate_pneumothorax(real_cts[name], side=side, size=size, seed=seed)
    pa = find_pleural_air(case.ct)
    assert dice(pa.mask, case.truth) >= bar
    truth_ml = case.facts["volume_ml"]["total"]
    assert abs(pa.volume_ml["total"] - truth_ml) <= 0.15 * truth_ml
    other = "right" if side == "left" else "left"
    assert pa.volume_ml[other] <= max(10.0, 0.05 * pa.volume_ml["total"])  # what crosses the midline in front

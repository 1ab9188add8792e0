"""simulate_pneumothorax on the real chest CTs in ../shared: volumes, untouched voxels, sizes, sides, air, shape.

Each real CT is read once and each case simulated once per module (module-scoped
fixtures); the 5 mm TCIA CT carries most cases because it is the fastest.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_pneumoseg import CTVolume, measure, read_ct
from napari_pneumoseg.ct.air import body_mask
from napari_pneumoseg.ct.frame import patient_frame
from napari_pneumoseg.ct.lungs import find_lungs
from napari_pneumoseg.simulate import BAND_PCT, SIZES, SimulatedCase, simulate_pneumothorax

TCIA = "chest_ct_tcia_A0001_5mm"
LIDC = "chest_ct_lidc_idri_1011_2p5mm"
LUNG4D = "chest_ct_4dlung_113_3mm"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cts(real_data):
    """The three real chest CTs, read once (missing data fails in conftest's real_data)."""
    out = {}
    for name in (TCIA, LIDC, LUNG4D):
        folder = real_data / name
        if not folder.is_dir():
            pytest.fail(f"real chest CT {folder} is missing from the shared data")
        out[name] = read_ct(folder)
    return out


@pytest.fixture(scope="module")
def tcia_both(cts):
    """TCIA, both sides, every size (seed 1): three sizes x two sides in three runs."""
    return {size: simulate_pneumothorax(cts[TCIA], side="both", size=size, seed=1) for size in SIZES}


@pytest.fixture(scope="module")
def tcia_left(cts):
    """TCIA, left moderate, seed 1: the same seed as tcia_both."""
    return simulate_pneumothorax(cts[TCIA], side="left", size="moderate", seed=1)


@pytest.fixture(scope="module")
def others(cts):
    """One case on each of the other two CTs."""
    return {LIDC: simulate_pneumothorax(cts[LIDC], side="left", size="large", seed=2),
            LUNG4D: simulate_pneumothorax(cts[LUNG4D], side="both", size="moderate", seed=3)}


class _Cavities(dict):
    """The pleural cavities the simulator uses, as source-oriented masks (white-box), found on first use."""

    def __init__(self, cts):
        super().__init__()
        self.cts = cts

    def __missing__(self, name):
        ct = self.cts[name]
        frame = patient_frame(ct)
        lungs = find_lungs(frame.view(ct.hu), frame.spacing)
        out = {}
        for side in ("left", "right"):
            full = np.zeros(ct.shape, bool)
            frame.view(full)[lungs.box] = lungs.cavity[side]
            out[side] = full
        self[name] = out
        return out


@pytest.fixture(scope="module")
def cavities(cts):
    return _Cavities(cts)


def all_cases(tcia_both, tcia_left, others):
    cases = [(TCIA, f"both-{s}", c) for s, c in tcia_both.items()] + [(TCIA, "left-moderate", tcia_left)]
    return cases + [(n, "other", c) for n, c in others.items()]


def lps_x(ct, idx):
    return ct.index_to_lps(np.asarray(idx, float))[:, 0]


def feet_first(ct: CTVolume) -> CTVolume:
    """The same patient as a feet-first series: slices reversed, origin and direction to match."""
    d = ct.direction.copy()
    d[0] *= -1
    meta = dict(ct.metadata, patient_position="FFS")
    return CTVolume(hu=ct.hu[::-1].copy(), spacing=ct.spacing, origin=tuple(ct.index_to_lps([ct.shape[0] - 1, 0, 0])),
                    direction=d, metadata=meta)


# ----------------------------------------------------------------------------- volumes and facts


def test_volumes_are_voxel_counts_times_voxel_volume(tcia_both, tcia_left, others, cavities):
    for name, label, case in all_cases(tcia_both, tcia_left, others):
        f, v = case.facts, case.ct.voxel_volume_ml
        assert case.truth.dtype == np.uint8 and case.truth.shape == case.ct.shape
        assert set(np.unique(case.truth)) <= {0, 1}
        n = int(case.truth.sum())
        assert f["volume_ml"]["total"] == n * v, (name, label)
        assert f["voxels"]["left"] + f["voxels"]["right"] == n
        for side in ("left", "right"):
            assert f["volume_ml"][side] == f["voxels"][side] * v
            if name != LIDC:  # the side's voxels are the truth inside that side's cavity
                assert f["voxels"][side] == int((case.truth.astype(bool) & cavities[name][side]).sum())
            elif side == "right":
                assert f["voxels"]["right"] == 0


def test_facts_are_plain_json_with_the_promised_keys(tcia_both, cts):
    case = tcia_both["moderate"]
    assert isinstance(case, SimulatedCase)
    back = json.loads(case.as_json())
    assert back == case.facts  # plain python types only: survives a round trip unchanged
    for key in ("volume_ml", "voxels", "pct_hemithorax", "hemithorax_ml", "lung_ml_before", "lung_ml_after",
                "slices", "max_rim_depth_mm", "max_rim_depth_slice", "air_hu", "parameters", "source", "version"):
        assert key in back, key
    assert back["version"] == 1
    p = back["parameters"]
    assert (p["side"], p["size"], p["seed"]) == ("both", "moderate", 1)
    assert set(p["target_pct"]) == {"left", "right"}
    assert back["source"]["series_instance_uid"] == cts[TCIA].metadata["series_instance_uid"]
    for side in ("left", "right"):
        first, last = back["slices"][side]
        rows = np.flatnonzero(case.truth.any(axis=(1, 2)))
        assert rows[0] <= first <= last <= rows[-1]
        assert back["lung_ml_after"][side] == pytest.approx(back["hemithorax_ml"][side] - back["volume_ml"][side],
                                                            abs=1e-2)


def test_rim_depth_is_twice_the_largest_in_plane_distance(tcia_both, cavities, cts):
    case = tcia_both["large"]
    sp = case.ct.spacing
    for side in ("left", "right"):
        air = case.truth.astype(bool) & cavities[TCIA][side]
        best = max(ndimage.distance_transform_edt(air[k], sampling=sp[1:]).max()
                   for k in np.flatnonzero(air.any(axis=(1, 2))))
        assert case.facts["max_rim_depth_mm"][side] == pytest.approx(2 * best, abs=0.01)
        k = case.facts["max_rim_depth_slice"][side]
        assert ndimage.distance_transform_edt(air[k], sampling=sp[1:]).max() == pytest.approx(best)


def test_the_new_ct_keeps_the_source_geometry_and_metadata(tcia_left, cts):
    ct, new = cts[TCIA], tcia_left.ct
    assert new.shape == ct.shape and new.spacing == ct.spacing and new.origin == ct.origin
    assert np.array_equal(new.direction, ct.direction) and new.hu.dtype == ct.hu.dtype
    assert new.metadata == ct.metadata and new.metadata is not ct.metadata
    assert new.hu is not ct.hu


# ----------------------------------------------------------------------------- only the cavity changes


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("which", ["left", "both"])
def test_every_voxel_outside_the_chosen_cavity_is_the_source(which, tcia_both, tcia_left, cavities, cts):
    ct = cts[TCIA]
    case = tcia_left if which == "left" else tcia_both["moderate"]
    inside = cavities[TCIA]["left"].copy()
    if which == "both":
        inside |= cavities[TCIA]["right"]
    old, new = ct.hu, case.ct.hu
    assert np.array_equal(_bits(old[~inside]), _bits(new[~inside]))  # bit for bit
    assert not np.array_equal(old[inside], new[inside])
    assert not (case.truth.astype(bool) & ~inside).any()
    if which == "left":  # the right hemithorax is untouched, and so is everything right of the midline
        right = cavities[TCIA]["right"]
        assert np.array_equal(_bits(old[right]), _bits(new[right]))
        changed = np.argwhere(old != new)
        midline = measure(case.truth, ct=case.ct).midline_x_mm
        assert lps_x(ct, changed).min() > midline - 10.0


def test_a_side_is_the_same_alone_and_with_both(tcia_both, tcia_left, cavities):
    left = cavities[TCIA]["left"]
    both = tcia_both["moderate"]
    assert np.array_equal(tcia_left.truth[left], both.truth[left])
    assert np.array_equal(tcia_left.ct.hu[left], both.ct.hu[left])
    assert tcia_left.facts["volume_ml"]["left"] == both.facts["volume_ml"]["left"]


# ----------------------------------------------------------------------------- sizes


def _sizes(tcia_both, others):
    for size, case in tcia_both.items():
        yield TCIA, size, ("left", "right"), case
    yield LIDC, "large", ("left",), others[LIDC]
    yield LUNG4D, "moderate", ("left", "right"), others[LUNG4D]


def test_each_size_is_in_its_band_by_facts_and_by_measure(tcia_both, others):
    for name, size, sides, case in _sizes(tcia_both, others):
        lo, hi = BAND_PCT[size]
        m = measure(case.truth, ct=case.ct)
        for side in sides:
            pct = case.facts["pct_hemithorax"][side]
            params = case.facts["parameters"]
            aim = params.get("aimed_pct", {}).get(side, params["target_pct"][side])
            assert lo <= pct <= hi, (name, size, side, pct)
            assert abs(pct - aim) < 0.5, (name, size, side, pct, aim)
            measured = getattr(m, f"{side}_pct_hemithorax")
            assert lo <= measured <= hi, (name, size, side, measured)
            # measure() counts only aerated lung as lung (no vessels, no tumour, no lung made
            # denser than -300 HU by the collapse), so it reads a few points higher.
            assert -1.0 < measured - pct < 5.0, (name, size, side, measured, pct)
            assert abs(measured - case.facts["pct_hemithorax_aerated"][side]) < 2.5, (name, size, side)
            # measure() splits at a midline plane, the simulator by cavity: a right lung that
            # reaches across the midline in front of the heart puts a little air on the "left".
            assert getattr(m, f"{side}_ml") == pytest.approx(case.facts["volume_ml"][side], rel=0.06)
        for side in {"left", "right"} - set(sides):
            assert case.facts["pct_hemithorax"][side] is None and case.facts["volume_ml"][side] == 0.0


def test_sizes_grow_and_the_lung_gets_denser(tcia_both, cavities, cts):
    vols = [tcia_both[s].facts["volume_ml"]["total"] for s in SIZES]
    rims = [tcia_both[s].facts["max_rim_depth_mm"]["left"] for s in SIZES]
    assert vols == sorted(vols) and rims == sorted(rims)
    cav = cavities[TCIA]["left"]
    before = cts[TCIA].hu[cav]
    mean_lung = {}
    for s in SIZES:
        case = tcia_both[s]
        lung = cav & (case.truth == 0)
        mean_lung[s] = float(case.ct.hu[lung].mean())
    # Mass conserved: the lung's mean HU + 1000 grows as its volume shrinks.
    assert mean_lung["small"] < mean_lung["moderate"] < mean_lung["large"]
    ratio = tcia_both["large"].facts["parameters"]["volume_ratio"]["left"]
    assert (mean_lung["large"] + 1000) == pytest.approx((before.mean() + 1000) * ratio, rel=0.15)


# ----------------------------------------------------------------------------- sides follow the patient


def test_left_is_the_patients_left_for_head_first_and_feet_first_series(cts, tcia_left):
    ct = cts[TCIA]
    ff = simulate_pneumothorax(feet_first(ct), side="left", size="moderate", seed=1)
    # The same patient and seed give the same case (a second, separate run): the arrays
    # are the same once turned back ...
    assert np.array_equal(ff.truth[::-1], tcia_left.truth)
    assert np.array_equal(ff.ct.hu[::-1], tcia_left.ct.hu)
    # ... the air is at the same LPS positions, on the patient's left (LPS x above the midline).
    ref = ct.index_to_lps(np.argwhere(tcia_left.truth).astype(float))
    pos = ff.ct.index_to_lps(np.argwhere(ff.truth).astype(float))
    np.testing.assert_allclose(pos.mean(axis=0), ref.mean(axis=0), atol=1e-6)
    for case, where in ((ff, pos), (tcia_left, ref)):
        midline = measure(case.truth, ct=case.ct).midline_x_mm
        assert np.mean(where[:, 0] > midline) > 0.99
    assert ff.facts["volume_ml"] == tcia_left.facts["volume_ml"]
    assert ff.facts["slices"]["left"] == sorted(ct.shape[0] - 1 - k for k in tcia_left.facts["slices"]["left"])
    assert ff.facts["parameters"]["hilum_lps_mm"] == tcia_left.facts["parameters"]["hilum_lps_mm"]


def test_right_side_air_is_on_the_patients_right(others, cavities):
    case = others[LUNG4D]
    right = case.truth.astype(bool) & cavities[LUNG4D]["right"]
    pos = case.ct.index_to_lps(np.argwhere(right).astype(float))
    # Most of it right of the midline plane; the rest is where the right lung reaches across it anteriorly.
    assert np.mean(pos[:, 0] < measure(case.truth, ct=case.ct).midline_x_mm) > 0.9


# ----------------------------------------------------------------------------- where the air is


def _centroid_y(ct, mask):
    return ct.index_to_lps(np.argwhere(mask).astype(float))[:, 1].mean()


def test_the_air_is_anterior_and_thins_to_nothing_posteriorly(tcia_left, cavities, cts):
    ct = cts[TCIA]
    cav = cavities[TCIA]["left"]
    air = tcia_left.truth.astype(bool)
    # LPS y grows posteriorly: the air sits in front of the cavity's centre.
    assert _centroid_y(ct, air) < _centroid_y(ct, cav) - 20.0
    # Per slice, by thirds of the cavity's front-to-back extent: most air in front, next to none behind.
    front = back = 0
    for k in np.flatnonzero(air.any(axis=(1, 2))):
        rows = np.flatnonzero(cav[k].any(axis=1))
        third = (rows[-1] - rows[0] + 1) / 3.0
        per_row = air[k].sum(axis=1)
        front += per_row[: int(rows[0] + third)].sum()
        back += per_row[int(rows[-1] - third) + 1:].sum()
    assert front > 0.5 * air.sum()
    assert back < 0.03 * air.sum()
    # Apex first: air within the top tenth of the lung's height.
    ks = np.flatnonzero(cav.any(axis=(1, 2)))
    top = ks[-1] if ct.direction[0, 2] > 0 else ks[0]
    near_top = ks[np.abs(ks - top) <= max(1, 0.1 * len(ks))]
    assert air[near_top].any()


# ----------------------------------------------------------------------------- the air looks like the scan's air


def _ring_median(ct):
    """An independent look at the air around the patient: median HU 10-20 mm outside the body, in front."""
    vals = []
    for k in range(0, ct.shape[0], max(1, ct.shape[0] // 8)):
        body = body_mask(ct.hu[k][None])[0]
        if body.sum() < 5000:
            continue
        d = ndimage.distance_transform_edt(~body, sampling=ct.spacing[1:])
        rows = np.flatnonzero(body.any(axis=1))
        ring = (d > 10) & (d < 20) & (ct.hu[k] > -1100)
        ring[(rows[0] + rows[-1]) // 2:] = False
        vals.append(ct.hu[k][ring])
    return float(np.median(np.concatenate(vals)))


def test_the_air_has_the_scans_own_noise(tcia_both, others, cts):
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    for name, case in ((TCIA, tcia_both["moderate"]), (LIDC, others[LIDC]), (LUNG4D, others[LUNG4D])):
        # Away from the blurred edge in-plane (two voxels) and from partial volume across slices (one).
        inner = ndimage.binary_erosion(case.truth.astype(bool), structure=cross, iterations=1)
        inner = ndimage.binary_erosion(inner, structure=ndimage.generate_binary_structure(3, 1))
        v = case.ct.hu[inner].astype(np.float64)
        assert v.size > 1000, name
        air = case.facts["air_hu"]
        assert abs(v.mean() - air["mean"]) < 20.0, (name, v.mean(), air)
        assert abs(v.std() - air["std"]) < 0.3 * air["std"], (name, v.std(), air)
        assert abs(np.median(v) - _ring_median(cts[name])) < 15.0, name
        # No lung texture or vessels in the air: nothing denser than the air's own tail.
        assert np.percentile(v, 99.9) < air["mean"] + 6 * air["std"], name


def test_the_pleural_line_bounds_the_lung(tcia_both):
    case = tcia_both["moderate"]
    air = case.truth.astype(bool)
    ring = np.zeros((3, 3, 3), bool)
    ring[1] = True
    next_to_air = ndimage.binary_dilation(air, structure=ring) & ~air
    # The voxels just outside the air are much denser than aerated lung (line or wall).
    assert np.median(case.ct.hu[next_to_air]) > -600


# ----------------------------------------------------------------------------- errors


def test_a_ct_with_one_lung_refuses_the_other_side(cts, cavities):
    ct = cts[TCIA]
    hu = ct.hu.copy()
    hu[cavities[TCIA]["right"]] = 40.0  # the right lung filled with soft tissue
    one = CTVolume(hu=hu, spacing=ct.spacing, origin=ct.origin, direction=ct.direction, metadata=ct.metadata)
    with pytest.raises(ValueError, match="no lung found on the patient's right"):
        simulate_pneumothorax(one, side="both")

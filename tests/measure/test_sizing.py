"""Guideline measures on chests whose geometry is known exactly: a crescent of chosen depth, an apical cap."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import CTVolume, measure
from napari_pneumoseg.measure.sizing import DISAGREE, RULES, SideSize, classify
from napari_pneumoseg.measure.slices import slice_spans

SY = SX = 1.5
SZ = 2.5
NZ, NY, NX = 44, 150, 200
CY, R = 75.0, 34.0  # cavity disks: centre row, radius (px)
CX = {"right": 52.0, "left": 148.0}  # standard axial: the column index grows to the patient's left
LUNG_Z = (4, 34)  # lung slices [start, stop)
CAP_TOP = 38
DEPTH = 28  # px: a 42 mm crescent  # the left pleural cavity reaches this slice (exclusive): an apical cap of 4 slices


def _chest(depth_px: int, cap: bool = True, flip_z: bool = False, flip_x: bool = False):
    """A chest with a left crescent pneumothorax of lateral depth ``depth_px`` (and an apical cap)."""
    zz, yy, xx = np.mgrid[:NZ, :NY, :NX]
    hu = np.full((NZ, NY, NX), -1000.0, np.float32)
    body = ((yy - CY) / 70.0) ** 2 + ((xx - 100.0) / 96.0) ** 2 <= 1
    hu[body] = 40.0
    mask = np.zeros(hu.shape, np.uint8)
    in_lung = (zz >= LUNG_Z[0]) & (zz < LUNG_Z[1])
    for side, cx in CX.items():
        lat = 1.0 if side == "left" else -1.0
        cavity = (yy - CY) ** 2 + (xx - cx) ** 2 <= R ** 2
        d = depth_px if side == "left" else 0
        lung = (yy - CY) ** 2 + (xx - (cx - lat * d / 2.0)) ** 2 <= (R - d / 2.0) ** 2
        hu[in_lung & lung] = -850.0
        if side == "left":
            ptx = in_lung & cavity & ~lung
            if cap:
                ptx |= (zz >= LUNG_Z[1]) & (zz < CAP_TOP) & cavity
            hu[ptx] = -1000.0
            mask[ptx] = 1
    direction = np.eye(3)[::-1].copy()  # rows: LPS of the array axes z (S), y (P), x (L)
    origin = [-150.0, -110.0, 0.0]
    if flip_z:  # feet first in the array: the first slice is the lowest... reversed, said by the direction
        hu, mask = hu[::-1], mask[::-1]
        direction[0] = [0, 0, -1]
        origin[2] = (NZ - 1) * SZ
    if flip_x:
        hu, mask = hu[:, :, ::-1], mask[:, :, ::-1]
        direction[2] = [-1, 0, 0]
        origin[0] = -150.0 + (NX - 1) * SX
    positions = [list(np.asarray(origin) + k * SZ * direction[0]) for k in range(NZ)]
    ct = CTVolume(hu=np.ascontiguousarray(hu), spacing=(SZ, SY, SX), origin=tuple(origin), direction=direction,
                  metadata={"positions": positions, "patient_position": "HFS"})
    return ct, np.ascontiguousarray(mask)


@pytest.fixture(scope="module")
def crescent():
    ct, mask = _chest(DEPTH)
    return ct, mask, measure(mask, ct=ct)


def test_rim_depth_of_a_crescent_within_one_voxel(crescent):
    _, _, m = crescent
    assert m.left_rim_depth_mm == pytest.approx(DEPTH * SX, abs=SX)
    assert m.right_rim_depth_mm is None and m.right_ml == 0.0
    line = m.sizing.line("rim_depth", "left")
    assert LUNG_Z[0] <= line.slice < LUNG_Z[1]
    length = np.hypot((line.end[1] - line.start[1]) * SY, (line.end[2] - line.start[2]) * SX)
    assert length == pytest.approx(m.left_rim_depth_mm, rel=1e-6)
    # Perpendicular to the wall at the widest point: it runs left-right, lateral of the lung.
    assert abs(line.end[1] - line.start[1]) < 2.0
    assert min(line.start[2], line.end[2]) > CX["left"] + R - DEPTH - 1.5


def test_hilum_and_apex_distances(crescent):
    _, _, m = crescent
    assert m.left_hilum_distance_mm == pytest.approx(DEPTH * SX, abs=SX)
    assert m.left_apex_cupola_mm == pytest.approx((CAP_TOP - LUNG_Z[1]) * SZ, abs=SZ)
    apex = m.sizing.line("apex_cupola", "left")
    assert {round(apex.start[0] - 0.5), round(apex.end[0] - 0.5)} == {CAP_TOP - 1, LUNG_Z[1] - 1}
    assert m.left_pockets == 1
    assert m.sizing.sides["left"].pockets_ml[0] == pytest.approx(m.left_ml, rel=1e-6)
    assert sum(m.sizing.area_mm2["left"]) * SZ / 1000 == pytest.approx(m.left_ml, rel=1e-6)
    assert len(m.sizing.area_mm2["total"]) == NZ


def test_lines_lie_on_the_mask(crescent):
    _, mask, m = crescent
    assert {ln.kind for ln in m.sizing.lines} == {"rim_depth", "hilum_distance", "apex_cupola"}
    for ln in m.sizing.lines:
        a, b = np.asarray(ln.start), np.asarray(ln.end)
        for t in np.linspace(0.05, 0.95, 19):
            p = a + t * (b - a)
            k, j, i = (int(np.floor(v + 0.5)) for v in p)
            assert mask[k, j, i], (ln.kind, t, p)


def test_classes_follow_the_thresholds(crescent):
    _, _, m = crescent
    # 42 mm rim, 42 mm at the hilum, 10 mm apex, and the % of hemithorax as measured.
    assert m.left_class_35mm == "large" and m.left_class_bts == "large" and m.left_class_accp == "small"
    assert m.left_class_20pct == ("large" if m.left_pct_hemithorax >= 20 else "small")
    assert m.right_class_bts == "none"
    s = SideSize("left", volume_ml=10.0, pct_hemithorax=19.99, rim_depth_mm=35.0, hilum_distance_mm=19.9,
                 apex_cupola_mm=30.0)
    assert classify(s) == {"BTS 2010": "small", "ACCP 2001": "large", "35 mm rule": "large",
                           "20 % rule": "small"}
    assert [r.name for r in RULES] == list(classify(s))
    assert "Nikolic" in DISAGREE


def test_a_shallow_crescent_is_small():
    ct, mask = _chest(8, cap=False)
    m = measure(mask, ct=ct)
    assert m.left_rim_depth_mm == pytest.approx(8 * SX, abs=SX)
    assert m.left_apex_cupola_mm == 0.0
    assert m.left_class_35mm == "small" and m.left_class_bts == "small" and m.left_class_accp == "small"


def test_flipped_series_give_the_same_measures(crescent):
    _, _, ref = crescent
    ct, mask = _chest(DEPTH, flip_z=True, flip_x=True)
    m = measure(mask, ct=ct)
    for f in ("left_rim_depth_mm", "left_hilum_distance_mm", "left_apex_cupola_mm", "left_ml"):
        assert getattr(m, f) == pytest.approx(getattr(ref, f), rel=1e-6), f
    ln = m.sizing.line("rim_depth", "left")
    k, j, i = (int(np.floor(v + 0.5)) for v in (np.asarray(ln.start) + np.asarray(ln.end)) / 2)
    assert mask[k, j, i]


def test_uneven_gaps_weight_each_slice_by_its_span():
    """Drop every other slice of a stretch: the volume must not shrink (as the uniform spacing would make it)."""
    ct, mask = _chest(DEPTH, cap=False)
    keep = np.r_[0:10, 10:30:2, 30:NZ]
    pos = [ct.metadata["positions"][k] for k in keep]
    thin = CTVolume(hu=ct.hu[keep], spacing=ct.spacing, origin=ct.origin, direction=ct.direction,
                    metadata={"positions": pos})
    spans = slice_spans(thin)
    assert spans.uneven and spans.span_mm.max() == pytest.approx(2 * SZ)
    full = measure(mask, ct=ct, sizing=False)
    m = measure(mask[keep], ct=thin, sizing=False)
    assert any("uneven" in n for n in m.notes)
    assert m.volume_ml == pytest.approx(full.volume_ml, rel=0.02)
    assert m.left_ml == pytest.approx(full.left_ml, rel=0.02)
    unweighted = mask[keep].astype(bool).sum() * thin.voxel_volume_ml
    assert unweighted < 0.8 * full.volume_ml  # what counting every slice as one spacing gives


def test_no_ct_no_distances_and_thick_slice_warning():
    ct, mask = _chest(DEPTH)
    m = measure(mask, spacing=(5.0, SY, SX))
    assert m.left_rim_depth_mm is None and m.sizing is None
    assert any("2.5 mm" in n and "Cai" in n for n in m.notes)
    assert "sizing" not in m.as_row() and "left_class_bts" in m.as_row()


def test_a_real_series_with_missing_slices_keeps_its_volumes(real_data):
    """LIDC-IDRI-1011 read whole and with every other slice of a 30-slice stretch left out (gaps of 5 mm)."""
    from napari_pneumoseg import read_ct
    from napari_pneumoseg.ct.air import internal_air_mask

    full = read_ct(real_data / "chest_ct_lidc_idri_1011_2p5mm")
    files = list(full.metadata["files"])
    gappy = read_ct(files[:40] + files[40:70:2] + files[70:])
    assert any("missing" in w or "uneven" in w for w in gappy.warnings)
    a = measure(internal_air_mask(full.hu), ct=full, sizing=False)
    b = measure(internal_air_mask(gappy.hu), ct=gappy, sizing=False)
    assert any("uneven" in n for n in b.notes)
    assert b.volume_ml == pytest.approx(a.volume_ml, rel=0.02)  # air inside the body
    assert b.left_ml == pytest.approx(a.left_ml, rel=0.02) and b.right_ml == pytest.approx(a.right_ml, rel=0.02)
    assert b.voxels * gappy.voxel_volume_ml < 0.95 * a.volume_ml  # one spacing per slice loses the gap

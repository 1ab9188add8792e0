"""The collapse: a ray-wise shrink towards the hilum, its pattern, and the search for the collapse factor."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg.simulate._collapse import FADE, PCT_TOL, Collapse, Pattern, draw_pattern

NO_RIPPLE = dict(ripple=0.0, waves=np.zeros((1, 3)), phases=np.zeros(1))


def _pattern(**kw):
    base = dict(anterior=1.0, gamma=1.5, lateral=0.4, apex=0.6, base=0.2, around=0.0)
    base.update(kw)
    return Pattern(**base, **NO_RIPPLE)


def _ball(n=40, r=17):
    z, y, x = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    return (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= r * r


def test_the_pattern_is_zero_towards_the_dependent_side_and_one_to_the_front():
    u = np.array([[0.0, 0.0, 1.0, -1.0], [-1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # ant, dep, up, down
    a = _pattern().weight(u)
    assert a[0] == pytest.approx(1.0) and a[1] == 0.0
    t = FADE[1] / (FADE[1] - FADE[0])  # level with the hilum: partly faded
    fade = t * t * (3 - 2 * t)
    assert a[2] == pytest.approx(0.6 * fade, abs=1e-4) and a[3] == pytest.approx(0.2 * fade, abs=1e-4)
    assert _pattern(around=0.3).weight(u)[1] == pytest.approx(0.3)


def test_drawn_patterns_follow_the_size():
    rng = np.random.default_rng(0)
    small, large = draw_pattern(rng, "small"), draw_pattern(rng, "large")
    assert small.gamma > large.gamma and small.around == 0.0 < large.around
    assert small.base <= 0.1 <= large.base


def test_each_voxel_takes_its_content_from_further_out_on_its_own_ray():
    cav = _ball()
    h = np.array([19.5, 30.0, 10.0])
    col = Collapse(cav, h, (2.0, 1.0, 1.0), 1, _pattern())
    q = col.idx
    p = col.source(0.5)
    dq, dp = q - h[:, None], p - h[:, None]
    cos = (dq * dp).sum(0) / np.maximum(np.linalg.norm(dq, axis=0) * np.linalg.norm(dp, axis=0), 1e-9)
    moved = np.linalg.norm(dq, axis=0) > 1e-3
    assert np.allclose(cos[moved], 1.0, atol=1e-5)  # the same ray: the map never folds
    assert (np.linalg.norm(dp, axis=0) >= np.linalg.norm(dq, axis=0) - 1e-4).all()
    assert np.allclose(col.source(0.0), q)  # no collapse, no change


def test_more_collapse_more_air_and_the_search_hits_its_target():
    cav = _ball()
    col = Collapse(cav, (19.5, 30.0, 12.0), (1.0, 1.0, 1.0), 1, _pattern())
    pcts = [col.pct(c) for c in np.linspace(0, 1.5, 7)]
    assert pcts[0] == 0.0 and pcts == sorted(pcts) and pcts[-1] > 50
    for target in (5.0, 20.0, 50.0):
        c, pct = col.solve(target)
        assert abs(pct - target) <= PCT_TOL + 1e-9 and pct == pytest.approx(col.pct(c))


def test_lung_does_not_slide_through_a_wall_across_its_ray():
    cav = np.zeros((3, 40, 40), bool)
    cav[:, 2:38, 2:38] = True
    cav[:, 17:23, 5:35] = False  # a wall (the heart) across the rays running in -y from the hilum
    h = (1.0, 37.0, 20.0)
    col = Collapse(cav, h, (1.0, 1.0, 1.0), 1, _pattern(lateral=0.0, apex=0.0, base=0.0))
    f_path = col.inside(0.5)
    f_end = col.inside(0.5, path=False)
    # A voxel just behind the wall whose source lies in front of it: lung by its source point, air by its path.
    j = (col.idx[0] == 1) & (col.idx[1] == 25) & (col.idx[2] == 20)
    assert f_end[j].max() > 0.5 and f_path[j].max() < 0.5


def test_a_target_out_of_reach_lifts_the_lung_off_the_dependent_wall():
    cav = _ball()
    col = Collapse(cav, (19.5, 19.5, 19.5), (1.0, 1.0, 1.0), 1, _pattern(lateral=0.0, apex=0.0, base=0.0))
    c, pct = col.solve(80.0)
    assert col.pattern.around > 0 and pct > 70

"""The lung's retraction towards its hilum, and the pleural air it leaves.

The collapse is a map of the pleural cavity onto itself, in the canonical frame of
:mod:`._frame` (axis 0 superior, axis 1 dependent, axis 2 the patient's left). A
point ``q`` of the cavity shows what was at

    ``p = h + (q - h) / s(u)``,   ``u = (q - h) / |q - h|``,

where ``h`` is the side's hilum and ``s(u)`` in ``(0, 1]`` is a smooth function of
the direction only: each ray from the hilum is shrunk towards it by its own factor,
so the map never folds, the hilum (where vessels and bronchi enter) stays put and
the lung keeps its vessels, only closer together. Where ``p`` lies outside the old
cavity, or the way from ``q`` to ``p`` leaves it (the lung does not slide through
the heart), ``q`` is pleural air.

``s(u) = 1 - c * a(u)``: ``a`` is the seeded *pattern*, large towards the
non-dependent (anterior) side, the apex, laterally and (for large ones) below the
lung, and zero towards the dependent side, so the lung keeps its contact with the
posterior chest wall and the air is a crescent that thins to nothing there. ``c``
is the one global *collapse* factor, found by bisection so that the air is the
target share of the cavity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..progress import check_cancel

#: The smallest shrink factor of a ray (the lung never collapses to a point).
S_MIN = 0.08
#: The lateral, apical and basal terms of the pattern fade in from the dependent
#: component of the direction ``FADE[1]`` (off) to ``FADE[0]`` (full).
FADE = (-0.2, 0.15)
#: Largest collapse factor the bisection tries (rays then shrink to S_MIN where ``a >= 1 / C_MAX``).
C_MAX = 2.0
#: The way from a voxel to its source point is sampled this often (mm), at most PATH_MAX
#: times (see :meth:`Collapse.inside`): walls thinner than this may be missed.
PATH_STEP_MM, PATH_MAX = 6.0, 16
#: At most this many checks of the air share on all cavity voxels per search.
FULL_STEPS = 10
#: The bisection stops within this many percentage points of the target.
PCT_TOL = 0.15


@dataclass
class Pattern:
    """Seeded weights of the collapse pattern ``a(u)`` (see :func:`draw_pattern`).

    Attributes
    ----------
    anterior, gamma : float
        ``anterior * max(-u_dep, 0) ** gamma``: towards the non-dependent side.
    lateral, apex, base : float
        Weights of ``max(u_lat, 0)**2``, ``max(u_sup, 0)**2`` and ``max(-u_sup, 0)**2``,
        each faded out towards the dependent side.
    around : float
        Weight of every direction the others fade out of (towards the dependent
        side): a large pneumothorax lifts the lung off the posterior wall too.
    ripple : float
        Relative amplitude of the smooth random modulation.
    waves, phases : ndarray
        Wave vectors ``(k, 3)`` and phases ``(k,)`` of that modulation (on the unit sphere).
    """

    anterior: float
    gamma: float
    lateral: float
    apex: float
    base: float
    around: float
    ripple: float
    waves: np.ndarray
    phases: np.ndarray

    def weight(self, u: np.ndarray) -> np.ndarray:
        """The pattern ``a(u)`` in [0, 1] for unit directions ``u`` (``(3, n)``: superior, dependent, lateral).

        Examples
        --------
        >>> p = Pattern(1.0, 2.0, 0.5, 0.5, 0.0, 0.0, 0.0, np.zeros((1, 3)), np.zeros(1))
        >>> u = np.array([[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # anterior, dependent, lateral
        >>> p.weight(u).astype(float).round(2).tolist()
        [1.0, 0.0, 0.2]
        """
        return self.combine(*self.terms(u))

    def terms(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parts of ``a(u)`` that do not depend on ``around``: (directed terms, fade, ripple factor)."""
        u = np.asarray(u, np.float32)
        uz, uy, ul = u
        ante = np.maximum(-uy, 0.0)
        # Fades from 1 for directions anterior to the hilum to 0 for dependent ones.
        t = np.clip((FADE[1] - uy) / (FADE[1] - FADE[0]), 0.0, 1.0)
        fade = t * t * (3.0 - 2.0 * t)
        directed = self.anterior * ante ** np.float32(self.gamma) + fade * (
            self.lateral * np.maximum(ul, 0.0) ** 2 + self.apex * np.maximum(uz, 0.0) ** 2
            + self.base * np.maximum(-uz, 0.0) ** 2)
        ripple = np.ones_like(directed)
        if self.ripple:
            waves = np.asarray(self.waves, np.float32)
            n = np.cos(waves @ u + np.asarray(self.phases, np.float32)[:, None]).sum(axis=0)
            n /= np.float32(np.sqrt(0.5 * len(self.phases)))
            ripple = 1.0 + np.float32(self.ripple) * np.clip(n, -2.0, 2.0) / 2.0
        return directed.astype(np.float32), fade.astype(np.float32), ripple.astype(np.float32)

    def combine(self, directed, fade, ripple) -> np.ndarray:
        """``a(u)`` from :meth:`terms` and this pattern's ``around``."""
        a = (directed + np.float32(self.around) * (1.0 - fade)) * ripple
        return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)

    def as_dict(self) -> dict:
        """The scalar weights as plain data."""
        return {k: round(float(getattr(self, k)), 4)
                for k in ("anterior", "gamma", "lateral", "apex", "base", "around", "ripple")}


#: Range of the pattern's weights by size. Small and moderate pneumothoraces collect
#: anteriorly and at the apex; in large ones the lung retracts towards the hilum all
#: round (laterally, below the lung, and a little off the dependent wall), so it keeps
#: a rounded shape instead of a flat front.
_WEIGHTS = {
    "small": {"lateral": (0.05, 0.25), "apex": (0.25, 0.5), "base": (0.0, 0.1), "around": (0.0, 0.0)},
    "moderate": {"lateral": (0.3, 0.55), "apex": (0.35, 0.6), "base": (0.05, 0.25), "around": (0.0, 0.0)},
    "large": {"lateral": (0.5, 0.8), "apex": (0.5, 0.8), "base": (0.3, 0.55), "around": (0.1, 0.25)},
}
#: The anterior term's exponent: a small pneumothorax is concentrated in the most
#: non-dependent part, a large one spreads round the lung.
_GAMMA = {"small": (2.5, 4.0), "moderate": (1.5, 2.5), "large": (1.3, 2.0)}
#: When a target is out of reach, the all-round weight grows by this step, up to AROUND_MAX.
AROUND_STEP, AROUND_MAX = 0.04, 0.4


def draw_pattern(rng: np.random.Generator, size: str) -> Pattern:
    """Draw a collapse pattern for a pneumothorax of ``size``.

    Parameters
    ----------
    rng : numpy.random.Generator
        The side's random stream.
    size : {"small", "moderate", "large"}
        Decides how much of the air goes below the lung.

    Returns
    -------
    Pattern

    Examples
    --------
    >>> p = draw_pattern(np.random.default_rng(0), "large")
    >>> 0.3 <= p.base <= 0.55 and p.anterior == 1.0 and p.around > 0
    True
    """
    k = 6
    waves = rng.normal(size=(k, 3)) * 1.6
    w = {name: float(rng.uniform(*span)) for name, span in _WEIGHTS[size].items()}
    return Pattern(anterior=1.0, gamma=float(rng.uniform(*_GAMMA[size])), ripple=float(rng.uniform(0.2, 0.4)),
                   waves=waves, phases=rng.uniform(0, 2 * np.pi, k), **w)


class Collapse:
    """The collapse of one side's cavity (box-sized arrays, canonical frame).

    Parameters
    ----------
    cavity : ndarray of bool, shape (z, y, x)
        The side's pleural cavity, cropped to a box.
    hilum : sequence of 3 float
        The hilum's index in that box.
    spacing : sequence of 3 float
        Voxel size, mm.
    lateral : {1, -1}
        Which way along axis 2 is lateral: +1 for the left side, -1 for the right.
    pattern : Pattern
        The seeded weights.

    Examples
    --------
    >>> cav = np.zeros((20, 20, 20), bool)
    >>> cav[2:18, 2:18, 2:18] = True
    >>> pat = Pattern(1.0, 1.5, 0.4, 0.6, 0.2, 0.0, 0.0, np.zeros((1, 3)), np.zeros(1))
    >>> col = Collapse(cav, (10.0, 15.0, 4.0), (1.0, 1.0, 1.0), 1, pat)
    >>> c, pct = col.solve(20.0)
    >>> abs(pct - 20.0) < 0.5
    True
    """

    def __init__(self, cavity: np.ndarray, hilum, spacing, lateral: int, pattern: Pattern):
        self.shape = cavity.shape
        self.idx = np.stack(np.nonzero(cavity)).astype(np.float32)  # (3, n)
        self.h = np.asarray(hilum, np.float32)[:, None]
        self.spacing = np.asarray(spacing, np.float32)[:, None]
        d = (self.idx - self.h) * np.asarray(spacing, np.float32)[:, None]
        d[2] *= lateral
        r = np.sqrt((d * d).sum(axis=0))
        u = d / np.maximum(r, 1e-6)
        self.at_hilum = r < 1e-6
        self.cav = cavity.astype(np.float32)
        self.pattern = pattern
        self.forced_lung = self.forced_air = None
        self._terms = pattern.terms(u)
        self.set_around(pattern.around)

    def set_around(self, around: float) -> None:
        """Use the pattern with another ``around`` weight."""
        self.pattern = dataclasses.replace(self.pattern, around=float(around))
        self.a = self.pattern.combine(*self._terms)
        self.a[self.at_hilum] = 0.0

    @property
    def n(self) -> int:
        """Voxels in the cavity."""
        return self.idx.shape[1]

    def source(self, c: float, sub=slice(None)) -> np.ndarray:
        """Index ``p`` (``(3, n)``) each cavity voxel takes its content from, for collapse ``c``."""
        s = np.clip(1.0 - c * self.a[sub], S_MIN, 1.0)
        return self.h + (self.idx[:, sub] - self.h) / s

    def inside(self, c: float, sub=slice(None), *, path: bool = True) -> np.ndarray:
        """How far each voxel's lung stays inside the old cavity (trilinear, 0..1).

        With ``path``, the lowest value along the way from the voxel ``q`` to its
        source point ``p``, sampled every :data:`PATH_STEP_MM` (at most
        :data:`PATH_MAX` points): lung cannot slide through the heart or the
        mediastinum, so a source beyond such a gap along the ray makes ``q`` air,
        even if ``p`` itself is lung again. Without it, the value at ``p`` only.
        """
        q = self.idx[:, sub]
        p = self.source(c, sub)
        out = self._cav_at(p)
        if not path or not q.shape[1]:
            return out
        way = p - q
        length = np.sqrt(((way * self.spacing) ** 2).sum(axis=0))
        for k in range(1, PATH_MAX):
            far = np.flatnonzero((length > k * PATH_STEP_MM) & (out >= 0.5))  # still lung, and the way is longer
            if not far.size:
                break
            t = (k * PATH_STEP_MM) / length[far]
            f = self._cav_at(q[:, far] + t * way[:, far])
            out[far] = np.minimum(out[far], f)
        return out

    def _cav_at(self, points: np.ndarray) -> np.ndarray:
        # "nearest": a cavity cut off by the first or last slice goes on beyond it (its box has
        # empty margins everywhere else), so the scan's end is not taken for the lung's.
        return ndimage.map_coordinates(self.cav, points, order=1, mode="nearest", prefilter=False)

    def pct(self, c: float, sub=slice(None), *, path: bool = True) -> float:
        """Pleural air as a percentage of the cavity for collapse ``c`` (with :meth:`force`)."""
        if not self.n:
            return 0.0
        air = self.inside(c, sub, path=path) < 0.5
        if self.forced_lung is not None:
            air &= ~self.forced_lung[sub]
            air |= self.forced_air[sub]
        return 100.0 * float(np.mean(air))

    def force(self, lung: np.ndarray, air: np.ndarray) -> None:
        """Count these cavity voxels (boolean, cavity order) as lung / air whatever the collapse.

        The painter turns specks of air inside the lung into lung and flecks of lung
        in the air into air; forcing them lets the search aim at the share that is
        finally painted.
        """
        if self.forced_lung is None:
            self.forced_lung, self.forced_air = np.zeros(self.n, bool), np.zeros(self.n, bool)
        self.forced_lung |= lung
        self.forced_air |= air & ~self.forced_lung

    def solve(self, target: float, *, cancel=None) -> tuple[float, float]:
        """The collapse factor whose air share is ``target`` percent.

        A bisection on every 8th cavity voxel with the source point alone, then the
        full check on all voxels (:meth:`inside` with the path); the difference
        between the two is aimed off in a narrower bisection, and once the full
        check has been on both sides of the target, a bisection on all voxels
        finishes (at most :data:`FULL_STEPS` full checks in all), within
        :data:`PCT_TOL` of the target where the voxels allow.

        Returns
        -------
        c : float
            The collapse factor (:data:`C_MAX` when even that falls short). If the
            target is out of reach at :data:`C_MAX`, the pattern's ``around``
            weight is raised first (:attr:`pattern` is then the one used).
        pct : float
            The air share it gives on all voxels, percent.
        """
        sub = slice(None, None, 8)
        while self.pct(C_MAX, sub, path=False) < target + 0.5 and self.pattern.around < AROUND_MAX:
            # Out of reach with the lung on the dependent wall: lift it off there too.
            self.set_around(self.pattern.around + AROUND_STEP)
        if self.pct(C_MAX, sub) < target:
            return C_MAX, self.pct(C_MAX)

        def bisect(lo, hi, aim, steps):
            for _ in range(steps):
                check_cancel(cancel)
                mid = 0.5 * (lo + hi)
                if self.pct(mid, sub, path=False) < aim:
                    lo = mid
                else:
                    hi = mid
            return 0.5 * (lo + hi)

        below, above = (0.0, 0.0), (C_MAX, 100.0)  # full checks on each side of the target: (c, pct)
        best = None
        c, aim = bisect(0.0, C_MAX, target, 14), target
        for k in range(FULL_STEPS):
            check_cancel(cancel)
            pct = self.pct(c)
            if best is None or abs(pct - target) < abs(best[1] - target):
                best = (c, pct)
            if abs(pct - target) <= PCT_TOL:
                break
            if pct < target:
                below = max(below, (c, pct))
            else:
                above = min(above, (c, pct))
            if k == 0 or (below[0] == 0.0 or above[0] == C_MAX) and k < 2:
                aim += target - pct  # the subsample's and the endpoint's bias, aimed off
                c = bisect(max(below[0], c - 0.1), min(above[0], c + 0.1), aim, 10)
                if not below[0] < c < above[0]:
                    c = 0.5 * (below[0] + above[0])
            else:
                c = 0.5 * (below[0] + above[0])  # bisection on all voxels
        return float(best[0]), float(best[1])

"""The scan's own air noise, measured in the air around the patient.

The **air model** is measured from the air around the patient: a ring
:data:`RING_MM` outside the body outline, in front of and beside the patient (the
table is behind), away from anything denser than
:data:`~napari_pneumoseg.ct.air.OUTSIDE_AIR_HU` (clothes, blankets, tubes), away from
the image edge and from padding. Many scanners clip air at a floor (-1024 or
-1000 HU), so the noise is fitted as a normal distribution censored at that floor;
the right tail beyond three standard deviations (partial volume of clothes) is
cut off by the fit. New air (a simulated pneumothorax) is then ``max(mean + std * g, floor)``, where ``g``
is white noise smoothed in-plane as much as the ring's air is (from the
correlation of neighbouring pixels), rescaled to unit variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage, optimize, special

from .air import BODY_HU, OUTSIDE_AIR_HU, body_mask

#: The ring of air the noise is measured in: this far outside the body outline (mm).
RING_MM = (5.0, 25.0)
#: ... at least this far (mm) from anything denser than OUTSIDE_AIR_HU outside the body.
RING_CLEARANCE_MM = 3.0
#: Values below this are padding (outside the reconstruction circle), not air.
PADDING_HU = -1100.0
#: At most this many slices are sampled for the ring.
RING_SLICES = 24
#: Air model used when the image holds too little air around the patient.
FALLBACK_AIR = (-1000.0, 20.0)
#: In-plane Gaussian blur (pixels) of new edges, about what a standard kernel does.
BLUR_PX = 0.6


@dataclass
class AirModel:
    """The scan's air: a normal distribution ``N(mu, sigma)`` clipped at ``floor``, with a texture.

    Attributes
    ----------
    mu, sigma : float
        The fitted (unclipped) mean and standard deviation, HU.
    floor : float or None
        The scanner's lower clip of HU, if the ring shows one.
    texture_px : float
        In-plane sigma (pixels) of the Gaussian that smooths white noise into the
        scan's noise texture.
    voxels : int
        Ring voxels measured (0 for the fallback).
    ring_mean, ring_std : float or None
        Plain mean and standard deviation of the ring voxels within the fit's range.
    """

    mu: float
    sigma: float
    floor: Optional[float]
    texture_px: float
    voxels: int
    ring_mean: Optional[float] = None
    ring_std: Optional[float] = None

    @property
    def mean(self) -> float:
        """Mean HU of the (clipped) air the model makes."""
        return self._moments()[0]

    @property
    def std(self) -> float:
        """Standard deviation (HU) of the (clipped) air the model makes."""
        return self._moments()[1]

    def _moments(self) -> tuple[float, float]:
        m, s = self.mu, self.sigma
        if self.floor is None:
            return m, s
        f = self.floor
        a = (f - m) / s
        cdf, pdf = special.ndtr(a), np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
        e1 = f * cdf + m * (1 - cdf) + s * pdf
        e2 = f * f * cdf + (m * m + s * s) * (1 - cdf) + s * (m + f) * pdf
        return float(e1), float(np.sqrt(max(e2 - e1 * e1, 0.0)))

    def sample(self, shape, rng: np.random.Generator) -> np.ndarray:
        """Air HU with the scan's noise and texture (float32, smoothed in-plane only).

        Examples
        --------
        >>> air = AirModel(mu=-1000.0, sigma=20.0, floor=None, texture_px=0.8, voxels=1)
        >>> v = air.sample((4, 64, 64), np.random.default_rng(0))
        >>> abs(float(v.mean()) + 1000) < 2 and abs(float(v.std()) - 20) < 2
        True
        """
        g = rng.standard_normal(shape, dtype=np.float32)
        if self.texture_px > 0:
            g = ndimage.gaussian_filter(g, (0, self.texture_px, self.texture_px), mode="reflect")
            g /= _smoothed_std(self.texture_px)
        out = self.mu + self.sigma * g
        if self.floor is not None:
            np.maximum(out, self.floor, out=out)
        return out.astype(np.float32, copy=False)

    def as_dict(self) -> dict:
        """Plain data for the facts."""
        return {"mean": round(self.mean, 2), "std": round(self.std, 2), "noise_mean": round(self.mu, 2),
                "noise_std": round(self.sigma, 2), "floor": self.floor, "texture_px": round(self.texture_px, 3),
                "voxels": int(self.voxels),
                "ring_mean": None if self.ring_mean is None else round(self.ring_mean, 2),
                "ring_std": None if self.ring_std is None else round(self.ring_std, 2),
                "measured_in": (f"air {RING_MM[0]:g}-{RING_MM[1]:g} mm outside the body, in front of and "
                                "beside the patient" if self.voxels else "nothing: too little air around "
                                "the patient, a nominal air model was used")}


def _smoothed_std(sigma: float) -> float:
    """Standard deviation of unit white noise after an in-plane Gaussian of ``sigma`` pixels."""
    r = int(np.ceil(4 * sigma)) + 2
    delta = np.zeros((2 * r + 1, 2 * r + 1), np.float64)
    delta[r, r] = 1.0
    k = ndimage.gaussian_filter(delta, sigma, mode="constant")
    return float(np.sqrt((k * k).sum()))


def _fit_censored(v: np.ndarray, floor: Optional[float]) -> tuple[float, float, float]:
    """Mean and std of a normal fitted to ``v``, censored at ``floor``, the right tail cut; and the cut."""
    mu = float(np.median(v))
    sd = max(1.4826 * float(np.median(np.abs(v - mu))), 3.0)
    cut = mu + 3 * sd
    for _ in range(4):
        cut = mu + 3 * sd
        x = v[v <= cut]
        if floor is not None:
            n_c = int(np.count_nonzero(x <= floor + 0.5))
            xu = x[x > floor + 0.5]
        else:
            n_c, xu = 0, x

        def nll(theta, xu=xu, n_c=n_c, n=x.size, cut=cut):
            m, ls = theta
            s = np.exp(ls)
            ll = -xu.size * ls - 0.5 * np.sum(((xu - m) / s) ** 2)
            if n_c:
                ll += n_c * special.log_ndtr((floor - m) / s)
            ll -= n * special.log_ndtr((cut - m) / s)
            return -ll

        res = optimize.minimize(nll, [mu, np.log(sd)], method="Nelder-Mead",
                                options={"xatol": 0.01, "fatol": 0.01, "maxiter": 400})
        mu, sd = float(res.x[0]), float(np.exp(res.x[1]))
    return mu, max(sd, 0.5), mu + 3 * sd


def measure_air(hu: np.ndarray, spacing, rng: Optional[np.random.Generator] = None) -> AirModel:
    """Measure the scan's air noise around the patient (canonical frame: axis 1 dependent).

    Parameters
    ----------
    hu : ndarray, shape (z, y, x)
        CT in HU, canonical frame.
    spacing : sequence of 3 float
        Voxel size (z, y, x), mm.
    rng : numpy.random.Generator, optional
        Picks the ring voxels the fit uses when there are very many (default: seed 0).

    Returns
    -------
    AirModel
        :data:`FALLBACK_AIR` (with ``voxels == 0``) when fewer than 2000 ring voxels are found.

    Examples
    --------
    >>> g = np.random.default_rng(1)
    >>> hu = g.normal(-990.0, 15.0, size=(4, 128, 128)).astype(np.float32)
    >>> hu[:, 50:100, 35:95] = 40.0                    # a body resting low in the image
    >>> air = measure_air(hu, (5.0, 1.0, 1.0))
    >>> abs(air.mean + 990) < 2, abs(air.std - 15) < 2, air.floor is None, air.voxels > 2000
    (True, True, True, True)
    >>> clipped = measure_air(np.maximum(hu, -1000.0), (5.0, 1.0, 1.0))  # a scanner that clips at -1000
    >>> clipped.floor, abs(clipped.mu + 990) < 2, abs(clipped.sigma - 15) < 2
    (-1000.0, True, True)
    """
    rng = np.random.default_rng(0) if rng is None else rng
    nz, ny, nx = hu.shape
    sy, sx = float(spacing[1]), float(spacing[2])
    has = np.flatnonzero([(hu[k] > BODY_HU).sum() * sy * sx > 2000.0 for k in range(nz)])
    ks = has[np.unique(np.linspace(0, has.size - 1, min(RING_SLICES, has.size)).round().astype(int))] \
        if has.size else has
    vals, left, right = [], [], []
    edge = max(3, int(np.ceil(RING_MM[0] / min(sy, sx))))
    for k in ks:
        sl = hu[k]
        body = body_mask(sl[None], BODY_HU)[0]
        if not body.any():
            continue
        far = ndimage.distance_transform_edt(~body, sampling=(sy, sx))
        dense = (sl > OUTSIDE_AIR_HU) & ~body
        clear = ndimage.distance_transform_edt(~dense, sampling=(sy, sx)) > RING_CLEARANCE_MM
        ring = (far > RING_MM[0]) & (far < RING_MM[1]) & clear & (sl > PADDING_HU)
        rows = np.flatnonzero(body.any(axis=1))
        ring[int(round(0.5 * (rows[0] + rows[-1]))):] = False  # in front of and beside, not behind
        ring[:edge] = ring[-edge:] = False
        ring[:, :edge] = ring[:, -edge:] = False
        vals.append(sl[ring])
        pair = ring[:, 1:] & ring[:, :-1]
        left.append(sl[:, 1:][pair])
        right.append(sl[:, :-1][pair])
    v = np.concatenate(vals).astype(np.float64) if vals else np.zeros(0)
    if v.size < 2000:
        return AirModel(mu=FALLBACK_AIR[0], sigma=FALLBACK_AIR[1], floor=None, texture_px=BLUR_PX, voxels=0)
    lowest = float(v.min())
    floor = lowest if np.mean(v <= lowest + 0.5) > 0.01 else None
    sample = v if v.size <= 200_000 else rng.choice(v, 200_000, replace=False)
    mu, sigma, cut = _fit_censored(sample, floor)
    kept = v[v <= cut]
    a, b = np.concatenate(left).astype(np.float64), np.concatenate(right).astype(np.float64)
    ok = (a <= cut) & (b <= cut)
    rho = float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 100 else 0.0
    texture = float(np.sqrt(-1.0 / (4.0 * np.log(rho)))) if 0.05 < rho < 0.98 else BLUR_PX
    return AirModel(mu=mu, sigma=sigma, floor=floor, texture_px=float(np.clip(texture, 0.3, 1.5)),
                    voxels=int(v.size), ring_mean=float(kept.mean()), ring_std=float(kept.std()))

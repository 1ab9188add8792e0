"""Time napari_pneumoseg.measure.measure() on a 512 x 512 x 300 volume (median of a few runs).

Cases: mask + truth; + probabilities (exact AUC); + a synthetic CT (per side).
Run: python benchmarks/bench_measure.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from napari_pneumoseg import CTVolume
from napari_pneumoseg.measure import measure


def synthetic(nz: int = 300, ny: int = 512, nx: int = 512, seed: int = 0):
    """A chest-like CT (body, two lungs, a left pneumothorax) with a mask, a reference and probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:ny, :nx]
    cy, cx = ny / 2, nx / 2
    body = ((yy - cy) / (0.38 * ny)) ** 2 + ((xx - cx) / (0.45 * nx)) ** 2 <= 1
    rlung = ((yy - cy) / (0.28 * ny)) ** 2 + ((xx - 0.3 * nx) / (0.13 * nx)) ** 2 <= 1
    llung = ((yy - cy) / (0.28 * ny)) ** 2 + ((xx - 0.7 * nx) / (0.13 * nx)) ** 2 <= 1
    plane = np.full((ny, nx), -1000, np.float32)
    plane[body] = 40
    plane[rlung | llung] = -850
    hu = np.broadcast_to(plane, (nz, ny, nx)).copy()
    hu += rng.normal(0, 20, size=(1, ny, nx)).astype(np.float32)  # a little texture
    truth = np.zeros((nz, ny, nx), bool)
    truth[nz // 4 : 3 * nz // 4, int(0.25 * ny) : int(0.45 * ny), int(0.62 * nx) : int(0.8 * nx)] = True
    truth &= llung
    hu[truth] = -1000
    mask = truth.copy()
    mask[:, :, 1:] |= truth[:, :, :-1]  # a slightly wider prediction
    mask[nz // 4 : nz // 4 + 5] = False  # some missed slices
    # Sigmoid-like float32 scores: low for background, high in the reference, with noise.
    probs = np.empty((nz, ny, nx), np.float32)
    for k in range(nz):
        logit = rng.normal(-8.0, 2.0, size=(ny, nx)).astype(np.float32)
        logit[truth[k]] = rng.normal(5.0, 3.0, size=int(truth[k].sum())).astype(np.float32)
        probs[k] = 1.0 / (1.0 + np.exp(-logit))
    ct = CTVolume(hu=hu, spacing=(1.0, 0.7, 0.7))
    return ct, mask, truth, probs


def bench(label: str, fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"{label:<38s} median {med:6.3f} s  (runs: {', '.join(f'{x:.3f}' for x in times)})")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    ct, mask, truth, probs = synthetic()
    print(f"volume {mask.shape}, {mask.size / 1e6:.1f} M voxels; mask {mask.sum()} voxels, truth {truth.sum()}")
    sp = ct.spacing
    bench("mask + truth (bool)", lambda: measure(mask, spacing=sp, truth=truth), args.runs)
    m8, t8 = mask.astype(np.uint8), truth.astype(np.uint8)
    bench("mask + truth (uint8)", lambda: measure(m8, spacing=sp, truth=t8), args.runs)
    del m8, t8
    r = bench("mask + truth + float32 probabilities",
              lambda: measure(mask, spacing=sp, truth=truth, probabilities=probs), max(1, args.runs // 2 + 1))
    print(f"    auc = {r.auc:.6f}")
    p8 = np.round(probs * 255).astype(np.uint8)
    r = bench("mask + truth + uint8 probabilities", lambda: measure(mask, spacing=sp, truth=truth, probabilities=p8),
              max(1, args.runs // 2 + 1))
    print(f"    auc = {r.auc:.6f}")
    del p8, probs
    bench("mask + CT (per side, no guideline sizes)", lambda: measure(mask, ct=ct, sizing=False),
          max(1, args.runs // 2 + 1))
    r = bench("mask + CT (per side + guideline sizes)", lambda: measure(mask, ct=ct), max(1, args.runs // 2 + 1))
    print(f"    left {r.left_ml:.1f} mL, right {r.right_ml:.1f} mL, "
          f"left lung {r.left_lung_ml:.1f} mL, right lung {r.right_lung_ml:.1f} mL, "
          f"left {r.left_pct_hemithorax:.1f} % of hemithorax")
    bench("mask + CT + truth", lambda: measure(mask, ct=ct, truth=truth), max(1, args.runs // 2 + 1))
    del ct, mask, truth

    rng = np.random.default_rng(1)
    dm = rng.random((300, 512, 512), dtype=np.float32) < 0.3
    dt = rng.random((300, 512, 512), dtype=np.float32) < 0.3
    bench("dense random mask + truth (bool)", lambda: measure(dm, spacing=sp, truth=dt), args.runs)
    del dm, dt

    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "chest_ct_tcia_A0001_5mm"
    if real.is_dir():
        from napari_pneumoseg import read_ct

        src = read_ct(real)
        # The real 64 slices, each repeated 5 times: 320 x 512 x 512 at 1 mm, real anatomy.
        ct = CTVolume(hu=np.repeat(src.hu, 5, axis=0), spacing=(1.0, *src.spacing[1:]),
                      origin=src.origin, direction=src.direction)
        m = np.zeros(ct.shape, bool)
        x = ct.origin[0] + np.arange(ct.shape[2]) * ct.spacing[2]
        m[120:180, 200:300, (x > -110) & (x < -70)] = True
        m &= ct.hu < -700
        bench("real chest CT x5 slices (per side, no guideline sizes)", lambda: measure(m, ct=ct, sizing=False),
              max(1, args.runs // 2 + 1))
        r = bench("real chest CT x5 slices (per side + guideline sizes)", lambda: measure(m, ct=ct),
                  max(1, args.runs // 2 + 1))
        print(f"    left lung {r.left_lung_ml:.0f} mL, right lung {r.right_lung_ml:.0f} mL, "
              f"mask right {r.right_ml:.1f} mL = {r.right_pct_hemithorax:.1f} % of hemithorax, "
              f"rim {r.right_rim_depth_mm} mm, hilum {r.right_hilum_distance_mm} mm, "
              f"apex {r.right_apex_cupola_mm} mm")


if __name__ == "__main__":
    main()

"""Draw docs/simulated_real.png: simulated pneumothoraces on a real chest CT, for checking them by eye.

For each size (moderate and large by default) the figure shows axial slices near
the apex, at the hilum and near the base, and a coronal reformat through the
hilum (aspect from the voxel size), in a lung window with the truth outlined; the
first row is the source CT, the last column |new - old| > 0 on the hilum slice
(nothing may change outside the pleural cavity).

Usage::

    .venv/bin/python scripts/simulated_figure.py [CT_FOLDER] [--side left] [--sizes moderate large]
        [--seed 0] [--out docs/simulated_real.png]

The default CT is the 2.5 mm LIDC-IDRI chest CT in ../shared/data/real (or
$PNEUMOSEG_SHARED/data/real).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from napari_pneumoseg import read_ct  # noqa: E402
from napari_pneumoseg.simulate import simulate_pneumothorax  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PNEUMOSEG_SHARED", REPO.parent / "shared"))
DEFAULT_CT = SHARED / "data" / "real" / "chest_ct_lidc_idri_1011_2p5mm"
WINDOW = (-1200.0, 300.0)


def _lps_to_index(ct, lps) -> np.ndarray:
    """Fractional (z, y, x) index of an LPS point (inverse of CTVolume.index_to_lps)."""
    d = np.asarray(ct.direction, float)
    return np.linalg.solve(d.T, np.asarray(lps, float) - np.asarray(ct.origin)) / np.asarray(ct.spacing)


def _axial(hu_slice, ct):
    """An axial slice turned to the radiological view: anterior up, the patient's left on the right."""
    d = np.asarray(ct.direction, float)
    img = hu_slice
    if d[1, 1] < 0:  # rows run anteriorly: flip so anterior is up
        img = img[::-1]
    if d[2, 0] < 0:  # columns run to the patient's right: flip so the left is on the right
        img = img[:, ::-1]
    return img


def _coronal(vol, ct, j):
    """Coronal reformat at row j: superior up, the patient's left on the right."""
    d = np.asarray(ct.direction, float)
    img = vol[:, j, :]
    if d[0, 2] > 0:  # slice index runs superiorly: flip so superior is up
        img = img[::-1]
    if d[2, 0] < 0:
        img = img[:, ::-1]
    return img


def _crop(mask2d, pad=10):
    rows, cols = np.flatnonzero(mask2d.any(axis=1)), np.flatnonzero(mask2d.any(axis=0))
    if not rows.size:
        return slice(None), slice(None)
    return (slice(max(0, rows[0] - pad), rows[-1] + pad), slice(max(0, cols[0] - pad), cols[-1] + pad))


def _labels(ax, img_shape, coronal=False):
    h, w = img_shape
    kw = dict(color="yellow", fontsize=9, ha="center", va="center", fontweight="bold")
    ax.text(w * 0.04, h / 2, "R", **kw)
    ax.text(w * 0.96, h / 2, "L", **kw)
    ax.text(w / 2, h * 0.04, "S" if coronal else "A", **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ct", nargs="?", default=str(DEFAULT_CT))
    ap.add_argument("--side", default="left")
    ap.add_argument("--sizes", nargs="+", default=["moderate", "large"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "docs" / "simulated_real.png"))
    args = ap.parse_args(argv)
    if not Path(args.ct).is_dir():
        print(f"CT folder not found: {args.ct} (set PNEUMOSEG_SHARED or pass a folder)", file=sys.stderr)
        return 2

    ct = read_ct(args.ct)
    cases = []
    for size in args.sizes:
        t0 = time.time()
        case = simulate_pneumothorax(ct, side=args.side, size=size, seed=args.seed)
        print(f"{size}: {time.time() - t0:.1f} s, {case.facts['volume_ml']['total']:.0f} mL, "
              f"{case.facts['pct_hemithorax']} % of the hemithorax")
        cases.append((size, case))

    # Slices from the first case: its side's air range and hilum.
    side = "left" if args.side in ("left", "both") else "right"
    first = cases[-1][1].facts
    k0, k1 = first["slices"][side]
    hil = _lps_to_index(ct, first["parameters"]["hilum_lps_mm"][side])
    k_hil, j_hil = int(round(hil[0])), int(round(hil[1]))
    sup_is_up = ct.direction[0, 2] > 0  # slice index runs superiorly
    top, bottom = (k1, k0) if sup_is_up else (k0, k1)
    step = 1 if sup_is_up else -1
    span = abs(k1 - k0)
    k_apex = int(top - step * round(0.12 * span))
    k_base = int(bottom + step * round(0.12 * span))
    picks = [("apex", k_apex), ("hilum", k_hil), ("base", k_base)]

    body = _axial(ct.hu[k_hil] > -400, ct)
    crop = _crop(body)
    rows = [("source", None)] + cases
    fig, axes = plt.subplots(len(rows), 5, figsize=(22, 4.6 * len(rows)),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.1, 1]})
    for r, (name, case) in enumerate(rows):
        vol = ct.hu if case is None else case.ct.hu
        for c, (where, k) in enumerate(picks):
            ax = axes[r, c]
            img = _axial(vol[k], ct)[crop]
            ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="nearest")
            if case is not None:
                ax.contour(_axial(case.truth[k], ct)[crop], [0.5], colors="red", linewidths=0.6)
            _labels(ax, img.shape)
            ax.set_title(f"{name}: {where} (slice {k})", fontsize=10)
        ax = axes[r, 3]
        img = _coronal(vol, ct, j_hil)
        ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="nearest",
                  aspect=ct.spacing[0] / ct.spacing[2])
        if case is not None:
            ax.contour(_coronal(case.truth, ct, j_hil), [0.5], colors="red", linewidths=0.6)
        _labels(ax, img.shape, coronal=True)
        ax.set_title(f"{name}: coronal at the hilum (row {j_hil})", fontsize=10)
        ax = axes[r, 4]
        if case is None:
            img = _axial(vol[k_hil], ct)[crop]
            ax.imshow(img, cmap="gray", vmin=-1100, vmax=-700, interpolation="nearest")
            ax.set_title("source: hilum slice, narrow air window (-1100..-700)", fontsize=10)
        else:
            diff = _axial(np.abs(case.ct.hu[k_hil].astype(np.float64) - ct.hu[k_hil]) > 0, ct)[crop]
            ax.imshow(diff, cmap="magma", interpolation="nearest")
            ax.contour(_axial(case.truth[k_hil], ct)[crop], [0.5], colors="cyan", linewidths=0.5)
            f = case.facts
            ax.set_title(f"{name}: |new - old| > 0 (white), truth (cyan)\n"
                         f"{f['volume_ml'][side]:.0f} mL, {f['pct_hemithorax'][side]:.1f} % of hemithorax, "
                         f"rim {f['max_rim_depth_mm'][side]:.0f} mm", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Simulated {args.side} pneumothorax on {Path(args.ct).name} (seed {args.seed}); "
                 f"lung window {WINDOW[0]:g}..{WINDOW[1]:g} HU, truth in red", fontsize=13)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=72)
    # CT noise compresses badly: a 256-colour palette (grey levels and the outlines) halves the file.
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

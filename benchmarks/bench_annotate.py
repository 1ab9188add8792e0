"""Does annotating pay? Interpolation from every n-th slice, the effort a pre-annotation saves, and fine-tuning.

Usage:
    python benchmarks/bench_annotate.py [--parts interp effort loop] [--shared ../shared]
        [--phantom-minutes 10] [--tune-minutes 6] [--out bench-annotate]

- ``interp``: ``interpolate_slices`` from every 5th and every 10th slice (from the empty slice below the
  pneumothorax to the one above it), shape only and guided by the CT, Dice against the full truth,
  on phantoms and on simulated pneumothorax in the three real CTs.
- ``effort``: the share of truth voxels a user must change (add or remove) to reach the truth, starting
  from the pleural-air pre-annotation versus from nothing (100 %).
- ``loop``: a Unet-ResNet50 trained on phantoms only (``--phantom-minutes``), then fine-tuned
  (``train(init_model=...)``, ``--tune-minutes``) on 3 corrected (= truth) simulated cases of two real
  patients (LIDC-IDRI-1011, 4D-Lung 113); both scored on simulated cases of the held-out patient
  (TCIA A0001): Dice before and after.
One run; figures go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REAL = ("chest_ct_tcia_A0001_5mm", "chest_ct_lidc_idri_1011_2p5mm", "chest_ct_4dlung_113_3mm")
PIXEL_MM = 1.4


def dice(a, b) -> float:
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    s = np.count_nonzero(a) + np.count_nonzero(b)
    return 2 * np.count_nonzero(a & b) / s if s else 1.0


def outlines(truth, every):
    ks = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    ann = list(range(max(int(ks[0]) - 1, 0), int(ks[-1]) + 2, every))
    if ann[-1] < ks[-1] + 1 < truth.shape[0]:
        ann.append(int(ks[-1]) + 1)
    ann = [k for k in ann if k < truth.shape[0]]
    return np.where(np.isin(np.arange(truth.shape[0]), ann)[:, None, None], truth, 0), ann


def cases(shared: Path, seed: int = 7):
    """(name, ct, truth): 4 phantoms and 6 simulated cases (left/right x small/moderate/large... 2 per CT)."""
    from napari_pneumoseg import make_phantom, read_ct, simulate_pneumothorax

    for s in range(4):
        ph = make_phantom(seed=40 + s, size=("small", "moderate", "large", "moderate")[s])
        yield f"phantom {40 + s} {ph.info.get('size', '')}", ph.ct, ph.truth
    for k, folder in enumerate(REAL):
        ct = read_ct(shared / "data" / "real" / folder)
        for side, size in (("left", "small"), ("right", "moderate")):
            c = simulate_pneumothorax(ct, side=side, size=size, seed=seed + k)
            yield f"{folder.split('_')[2]} {side} {size}", c.ct, c.truth


def part_interp_effort(shared: Path, parts) -> None:
    from napari_pneumoseg import find_pleural_air, interpolate_slices

    print("case | ptx mL | every 5th: shape / CT-guided | every 10th: shape / CT-guided | "
          "effort from pleural air | from nothing")
    for name, ct, truth in cases(shared):
        row = [name, f"{np.count_nonzero(truth) * ct.voxel_volume_ml:.0f}"]
        if "interp" in parts:
            for every in (5, 10):
                given, ann = outlines(truth, every)
                plain = dice(interpolate_slices(given, ann, spacing=ct.spacing), truth)
                guided = dice(interpolate_slices(given, ann, spacing=ct.spacing, image=ct.hu), truth)
                row.append(f"{plain:.3f} / {guided:.3f}")
        if "effort" in parts:
            pre = find_pleural_air(ct).mask != 0
            t = truth != 0
            row.append(f"{100 * np.count_nonzero(pre ^ t) / np.count_nonzero(t):.1f} %")
            row.append("100 %")
        print(" | ".join(row), flush=True)


def part_loop(shared: Path, args) -> None:
    from napari_pneumoseg import make_phantom, measure, read_ct, segment, simulate_pneumothorax, train
    from napari_pneumoseg.model import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    phantoms = [(p.ct, p.truth) for p in (make_phantom(seed=200 + s, size=("small", "moderate", "large")[s % 3],
                                                        side=("left", "right")[s % 2]) for s in range(9))]
    base = out / "phantoms.pnxmodel"
    r = train(phantoms, base, patch_size=256, pixel_spacing_mm=PIXEL_MM, max_seconds=args.phantom_minutes * 60,
              bn_momentum=0.9, learning_rate=3e-4, overwrite=True, evaluate=False)
    print(f"phantom model: {len(r.history)} epochs in {time.perf_counter() - t0:.0f} s, best {r.best_epoch}")
    corrected = []
    for k, folder in enumerate(REAL[1:]):
        ct = read_ct(shared / "data" / "real" / folder)
        plan = [("left", "moderate"), ("right", "large")] if k == 0 else [("right", "moderate")]
        for side, size in plan:
            c = simulate_pneumothorax(ct, side=side, size=size, seed=300 + k)
            corrected.append((c.ct, c.truth))
    tuned = out / "tuned.pnxmodel"
    t1 = time.perf_counter()
    r = train(corrected, tuned, init_model=base, patch_size=256, max_seconds=args.tune_minutes * 60,
              bn_momentum=0.9, learning_rate=1e-4, overwrite=True, evaluate=False)
    print(f"fine-tuned on {len(corrected)} corrected cases: {len(r.history)} epochs in "
          f"{time.perf_counter() - t1:.0f} s, best {r.best_epoch}")
    held = read_ct(shared / "data" / "real" / REAL[0])
    tests = [simulate_pneumothorax(held, side=side, size=size, seed=400 + j)
             for j, (side, size) in enumerate((("left", "small"), ("right", "moderate"), ("left", "large")))]
    print("held-out patient (TCIA A0001) | phantom model Dice | fine-tuned Dice | FP mL before / after")
    models = {"before": load_model(base), "after": load_model(tuned)}
    for c in tests:
        row = [f"{c.facts['parameters']['side']} {c.facts['parameters']['size']}"]
        ms = {k: measure(segment(c.ct, m).mask, ct=c.ct, truth=c.truth, sizing=False) for k, m in models.items()}
        row += [f"{ms['before'].dice:.3f}", f"{ms['after'].dice:.3f}",
                f"{ms['before'].fp * ms['before'].voxel_ml:.0f} / {ms['after'].fp * ms['after'].voxel_ml:.0f}"]
        print(" | ".join(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["interp", "effort", "loop"])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--phantom-minutes", type=float, default=10.0)
    parser.add_argument("--tune-minutes", type=float, default=6.0)
    parser.add_argument("--out", default="bench-annotate")
    args = parser.parse_args()
    shared = Path(args.shared)
    if {"interp", "effort"} & set(args.parts):
        part_interp_effort(shared, args.parts)
    if "loop" in args.parts:
        part_loop(shared, args)


if __name__ == "__main__":
    main()

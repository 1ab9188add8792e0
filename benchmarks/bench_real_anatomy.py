"""Where the network stands on real anatomy: models scored on simulated pneumothorax in a patient they never saw.

Usage:
    python benchmarks/bench_real_anatomy.py --train-minutes 25 [--demo-model demo-out/model.pnxmodel]
        [--shared ../shared] [--holdout chest_ct_tcia_A0001_5mm] [--out bench-real]

Trains a Unet-ResNet50 for ``--train-minutes`` on simulated pneumothorax in the real chest CTs
of ``<shared>/data/real`` except the held-out patient, plus phantoms (2.8 mm pixels, whole
slices, as the demo), then scores it and the demo's phantom-only model (if given) on simulated
pneumothorax of every size and both sides in the held-out patient: Dice, volume error and
false-positive mL outside the truth. Prints one table; numbers go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SIZES = ("small", "moderate", "large")
SIDES = ("left", "right")
PIXEL_MM = 2.8


def simulated_cases(ct, seeds, sides=SIDES, sizes=SIZES):
    from napari_pneumoseg import simulate_pneumothorax

    for k, (side, size) in enumerate((s, z) for s in sides for z in sizes):
        yield simulate_pneumothorax(ct, side=side, size=size, seed=seeds + k)


def score(model, cases) -> list[dict]:
    from napari_pneumoseg import measure, segment

    rows = []
    for case in cases:
        t = time.perf_counter()
        mask = segment(case.ct, model).mask
        seconds = time.perf_counter() - t
        m = measure(mask, ct=case.ct, truth=case.truth)
        fp_ml = m.fp * m.voxel_ml
        p = case.facts["parameters"]
        rows.append({"side": p["side"], "size": p["size"], "true_ml": m.truth_volume_ml,
                     "found_ml": m.volume_ml, "dice": m.dice, "volume_error": m.relative_volume_error,
                     "fp_ml": fp_ml, "seconds": seconds})
    return rows


def train_model(chests, args, model_path: Path) -> None:
    """Train on simulated cases of every CT but the held-out one, plus phantoms."""
    from napari_pneumoseg import make_phantom, read_ct, train

    t0 = time.perf_counter()
    cases = []
    for k, folder in enumerate(p for p in chests if p.name != args.holdout):
        ct = read_ct(folder)
        for case in simulated_cases(ct, seeds=100 * (k + 1)):
            cases.append((case.ct, case.truth))
        print(f"simulated 6 cases in {folder.name}", flush=True)
    sides, sizes = ["left", "right", "both"], list(SIZES)
    for k in range(args.phantoms):
        p = make_phantom(seed=k, side=sides[k % 3], size=sizes[(k // 3) % 3], n_slices=48,
                         shape_yx=(128, 128))
        cases.append((p.ct, p.truth))
    print(f"{len(cases)} training cases ready in {time.perf_counter() - t0:.0f} s", flush=True)

    t1 = time.perf_counter()
    result = train(cases, model_path, backbone="resnet50", batch_size=4, learning_rate=1e-3,
                   epochs=500, patience=500, steps_per_epoch=100, bn_momentum=0.9, lr_decay=True,
                   max_seconds=args.train_minutes * 60, pixel_spacing_mm=PIXEL_MM,
                   evaluate=False, overwrite=True,
                   on_epoch=lambda e, logs: print(f"epoch {e}: loss {logs['loss']:.4f} "
                                                  f"val_loss {logs['val_loss']:.4f}", flush=True))
    print(f"trained {len(result.history)} epochs in {time.perf_counter() - t1:.0f} s ({result.stopped})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--holdout", default="chest_ct_tcia_A0001_5mm")
    parser.add_argument("--demo-model", default=None, help="the demo's model (phantoms only)")
    parser.add_argument("--train-minutes", type=float, default=25.0)
    parser.add_argument("--phantoms", type=int, default=8)
    parser.add_argument("--out", default="bench-real")
    parser.add_argument("--trained", default=None,
                        help="score this already trained model instead of training one")
    args = parser.parse_args()

    from napari_pneumoseg import load_model, read_ct

    real = Path(args.shared) / "data" / "real"
    chests = sorted(p for p in real.iterdir() if p.is_dir() and p.name.startswith("chest_ct_"))
    held = [p for p in chests if p.name == args.holdout]
    if not held:
        raise SystemExit(f"held-out CT {args.holdout} not in {real}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model_path = Path(args.trained) if args.trained else out / "real+phantoms.pnxmodel"
    if not args.trained:
        train_model(chests, args, model_path)

    held_ct = read_ct(held[0])
    test = list(simulated_cases(held_ct, seeds=9000))
    models = {"real+phantoms": load_model(model_path)}
    if args.demo_model:
        models = {"demo (phantoms only)": load_model(args.demo_model), **models}
    print(f"\nheld-out patient: {held[0].name} ({held_ct.shape}, {held_ct.spacing} mm); "
          f"{len(test)} simulated cases\n")
    print("| model | side | size | true mL | found mL | Dice | volume error | FP mL outside truth |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        rows = score(model, test)
        for r in rows:
            print(f"| {name} | {r['side']} | {r['size']} | {r['true_ml']:.1f} | {r['found_ml']:.1f} | "
                  f"{r['dice']:.3f} | {r['volume_error']:+.2f} | {r['fp_ml']:.1f} |")
        dice = np.array([r["dice"] for r in rows])
        print(f"| {name} | all | mean | | | {dice.mean():.3f} | "
              f"{np.mean([abs(r['volume_error']) for r in rows]):.2f} (mean abs) | "
              f"{np.mean([r['fp_ml'] for r in rows]):.1f} |")


if __name__ == "__main__":
    main()

"""Train the paper's full Unet-ResNet50 on phantom patients with patches on this CPU.

Prints the held-out phantom Dice and volume error (issue 5's benchmark; goal Dice >= 0.97).
Usage: python benchmarks/bench_train.py [--patients 20] [--minutes 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from napari_pneumoseg import load_model, make_phantom, measure, read_ct, read_mask, segment
    from napari_pneumoseg.phantom import write_phantom_case
    from napari_pneumoseg.training import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--heldout", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-train-"))
    dataset = out / "dataset"
    sides, sizes = ["left", "right", "both"], ["small", "moderate", "large"]
    for k in range(args.patients):
        folder = dataset / f"patient{k + 1:03d}"
        if not folder.exists():
            write_phantom_case(make_phantom(seed=k, side=sides[k % 3], size=sizes[(k // 3) % 3],
                                            n_slices=args.slices,
                                            shape_yx=(args.size, args.size)), folder)
    t0 = time.monotonic()
    result = train(dataset, out / "model.pnxmodel", epochs=10000, batch_size=8,
                   learning_rate=1e-3, patience=1000, patch_size=args.patch,
                   steps_per_epoch=40, max_seconds=args.minutes * 60, bn_momentum=0.9,
                   evaluate=["test"], overwrite=True,
                   on_epoch=lambda e, logs: print(f"epoch {e}: loss {logs['loss']:.4f} "
                                                  f"val_loss {logs['val_loss']:.4f} "
                                                  f"val_dice {logs.get('val_dice', 0):.3f}", flush=True))
    train_s = time.monotonic() - t0
    print(f"trained {len(result.history)} epochs in {train_s / 60:.1f} min ({result.stopped}); "
          f"best epoch {result.best_epoch}")
    test = result.table["test"]
    print(f"test split (patients {result.split['cases'].get('test')}): Dice {test['dice']:.4f}, "
          f"per-slice Dice {test['dice_per_slice']:.4f}, precision {test['precision']:.4f}, "
          f"recall {test['recall']:.4f}, AUC {test['auc']:.4f}")
    bundle = load_model(out / "model.pnxmodel")
    dices, errors = [], []
    for j in range(args.heldout):
        seed = 5000 + j
        case = out / f"heldout{seed}"
        if not case.exists():
            write_phantom_case(make_phantom(seed=seed, side=sides[j % 3], size=sizes[j % 3],
                                            n_slices=args.slices,
                                            shape_yx=(args.size, args.size)), case)
        ct = read_ct(case / "ct")
        truth = read_mask(case / "truth.nrrd", like=ct)
        m = measure(segment(ct, bundle).mask, ct=ct, truth=truth)
        dices.append(m.dice)
        errors.append(m.relative_volume_error)
        print(f"held-out seed {seed} ({sides[j % 3]}, {sizes[j % 3]}): Dice {m.dice:.4f}, "
              f"volume true {m.truth_volume_ml:.1f} mL, measured {m.volume_ml:.1f} mL "
              f"({100 * m.relative_volume_error:+.1f} %)")
    print(f"held-out mean Dice {np.mean(dices):.4f} (goal >= 0.97), mean |volume error| "
          f"{100 * np.mean(np.abs(errors)):.1f} %")


if __name__ == "__main__":
    main()

"""Train a Unet-ResNet50 on 512 x 512 phantoms (0.7 mm pixels) for the fast-inference benchmark.

Usage: python benchmarks/make_bench_model.py [--out bench-0.7mm.pnxmodel] [--minutes 28]
       [--patch-size 256] [--batch-size 2] [--positive-fraction 0.4]

The demo's model sees 2.8 mm pixels, so on 512 x 512 studies it labels the air
around the patient and its masks say little about whether the fast path keeps
the answer. This one is trained at the benchmark phantom's own pixel size (10
phantoms of 40 slices, patch validation), then:
``python benchmarks/bench_fast_inference.py --model bench-0.7mm.pnxmodel --pixel-mm 0.7``.

The defaults (256 px patches, which show the network more of the air around
the patient, batches of two, 28 minutes) were chosen from the runs logged in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-0.7mm.pnxmodel")
    parser.add_argument("--minutes", type=float, default=28.0)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--positive-fraction", type=float, default=0.4)
    args = parser.parse_args()

    from napari_pneumoseg.phantom import make_phantom
    from napari_pneumoseg.training import train

    combos = [("left", "moderate"), ("right", "large"), ("both", "small"), ("left", "large"),
              ("right", "moderate"), ("both", "moderate"), ("left", "small"), ("right", "small"),
              ("both", "large"), ("left", "moderate")]
    cases = []
    for k, (side, size) in enumerate(combos):
        p = make_phantom(seed=k, side=side, size=size, n_slices=40)  # 512 x 512, 0.7 mm pixels
        cases.append((p.ct, p.truth))
    print(f"{len(cases)} phantoms, spacing {p.ct.spacing}", flush=True)

    def on_epoch(epoch, logs):
        print(f"epoch {epoch}: loss {logs['loss']:.3f} val_loss {logs['val_loss']:.3f} "
              f"val_dice {logs.get('val_dice', float('nan')):.3f}", flush=True)

    t = time.monotonic()
    result = train(cases, args.out, backbone="resnet50", patch_size=args.patch_size, batch_size=args.batch_size,
                   learning_rate=1e-3, epochs=500, steps_per_epoch=100, patience=500, bn_momentum=0.9,
                   positive_fraction=args.positive_fraction,
                   lr_decay=True, max_seconds=args.minutes * 60, validation="patches", evaluate=False,
                   on_epoch=on_epoch)
    print(f"trained {len(result.history)} epochs in {time.monotonic() - t:.0f} s ({result.stopped}); "
          f"saved {args.out}")


if __name__ == "__main__":
    main()

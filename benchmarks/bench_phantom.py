"""Time to make the default 120 x 512 x 512 pneumothorax phantom (and to write it as DICOM).

Run: ``python benchmarks/bench_phantom.py [--repeat N] [--write]``. Prints wall and
CPU seconds per run; the best wall time is the figure to quote (other load on
the machine only makes runs slower).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from napari_pneumoseg.phantom import make_phantom, write_phantom_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", default="moderate", choices=("small", "moderate", "large"))
    parser.add_argument("--side", default="left", choices=("left", "right", "both", "none"))
    parser.add_argument("--write", action="store_true", help="also time writing the case (DICOM + NRRD)")
    args = parser.parse_args()

    walls = []
    ph = None
    for run in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        ph = make_phantom(seed=run, side=args.side, size=args.size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        walls.append(wall)
        info = ph.info
        print(f"run {run}: {wall:.2f} s wall, {cpu:.2f} s CPU  shape {tuple(ph.ct.shape)} "
              f"spacing {ph.ct.spacing}  pneumothorax {info['volume_ml']:.1f} mL "
              f"(continuous {info['continuous_volume_ml']:.1f} mL)")
    print(f"make_phantom 120x512x512 ({args.size}, {args.side}): best {min(walls):.2f} s wall")
    if args.write and ph is not None:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_phantom_case(ph, Path(tmp) / "case")
            print(f"write_phantom_case (120 DICOM files + NRRD): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()

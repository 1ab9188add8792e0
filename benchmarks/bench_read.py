"""Read the bundled 64-slice chest CT with read_ct and with SimpleITK; print medians and ratio.

Usage: python benchmarks/bench_read.py [DICOM_FOLDER] [--repeats N]
Goal (issue 2): ours no slower than SimpleITK (ratio <= 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/data/real/chest_ct_tcia_A0001_5mm"


def time_it(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    import SimpleITK as sitk

    from napari_pneumoseg import read_ct

    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    def with_sitk():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(args.folder))
        return sitk.GetArrayFromImage(reader.Execute())

    # Alternate which goes first to share any cache effects.
    read_ct(args.folder), with_sitk()
    ours, ct = time_it(lambda: read_ct(args.folder), args.repeats)
    theirs, arr = time_it(with_sitk, args.repeats)
    same = np.array_equal(ct.hu, arr.astype(np.float32))
    print(f"folder: {args.folder} ({ct.shape[0]} slices {ct.shape[1]}x{ct.shape[2]})")
    print(f"read_ct   median {ours * 1000:7.1f} ms over {args.repeats} runs")
    print(f"SimpleITK median {theirs * 1000:7.1f} ms over {args.repeats} runs")
    print(f"ratio read_ct / SimpleITK = {ours / theirs:.2f} (goal <= 1); identical HU: {same}")


if __name__ == "__main__":
    main()

"""Inference speed: segment() against the paper's way (model.predict on all slices) on the bundled chest CT.

Usage: python benchmarks/bench_inference.py [DICOM_FOLDER] [--slices N] [--batch-size B] [--paper-batch P]

Both run the same randomly initialised Unet-ResNet50 (no trained weights are
needed for speed) with the paper's min-max preprocessing, so their outputs
must agree. Also prints achieved GFLOP/s (84.2 GFLOP per 512x512 slice)
against a float32 numpy matmul measured before and after (best taken). Both paths are
warmed up on one batch first (graph tracing is not counted). The full 64
slices take minutes on 2 cores; use --slices 8 for a quick look.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PNEUMOSEG_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DEFAULT = SHARED / "data/real/chest_ct_tcia_A0001_5mm"


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """Best float32 numpy matmul rate: the machine's practical dense-compute ceiling."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--slices", type=int, default=None, help="use N central slices (default: all)")
    parser.add_argument("--batch-size", type=int, default=4, help="segment() batch size")
    parser.add_argument("--paper-batch", type=int, default=8, help="model.predict batch size")
    args = parser.parse_args()

    from napari_pneumoseg import read_ct
    from napari_pneumoseg.model import PAPER_PREPROCESSING, ModelBundle, preprocess, segment
    from napari_pneumoseg.model.network import PAPER_GFLOP_PER_512_SLICE

    matmul_before = matmul_gflops()
    ct = read_ct(args.folder)
    hu = ct.hu
    if args.slices:
        start = max(0, (hu.shape[0] - args.slices) // 2)
        hu = hu[start : start + args.slices]
    n, ny, nx = hu.shape
    print(f"CT: {args.folder}: using {n} of {ct.shape[0]} slices, {ny}x{nx}; {os.cpu_count()} CPUs")

    t_build, bundle = _timed(lambda: ModelBundle.build("resnet50", preprocessing=PAPER_PREPROCESSING))
    model = bundle.model
    print(f"built random Unet-ResNet50 in {t_build:.1f} s")

    def paper_way(slices):
        # The paper's code: min-max over the whole volume, then model.predict on every slice.
        x = preprocess(slices, PAPER_PREPROCESSING)
        return model.predict(x, batch_size=args.paper_batch, verbose=0)[..., 0]

    # Warm up both paths (graph tracing) with one batch of each one's batch shape.
    segment(hu[: args.batch_size], bundle, batch_size=args.batch_size)
    paper_way(hu[: args.paper_batch])

    t_ours, result = _timed(
        lambda: segment(hu, bundle, batch_size=args.batch_size, return_probabilities=True)
    )
    mask, probs = result.mask, result.probabilities
    t_paper, paper_probs = _timed(lambda: paper_way(hu))
    matmul_after = matmul_gflops()
    gflops_ref = max(matmul_before, matmul_after)  # the CPU is shared: take the better one

    gflop_per_slice = PAPER_GFLOP_PER_512_SLICE * (ny * nx) / (512 * 512)
    ours, theirs = n / t_ours, n / t_paper
    diff = float(np.abs(probs - paper_probs).max())
    same_mask = np.array_equal(mask, (paper_probs > 0.5).astype(np.uint8))
    print(f"segment()      batch {args.batch_size}: {t_ours:7.2f} s  {ours:6.3f} slices/s  "
          f"{ours * gflop_per_slice:6.1f} GFLOP/s")
    print(f"model.predict  batch {args.paper_batch}: {t_paper:7.2f} s  {theirs:6.3f} slices/s  "
          f"{theirs * gflop_per_slice:6.1f} GFLOP/s")
    print(f"ratio segment()/predict = {ours / theirs:.2f} (slices/s; > 1 means segment() is faster)")
    print(f"numpy float32 2048x2048 matmul: {matmul_before:.1f} GFLOP/s before, {matmul_after:.1f} after; "
          f"segment() reaches "
          f"{100 * ours * gflop_per_slice / gflops_ref:.0f}% of it")
    print(f"outputs agree: max |prob difference| = {diff:.2e}, identical masks: {same_mask}")


if __name__ == "__main__":
    main()

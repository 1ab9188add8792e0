"""Fast inference (issue 8): the paper's way against segment()'s fast path, same masks?

Usage: python benchmarks/bench_fast_inference.py [--model M.pnxmodel] [--real DICOM_FOLDER]
       [--real-slices N] [--phantom-slices N] [--rss-slices N | --no-rss] [--repeats R] [--batch-size B]
       [--pixel-mm MM]
       (about 10 minutes on 2 cores; quick look: --real-slices 8 --phantom-slices 8 --rss-slices 16)

For each study (the bundled real chest CT, 64 x 512 x 512; a 512 x 512
phantom with a known pneumothorax):

- the paper's way: every whole slice, preprocessed, through ``model.predict``
  (batch 8);
- ours: :func:`~napari_pneumoseg.model.segment` with its defaults (body crop
  and lung slice range on).

Printed: wall time of each, their ratio, Dice between the two masks (and
against the phantom's truth), how the probabilities differ, what the fast
path ran, and the network's own GFLOP/s (84.2 GFLOP per 512 x 512 slice,
scaled by the pixels run) against a float32 numpy matmul measured in the
same run. The model is ``--model`` or, if it exists,
``demo-out/model.pnxmodel`` (the demo's ResNet-50, trained on 128 x 128
phantoms of 2.8 mm pixels); otherwise a random-weights Unet-ResNet50, whose
masks mean little, so then compare the probabilities. With a trained model a
third study is a phantom at the model's own pixel size (``--pixel-mm``, 2.8),
where the model works: the 512 x 512 studies (0.7-0.84 mm pixels) are out of
its depth and it labels much of the air outside the body, which the crop
then drops. ``benchmarks/make_bench_model.py`` trains one at 0.7 mm (the
512 x 512 phantom's pixels; then pass ``--pixel-mm 0.7``). Finally, in a fresh process, the
peak RSS of segmenting a ``--rss-slices`` x 512 x 512 phantom read from a
memory-mapped .npy file (as the engine does).

The CPU may be shared: other processes' CPU use during each timed part is
sampled and printed, and ``--repeats`` takes the best of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import DEFAULT as REAL_CT  # noqa: E402
from bench_inference import matmul_gflops  # noqa: E402

DEMO_MODEL = Path("demo-out/model.pnxmodel")  # where `pneumoseg demo` puts it by default
PAPER_BATCH = 8


class Load:
    """Samples the CPU use of all other processes (percent of one core) in the background."""

    def __init__(self, every: float = 2.0):
        import psutil

        self._psutil, self._every = psutil, every
        self._me = os.getpid()
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _others(self) -> float:
        total = 0.0
        for p in self._psutil.process_iter(["pid"]):
            if p.info["pid"] != self._me:
                try:
                    total += p.cpu_percent(None)
                except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                    pass
        return total

    def _run(self):
        self._others()  # prime the per-process counters
        while not self._stop.wait(self._every):
            self.samples.append(self._others())

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def text(self) -> str:
        if not self.samples:
            return "others' CPU: not sampled"
        return f"others' CPU: mean {np.mean(self.samples):.0f}%, max {np.max(self.samples):.0f}% of one core"


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / s


def paper_way(bundle, hu):
    """The paper's code path: preprocess the whole volume, model.predict on every whole slice."""
    from napari_pneumoseg.model import preprocess, volume_stats
    from napari_pneumoseg.model.inference import _padding

    (py0, py1), (px0, px1) = _padding(bundle.model, *hu.shape[1:])
    x = np.pad(hu, ((0, 0), (py0, py1), (px0, px1)), constant_values=float(hu.min()))
    x = preprocess(x, bundle.preprocessing, volume_stats(hu, bundle.preprocessing),
                   channels=bundle.input_channels)
    y = bundle.model.predict(x, batch_size=PAPER_BATCH, verbose=0)[..., 0]
    return y[:, py0 : py0 + hu.shape[1], px0 : px0 + hu.shape[2]]


def compare(name, ct, bundle, *, truth=None, repeats=1, batch_size=4, gflops_ref=None):
    from napari_pneumoseg.model import segment
    from napari_pneumoseg.model.network import PAPER_GFLOP_PER_512_SLICE

    hu = ct.hu
    n, ny, nx = hu.shape
    # Warm up both paths (graph tracing) on a few slices of this study.
    mid = slice(n // 2 - 2, n // 2 + 2)
    paper_way(bundle, hu[mid])
    segment(type(ct)(hu[mid], spacing=ct.spacing), bundle, batch_size=batch_size)

    t_paper, t_ours, infos = [], [], []
    for _ in range(max(1, repeats)):
        with Load() as load_paper:
            t = time.perf_counter()
            p_paper = paper_way(bundle, hu)
            t_paper.append(time.perf_counter() - t)
        with Load() as load_ours:
            t = time.perf_counter()
            result = segment(ct, bundle, batch_size=batch_size, return_probabilities=True)
            mask, p_ours, info = result.mask, result.probabilities, result.info
            t_ours.append(time.perf_counter() - t)
            infos.append(info)
    tp, to = min(t_paper), min(t_ours)
    info = infos[int(np.argmin(t_ours))]  # the fastest run's timings go with its wall time
    m_paper = (p_paper > bundle.threshold).astype(np.uint8)

    run = np.zeros(hu.shape, bool)  # where the fast path used the network's output
    for k0, k1, y0, y1, x0, x1 in info.windows:
        run[k0:k1, y0:y1, x0:x1] = True
    diff = np.abs(p_ours - p_paper)
    flips = mask != m_paper
    frame_px = info.frame[0] * info.frame[1]
    gflop_slice = PAPER_GFLOP_PER_512_SLICE * frame_px / (512 * 512)
    net_gflops = info.pixel_fraction * n * gflop_slice / info.seconds_network
    paper_gflops = n * gflop_slice / tp

    print(f"\n== {name}: {n} x {ny} x {nx}, spacing {tuple(round(s, 3) for s in ct.spacing)}")
    print(f"  paper's way (model.predict, batch {PAPER_BATCH}, whole slices): {tp:7.1f} s "
          f"({n / tp:.2f} slices/s, {paper_gflops:.0f} GFLOP/s)   [{load_paper.text()}]")
    print(f"  ours (segment, batch {batch_size}, crop + slice range):       {to:7.1f} s   "
          f"[{load_ours.text()}]")
    if repeats > 1:
        print(f"  all runs: paper {[round(t, 1) for t in t_paper]}, ours {[round(t, 1) for t in t_ours]}")
    print(f"  RATIO paper / ours = {tp / to:.2f}")
    print(f"  ours: {info.summary()}")
    print(f"        slices {info.slice_range}, crop (image px) {info.crop_box}, network inputs "
          f"{[tuple(s) for s in info.input_shapes]}, analysis {info.seconds_analysis:.2f} s, "
          f"network {info.seconds_network:.1f} s")
    share = f" = {100 * net_gflops / gflops_ref:.0f}% of matmul ({gflops_ref:.0f})" if gflops_ref else ""
    print(f"  network part of ours: {net_gflops:.0f} GFLOP/s{share}")
    body = _body(ct)
    skipped = ~run.any(axis=(1, 2))
    print(f"  masks: DICE(ours, paper) = {dice(mask, m_paper):.5f}; voxels paper {int(m_paper.sum())}, "
          f"ours {int(mask.sum())}; where ours used the network: DICE {dice(mask[run], m_paper[run]):.5f}")
    in_run_slices = ~skipped[:, None, None]
    print(f"         differing voxels {int(flips.sum())}: where ours used the network "
          f"{int((flips & run & body).sum())} in the "
          f"body + {int((flips & run & ~body).sum())} outside it (crop context); where it did not: "
          f"{int((flips & ~run & body & in_run_slices).sum())} in the body beside the window, "
          f"{int((flips & ~run & body & ~in_run_slices).sum())} in the body in skipped slices, "
          f"{int((flips & ~run & ~body).sum())} outside the body")
    if (flips & run).any():
        print(f"         where ours used the network, differing voxels' paper probability: |p - 0.5| <= "
              f"{np.abs(p_paper[flips & run] - 0.5).max():.3f}")
    print(f"  probabilities where ours used the network: max |diff| {diff[run].max():.2e}, 99.9th pct "
          f"{np.percentile(diff[run], 99.9):.1e}, share > 0.01: {100 * (diff[run] > 0.01).mean():.3f}%; "
          f"inside the body {diff[run & body].max():.2e}")
    print(f"  inside the body: DICE {dice(mask[body], m_paper[body]):.5f}; the paper's positives outside "
          f"the body: {int(m_paper[~body].sum())}")
    near = _near_air(ct, body, info.slice_range)
    undecided = np.abs(p_paper - 0.5) < 0.15
    print(f"  where a pneumothorax can be (air inside the body + {NEAR_AIR_PX} px, slices run; "
          f"{100 * near.mean():.1f}% of voxels): DICE {dice(mask[near], m_paper[near]):.5f}, differing voxels "
          f"{int((flips & near).sum())}, of them with |p - 0.5| >= 0.15: {int((flips & near & ~undecided).sum())}")
    if truth is not None:
        print(f"  against the phantom's truth: Dice paper {dice(m_paper, truth):.4f}, ours {dice(mask, truth):.4f}")
    return {"name": name, "paper_s": tp, "ours_s": to, "ratio": tp / to, "dice": dice(mask, m_paper),
            "dice_body": dice(mask[body], m_paper[body]), "dice_run": dice(mask[run], m_paper[run]),
            "dice_near": dice(mask[near], m_paper[near]), "flips_near": int((flips & near).sum()),
            "net_gflops": net_gflops, "info": info.as_dict()}


NEAR_AIR_PX = 4


def _near_air(ct, body, slice_range) -> np.ndarray:
    """Air inside the body (below BODY_HU, -400) and NEAR_AIR_PX pixels of rim, in the slices that ran."""
    from scipy import ndimage

    from napari_pneumoseg.ct.air import BODY_HU

    near = np.zeros(body.shape, bool)
    if slice_range is not None:
        k0, k1 = slice_range[0], slice_range[1] + 1
        air = body[k0:k1] & (ct.hu[k0:k1] < BODY_HU)
        near[k0:k1] = ndimage.binary_dilation(air, structure=np.ones((1, 3, 3), bool), iterations=NEAR_AIR_PX)
    return near


def _body(ct) -> np.ndarray:
    """The body at full resolution, as the fast path finds it (table cut off, edges closed)."""
    from napari_pneumoseg.ct.air import TABLE_OPENING_MM, body_mask

    radius = max(1, int(round(TABLE_OPENING_MM / min(ct.spacing[1:]))))
    return body_mask(ct.hu, opening=radius, close_edges=True)


RSS_CHILD = r"""
import json, sys, time, numpy as np, psutil
from napari_pneumoseg import CTVolume
from napari_pneumoseg.model import load_model, segment, ModelBundle
path, model, spacing = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
bundle = ModelBundle.build("resnet50") if model == "random" else load_model(model)
ct = CTVolume(np.load(path, mmap_mode="r"), spacing=spacing)
before = psutil.Process().memory_info().rss
t = time.perf_counter()
info = segment(ct, bundle).info
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"rss_before_gb": before / 1e9, "peak_rss_gb": hwm / 1e9,
                  "seconds": time.perf_counter() - t, "summary": info.summary()}))
"""


def peak_rss(n_slices: int, model: str) -> None:
    from napari_pneumoseg.phantom import make_phantom

    p = make_phantom(seed=2000, side="right", size="large", n_slices=n_slices)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hu.npy"
        np.save(path, p.ct.hu)
        spacing = list(p.ct.spacing)
        del p
        with Load() as load:
            out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path), model, json.dumps(spacing)],
                                 capture_output=True, text=True)
    if out.returncode:
        print(f"\n== memory: child failed:\n{out.stderr[-2000:]}")
        return
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n== memory: segmenting a {n_slices} x 512 x 512 phantom (memory-mapped .npy), fresh process")
    print(f"  PEAK RSS {r['peak_rss_gb']:.2f} GB (model loaded, before segment(): {r['rss_before_gb']:.2f} GB); "
          f"{r['seconds']:.0f} s; {r['summary']}   [{load.text()}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the demo's, else random weights)")
    parser.add_argument("--real", default=str(REAL_CT), help="DICOM folder of the real chest CT")
    parser.add_argument("--real-slices", type=int, default=None, help="use N central slices of the real CT")
    parser.add_argument("--phantom-slices", type=int, default=80)
    parser.add_argument("--rss-slices", type=int, default=300)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS run")
    parser.add_argument("--repeats", type=int, default=1, help="time each path R times, keep the best")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pixel-mm", type=float, default=2.8,
                        help="pixel size the trained model saw (the third study's); the demo's is 2.8")
    args = parser.parse_args()

    from napari_pneumoseg import read_ct
    from napari_pneumoseg.model import ModelBundle, load_model
    from napari_pneumoseg.phantom import make_phantom

    model = args.model or (str(DEMO_MODEL) if DEMO_MODEL.exists() else "random")
    print(f"{os.cpu_count()} CPUs; TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    before = matmul_gflops()
    bundle = ModelBundle.build("resnet50") if model == "random" else load_model(model)
    print(f"model: {model} ({bundle.architecture.get('backbone', '?')}, preprocessing {bundle.preprocessing})"
          + ("  -- random weights: compare probabilities, masks mean little" if model == "random" else ""))
    print(f"numpy float32 matmul before: {before:.1f} GFLOP/s")

    results = []
    real = read_ct(args.real)
    if args.real_slices:
        start = max(0, (real.shape[0] - args.real_slices) // 2)
        real.hu = real.hu[start : start + args.real_slices]
    results.append(compare(f"real chest CT {Path(args.real).name}", real, bundle, repeats=args.repeats,
                           batch_size=args.batch_size, gflops_ref=before))
    ph = make_phantom(seed=1000, side="left", size="moderate", n_slices=args.phantom_slices)
    results.append(compare("phantom (seed 1000, left, moderate)", ph.ct, bundle, truth=ph.truth,
                           repeats=args.repeats, batch_size=args.batch_size, gflops_ref=before))
    del ph
    if model != "random":
        # The demo model saw 2.8 mm pixels: at 0.7 mm it is out of its depth.
        # Same answer where it works: its pixel size, in a wider field of view.
        side = int(round(500.0 / args.pixel_mm))  # a 50 cm field of view
        ph = make_phantom(seed=1001, side="both", size="moderate", n_slices=48, shape_yx=(side, side),
                          spacing=(6.25, args.pixel_mm, args.pixel_mm))
        results.append(compare("phantom at the model's training pixel size (seed 1001, both, moderate)",
                               ph.ct, bundle, truth=ph.truth, repeats=args.repeats,
                               batch_size=args.batch_size, gflops_ref=before))
    after = matmul_gflops()
    ref = max(before, after)
    print(f"\nnumpy float32 matmul: {before:.1f} GFLOP/s before, {after:.1f} after (best {ref:.1f})")
    for r in results:
        print(f"  {r['name']}: ratio {r['ratio']:.2f}, Dice {r['dice']:.5f} (where ours used the network "
              f"{r['dice_run']:.5f}, inside the body {r['dice_body']:.5f}, where a pneumothorax can be "
              f"{r['dice_near']:.5f} with {r['flips_near']} voxels differing), network {r['net_gflops']:.0f} "
              f"GFLOP/s = {100 * r['net_gflops'] / ref:.0f}% of matmul")
    if not args.no_rss:
        peak_rss(args.rss_slices, model)


if __name__ == "__main__":
    main()

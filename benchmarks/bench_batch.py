"""Batch work on Dask: throughput by workers, network cost per study against ``pneumoseg segment``, peak memory.

Usage:
    python benchmarks/bench_batch.py [--parts pleural network memory] [--studies 20]
        [--slices 60] [--size 256] [--work bench-batch]

- ``pleural``: ``batch.run(method="pleural-air")`` over ``--studies`` phantom studies (``--slices``
  slices of ``--size``^2) on a LocalCluster of 1 and then 2 workers (made before the clock starts):
  studies/min each and the speed-up.
- ``network``: the paper's Unet-ResNet50 (untrained: the cost is the same) over the same studies on
  1 worker, per study, against ``pneumoseg segment`` on one of them (a fresh process: TensorFlow's
  import and the model's load included) and against the same calls in one process with the model
  already loaded (read, segment, write).
- ``memory``: one 300-slice 512 x 512 study, each method on a fresh 1-worker cluster: the worker's
  peak resident memory (``getrusage`` maxrss).
One run; figures go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def make_studies(root: Path, n: int, slices: int, size: int) -> Path:
    from napari_pneumoseg import make_phantom, write_phantom_case

    if root.is_dir() and len(list(root.glob("*/ct"))) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    sides, sizes = ("left", "right", "both"), ("small", "moderate", "large")
    for k in range(n):
        p = make_phantom(seed=500 + k, side=sides[k % 3], size=sizes[(k // 3) % 3], n_slices=slices,
                         shape_yx=(size, size))
        write_phantom_case(p, root / f"study{k:02d}")
    return root


def timed_run(root: Path, out: Path, workers: int, **kw) -> tuple[float, float, object]:
    """(seconds to start the cluster, seconds of the batch on it, summary)."""
    from distributed import Client

    from napari_pneumoseg.batch import local_cluster, run

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    cluster = local_cluster(workers)
    client = Client(cluster)
    client.wait_for_workers(workers)
    t1 = time.perf_counter()
    try:
        summary = run(root, out, scheduler=client, **kw)
        t2 = time.perf_counter()
        peak = client.run(_peak_rss_mb)
    finally:
        client.close()
        cluster.close()
    summary.peak_rss_mb = max(peak.values())
    return t1 - t0, t2 - t1, summary


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def task_seconds(out: Path) -> list[float]:
    import csv

    with open(out / "results.csv", newline="") as fh:
        return [float(r["seconds"]) for r in csv.DictReader(fh)]


def part_pleural(root: Path, work: Path, n: int) -> None:
    rates = {}
    for workers in (1, 2):
        start, secs, s = timed_run(root, work / f"out-pleural-{workers}", workers, method="pleural-air")
        assert s.done == n, s.summary()
        rates[workers] = n / secs * 60
        print(f"pleural air, {workers} worker(s): cluster up in {start:.1f} s; {n} studies in {secs:.1f} s = "
              f"{rates[workers]:.1f} studies/min; median task {statistics.median(task_seconds(s.out)):.2f} s",
              flush=True)
    print(f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x (goal >= 1.7x)", flush=True)


def part_network(root: Path, work: Path, n: int) -> None:
    from napari_pneumoseg import measure, read_ct
    from napari_pneumoseg.io.masks import write_mask
    from napari_pneumoseg.model import ModelBundle, load_model, save_model, segment

    model = work / "resnet50-untrained.pnxmodel"
    if not model.is_file():
        save_model(ModelBundle.build("resnet50", provenance={"purpose": "bench_batch"}), model)
    start, secs, s = timed_run(root, work / "out-network", 1, method="network", model=model)
    assert s.done == n, s.summary()
    per_task = task_seconds(s.out)
    print(f"network, 1 worker: cluster up in {start:.1f} s; {n} studies in {secs:.1f} s = {secs / n:.2f} s per "
          f"study; task median {statistics.median(per_task):.2f} s, first {per_task[0]:.2f} s "
          f"(includes the one model load), min {min(per_task):.2f} s", flush=True)
    study = sorted(root.glob("*/ct"))[1]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_pneumoseg.cli", "segment", str(study), "--model", str(model),
                    "--out", str(work / "cli.seg.nrrd"), "--force"], check=True, capture_output=True)
    cli = time.perf_counter() - t0
    bundle = load_model(model)
    segment(read_ct(study), bundle)  # warm: TensorFlow's first call builds its graph
    times = []
    for k in range(3):
        t0 = time.perf_counter()
        ct = read_ct(study)
        mask = segment(ct, bundle).mask
        write_mask(mask, work / f"warm-{k}-{time.time_ns()}.seg.nrrd", ct)
        times.append(time.perf_counter() - t0)
    warm = statistics.median(times)
    times = []
    for k in range(3):  # what a batch task does: also the volumes per side and % of hemithorax
        t0 = time.perf_counter()
        ct = read_ct(study)
        mask = segment(ct, bundle).mask
        measure(mask, ct=ct, sizing=False)
        write_mask(mask, work / f"warm-m-{k}-{time.time_ns()}.seg.nrrd", ct)
        times.append(time.perf_counter() - t0)
    warm_m = statistics.median(times)
    print(f"pneumoseg segment on one study (fresh process): {cli:.1f} s; the same calls with the model loaded: "
          f"{warm:.2f} s, and with measure(): {warm_m:.2f} s", flush=True)
    print(f"batch per study (wall / studies) vs loaded calls: {secs / n / warm:.2f}x, vs loaded calls + measure: "
          f"{secs / n / warm_m:.2f}x; batch task median vs loaded calls + measure: "
          f"{statistics.median(per_task) / warm_m:.2f}x", flush=True)


def part_memory(work: Path) -> None:
    from napari_pneumoseg import make_phantom, write_phantom_case
    from napari_pneumoseg.model import ModelBundle, save_model

    root = work / "big"
    if not (root / "study" / "ct").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        write_phantom_case(make_phantom(seed=7, side="right", size="moderate", n_slices=300, shape_yx=(512, 512)),
                           root / "study")
    model = work / "resnet50-untrained.pnxmodel"
    if not model.is_file():
        save_model(ModelBundle.build("resnet50"), model)
    hu_mb = 300 * 512 * 512 * 4 / 2**20
    for label, kw in (("pleural air", {"method": "pleural-air"}),
                      ("pleural air, measure with sizes", {"method": "pleural-air", "measure": True}),
                      ("network", {"method": "network", "model": model})):
        _, secs, s = timed_run(root, work / "out-big", 1, **kw)
        assert s.done == 1, s.summary()
        print(f"300 x 512 x 512 study, {label}: peak worker RSS {s.peak_rss_mb / 1024:.2f} GB "
              f"(HU as float32 is {hu_mb / 1024:.2f} GB) in {secs:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["pleural", "network", "memory"])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--work", default="bench-batch")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; {args.studies} phantom studies of {args.slices} x {args.size}^2", flush=True)
    if {"pleural", "network"} & set(args.parts):
        root = make_studies(work / "studies", args.studies, args.slices, args.size)
    if "pleural" in args.parts:
        part_pleural(root, work, args.studies)
    if "network" in args.parts:
        part_network(root, work, args.studies)
    if "memory" in args.parts:
        part_memory(work)


if __name__ == "__main__":
    main()

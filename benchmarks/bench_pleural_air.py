"""Pleural air without a model, against the truth of simulated pneumothorax in real CTs, and the network beside it.

Usage:
    python benchmarks/bench_pleural_air.py [--shared ../shared] [--seeds 0 1]
        [--demo-model demo-out/model.pnxmodel] [--real-model bench-real/real+phantoms.pnxmodel]
        [--phantoms 3] [--timing-slices 300]

One run prints one table:

- every real chest CT of ``<shared>/data/real`` as it is (no pneumothorax): the pleural air
  it finds (false positives), seconds;
- simulated pneumothorax (``simulate_pneumothorax``) on each of them, both sides, three sizes,
  each seed: Dice, volume error and false-positive mL of :func:`find_pleural_air`, and the
  same for each network model given (``segment``);
- phantoms (seed 0.., left, right, both): Dice and volume error;
- speed and memory on a 300-slice 512 x 512 study (the 2.5 mm real CT with a large simulated
  pneumothorax, its slices resampled to 300 by nearest neighbour): seconds, and the peak of
  memory allocated while it runs (tracemalloc: NumPy's arrays included; the CT itself not).

The real-plus-phantoms model of ``bench_real_anatomy.py`` never saw the TCIA patient; its
figures on the two other CTs are on patients it was trained on (other seeds), so they flatter it.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np

SIZES = ("small", "moderate", "large")
SIDES = ("left", "right")
CHESTS = ("chest_ct_tcia_A0001_5mm", "chest_ct_lidc_idri_1011_2p5mm", "chest_ct_4dlung_113_3mm")


def scores(mask, truth, voxel_ml) -> tuple[float, float, float]:
    """Dice, volume error (%) and false-positive mL of a mask against its truth."""
    m, t = mask > 0, truth > 0
    inter = float((m & t).sum())
    dice = 2.0 * inter / max(float(m.sum() + t.sum()), 1.0)
    err = 100.0 * (float(m.sum()) - float(t.sum())) / max(float(t.sum()), 1.0)
    return dice, err, float((m & ~t).sum()) * voxel_ml


def network(models, ct):
    from napari_pneumoseg import segment

    return {name: segment(ct, model).mask for name, model in models.items()}


def timing_study(ct_dir: Path, n: int):
    """The 2.5 mm CT with a large simulated pneumothorax, resampled (nearest) to ``n`` slices."""
    from napari_pneumoseg import CTVolume, read_ct, simulate_pneumothorax

    ct = read_ct(ct_dir)
    case = simulate_pneumothorax(ct, side="right", size="large", seed=0)
    idx = np.linspace(0, ct.shape[0] - 1, n).round().astype(int)
    hu = np.ascontiguousarray(case.ct.hu[idx])
    spacing = (ct.spacing[0] * ct.shape[0] / n, ct.spacing[1], ct.spacing[2])
    return CTVolume(hu=hu, spacing=spacing, origin=ct.origin, direction=ct.direction, metadata=ct.metadata)


def main() -> None:
    from napari_pneumoseg import find_pleural_air, load_model, make_phantom, read_ct, simulate_pneumothorax

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--demo-model", default=None, help="the demo's model (phantoms only)")
    parser.add_argument("--real-model", default=None, help="bench_real_anatomy's model (real + phantoms)")
    parser.add_argument("--phantoms", type=int, default=3)
    parser.add_argument("--timing-slices", type=int, default=300)
    args = parser.parse_args()

    real = Path(args.shared) / "data" / "real"
    models = {}
    if args.demo_model:
        models["demo"] = load_model(args.demo_model)
    if args.real_model:
        models["real+ph"] = load_model(args.real_model)
    names = list(models)

    head = ["case", "truth mL", "PA Dice", "PA vol err %", "PA FP mL", "PA s"]
    for n in names:
        head += [f"{n} Dice", f"{n} vol err %", f"{n} FP mL"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    by_size: dict[str, list] = {s: [] for s in SIZES}
    net_by_size: dict[tuple, list] = {}
    fp_real = {}

    def row(label, truth_ml, pa_scores, seconds, net_scores):
        cells = [label, f"{truth_ml:.0f}", f"{pa_scores[0]:.3f}", f"{pa_scores[1]:+.1f}", f"{pa_scores[2]:.1f}",
                 f"{seconds:.1f}"]
        for n in names:
            d, e, fp = net_scores[n]
            cells += [f"{d:.3f}", f"{e:+.1f}", f"{fp:.1f}"]
        print("| " + " | ".join(cells) + " |", flush=True)

    for name in CHESTS:
        ct = read_ct(real / name)
        t = time.perf_counter()
        pa = find_pleural_air(ct)
        seconds = time.perf_counter() - t
        fp_real[name] = pa.volume_ml["total"]
        net = {n: (float("nan"), float("nan"), float(m.sum()) * ct.voxel_volume_ml)
               for n, m in network(models, ct).items()}
        row(f"{name} as it is", 0.0, (float("nan"), float("nan"), pa.volume_ml["total"]), seconds, net)
        for side in SIDES:
            for size in SIZES:
                for seed in args.seeds:
                    case = simulate_pneumothorax(ct, side=side, size=size, seed=seed)
                    t = time.perf_counter()
                    pa = find_pleural_air(case.ct)
                    seconds = time.perf_counter() - t
                    s = scores(pa.mask, case.truth, ct.voxel_volume_ml)
                    by_size[size].append(s)
                    net = {n: scores(m, case.truth, ct.voxel_volume_ml) for n, m in network(models, case.ct).items()}
                    for n, v in net.items():
                        net_by_size.setdefault((n, size), []).append(v)
                    row(f"{name} {side} {size} seed {seed}", case.facts["volume_ml"]["total"], s, seconds, net)

    ph_scores = []
    for seed in range(args.phantoms):
        for side in ("left", "right", "both"):
            ph = make_phantom(seed=seed, side=side)
            t = time.perf_counter()
            pa = find_pleural_air(ph.ct)
            seconds = time.perf_counter() - t
            s = scores(pa.mask, ph.truth, ph.ct.voxel_volume_ml)
            ph_scores.append(s)
            net = {n: scores(m, ph.truth, ph.ct.voxel_volume_ml) for n, m in network(models, ph.ct).items()}
            row(f"phantom seed {seed} {side}", float((ph.truth > 0).sum()) * ph.ct.voxel_volume_ml, s, seconds, net)

    print()
    print("Pleural air (no model), simulated cases in real CTs, per size (all CTs, sides, seeds):")
    for size in SIZES:
        d = np.array([v[0] for v in by_size[size]])
        e = np.array([v[1] for v in by_size[size]])
        line = (f"  {size:9s} n={d.size:2d}  Dice mean {d.mean():.3f} min {d.min():.3f}   "
                f"volume error mean {e.mean():+.1f} %, |max| {np.abs(e).max():.1f} %")
        for n in names:
            dn = np.array([v[0] for v in net_by_size[(n, size)]])
            line += f"   {n}: Dice mean {dn.mean():.3f} min {dn.min():.3f}"
        print(line)
    d = np.array([v[0] for v in ph_scores])
    print(f"  phantoms  n={d.size:2d}  Dice mean {d.mean():.3f} min {d.min():.3f}")
    print("False-positive pleural air on the real CTs as they are (mL): "
          + ", ".join(f"{k} {v:.1f}" for k, v in fp_real.items()))

    study = timing_study(real / "chest_ct_lidc_idri_1011_2p5mm", args.timing_slices)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        find_pleural_air(study)
        runs.append(time.perf_counter() - t)
    tracemalloc.start()
    find_pleural_air(study)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"Speed on {study.shape} ({study.hu.dtype}): {', '.join(f'{r:.1f}' for r in runs)} s "
          f"(three runs); peak memory allocated while it runs {peak / 2**20:.0f} MiB (tracemalloc)")


if __name__ == "__main__":
    main()

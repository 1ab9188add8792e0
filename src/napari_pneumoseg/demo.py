"""The whole job end to end on phantoms: write data, train, read, segment, measure, report.

Everything a user would do, through the same public functions, so a newcomer
sees the plugin work on a fresh machine without private data.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

#: Sizes chosen so the full demo trains and runs within ~10 minutes on a 2-core CPU.
#: BatchNorm momentum 0.9 and a patience longer than the time limit: a few minutes of
#: training from scratch is far from the paper's hours, and its early epochs are erratic.
#: Whole 128x128 slices (2.8 mm pixels), four per batch: with the whole chest in view the
#: network stops calling the other lung's border and the airways pneumothorax, and it beat
#: 64 px patches on the held-out phantom in the same time (benchmarks/README.md, "Demo").
#: Real anatomy: simulated pneumothorax in the packaged real chest CT (``real_cases`` for
#: training, one more for the held-out check), all at the phantoms' 2.8 mm pixels.
FULL = dict(n_patients=12, n_slices=48, size=128, backbone="resnet50", patch_size=128,
            batch_size=4, learning_rate=1e-3, max_seconds=380.0, epochs=500,
            steps_per_epoch=100, patience=500, bn_momentum=0.9, positive_fraction=0.5,
            lr_decay=True, real_cases=4, pixel_spacing_mm=2.8)
#: The same path in seconds (tests): tiny phantoms, a small encoder, two short epochs.
QUICK = dict(n_patients=3, n_slices=12, size=64, backbone="resnet18", patch_size=64,
             batch_size=4, learning_rate=1e-3, max_seconds=None, epochs=2,
             steps_per_epoch=2, patience=8, bn_momentum=0.9, positive_fraction=0.35,
             lr_decay=True, real_cases=1, pixel_spacing_mm=5.6)
#: The simulated real cases: (side, size) for training, cycled, and the held-out one.
REAL_TRAIN = [("left", "moderate"), ("right", "large"), ("both", "small"), ("right", "moderate")]
REAL_HELDOUT = ("left", "large")


@dataclass
class DemoResult:
    dice: float
    true_ml: float
    measured_ml: float
    real_dice: float
    real_true_ml: float
    real_measured_ml: float
    files: dict
    seconds: float
    train_seconds: float
    epochs: int


def run_demo(out: Union[str, os.PathLike] = "demo-out", *, quick: bool = False,
             overwrite: bool = False, log: Callable[[str], None] = print,
             progress: Optional[Callable] = None) -> DemoResult:
    """Run the demo into ``out``; returns Dice and volumes of the held-out phantom."""
    from .ct import read_ct
    from .figures import save_case_figure
    from .io import read_mask, write_csv, write_mask
    from .measure import measure
    from .model import load_model, segment
    from .phantom import make_phantom, write_phantom_case
    from .training import train
    from .training.curves import save_curves_png

    cfg = QUICK if quick else FULL
    start = time.monotonic()
    out = Path(out)
    files = {name: out / name for name in
             ("model.pnxmodel", "heldout_mask.nrrd", "measurements.csv", "training_curves.png",
              "heldout_figure.png")}
    files["real_heldout_figure.png"] = out / "real_heldout_figure.png"
    existing = [p for p in files.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already has demo results ({existing[0].name}); "
                              "choose another folder or pass --force")
    out.mkdir(parents=True, exist_ok=True)

    # 1. A phantom dataset in the layout `pneumoseg train` reads, and one held-out patient.
    dataset = out / "dataset"
    sides, sizes = ["left", "right", "both"], ["small", "moderate", "large"]
    log(f"1/5 writing {cfg['n_patients']} phantom patients (DICOM + NRRD) to {dataset}")
    for k in range(cfg["n_patients"]):
        folder = dataset / f"patient{k + 1:03d}"
        if folder.exists() and overwrite:
            import shutil

            shutil.rmtree(folder)
        p = make_phantom(seed=k, side=sides[k % 3], size=sizes[(k // 3) % 3],
                         n_slices=cfg["n_slices"], shape_yx=(cfg["size"], cfg["size"]))
        write_phantom_case(p, folder)
    heldout_dir = out / "heldout"
    if heldout_dir.exists() and overwrite:
        import shutil

        shutil.rmtree(heldout_dir)
    heldout = make_phantom(seed=1000, side="left", size="moderate", n_slices=cfg["n_slices"],
                           shape_yx=(cfg["size"], cfg["size"]))
    write_phantom_case(heldout, heldout_dir)

    # Real anatomy: the packaged real chest CT with simulated pneumothorax (one patient only, so
    # the held-out case is this patient's anatomy with another pneumothorax, not a new patient).
    from .data import load_sample_ct
    from .simulate import simulate_pneumothorax, write_simulated_case

    real_ct = load_sample_ct()
    log(f"    + {cfg['real_cases']} simulated pneumothorax cases in a real chest CT "
        f"({real_ct.metadata.get('source', 'packaged sample')})")
    for k in range(cfg["real_cases"]):
        side, size = REAL_TRAIN[k % len(REAL_TRAIN)]
        folder = dataset / f"real{k + 1:03d}"
        if folder.exists() and overwrite:
            import shutil

            shutil.rmtree(folder)
        write_simulated_case(simulate_pneumothorax(real_ct, side=side, size=size, seed=k), folder)
    real_heldout = simulate_pneumothorax(real_ct, side=REAL_HELDOUT[0], size=REAL_HELDOUT[1], seed=1000)

    # 2. Train the paper's network (small slices or patches, so a CPU can do it).
    what = (f"whole {cfg['size']}px slices" if cfg["patch_size"] >= cfg["size"]
            else f"{cfg['patch_size']}px patches")
    log(f"2/5 training Unet-{cfg['backbone']} on {what} "
        f"(at most {cfg['epochs']} epochs of {cfg['steps_per_epoch']} batches"
        + (f", about {cfg['max_seconds'] / 60:.1f} min" if cfg["max_seconds"] else "") + ")")
    t0 = time.monotonic()

    def on_epoch(epoch, logs):
        log(f"    epoch {epoch}: loss {logs['loss']:.4f}  val_loss {logs['val_loss']:.4f}  "
            f"val_dice {logs.get('val_dice', float('nan')):.3f}"
            f"{'  (saved)' if logs.get('saved') else ''}")

    result = train(dataset, files["model.pnxmodel"], epochs=cfg["epochs"],
                   batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"],
                   patience=cfg["patience"], patch_size=cfg["patch_size"],
                   backbone=cfg["backbone"], steps_per_epoch=cfg["steps_per_epoch"],
                   max_seconds=cfg["max_seconds"], bn_momentum=cfg["bn_momentum"],
                   positive_fraction=cfg["positive_fraction"], lr_decay=cfg["lr_decay"],
                   pixel_spacing_mm=cfg["pixel_spacing_mm"], evaluate=False, overwrite=overwrite,
                   progress=progress, on_epoch=on_epoch)
    train_seconds = time.monotonic() - t0
    save_curves_png(result.history, files["training_curves.png"], overwrite=overwrite)

    # 3. Open the held-out patient as a user would: DICOM through the reader, truth from NRRD.
    log("3/5 reading the held-out phantom through the DICOM reader")
    ct = read_ct(heldout_dir / "ct")
    truth = read_mask(heldout_dir / "truth.nrrd", like=ct)

    # 4. Segment it with the trained model (whole slices).
    log("4/5 segmenting it")
    bundle = load_model(files["model.pnxmodel"])
    mask = segment(ct, bundle, batch_size=4, progress=progress).mask
    write_mask(mask, files["heldout_mask.nrrd"], ct, overwrite=overwrite)

    real_mask = segment(real_heldout.ct, bundle, batch_size=4, progress=progress).mask

    # 5. Measure against the truth and report.
    log("5/5 measuring")
    m = measure(mask, ct=ct, truth=truth)
    rm = measure(real_mask, ct=real_heldout.ct, truth=real_heldout.truth)
    write_csv([{"case": "heldout phantom (seed 1000, left, moderate)", **m.as_row()},
               {"case": "real chest CT, simulated pneumothorax (seed 1000, left, large)", **rm.as_row()}],
              files["measurements.csv"], overwrite=overwrite)
    save_case_figure(ct.hu, mask, files["heldout_figure.png"], truth=truth, spacing=ct.spacing,
                     title=f"Held-out phantom: Dice {m.dice:.3f}", overwrite=overwrite)
    save_case_figure(real_heldout.ct.hu, real_mask, files["real_heldout_figure.png"],
                     truth=real_heldout.truth, spacing=real_heldout.ct.spacing,
                     title=f"Real CT, simulated pneumothorax: Dice {rm.dice:.3f}", overwrite=overwrite)
    seconds = time.monotonic() - start
    log("")
    log(f"Held-out phantom: Dice {m.dice:.4f} (per slice {m.dice_per_slice:.4f}), "
        f"precision {m.precision:.4f}, recall {m.recall:.4f}")
    log(f"Pneumothorax volume: true {m.truth_volume_ml:.1f} mL, measured {m.volume_ml:.1f} mL "
        f"(left {m.left_ml:.1f} mL, right {m.right_ml:.1f} mL; the phantom's continuous volume is "
        f"{heldout.info['continuous_volume_ml']:.1f} mL)")
    log(f"Real chest CT with a simulated pneumothorax (the training's patient, another "
        f"pneumothorax): Dice {rm.dice:.4f}, true {rm.truth_volume_ml:.1f} mL, measured "
        f"{rm.volume_ml:.1f} mL")
    log(f"Trained {len(result.history)} epoch(s) in {train_seconds:.0f} s ({result.stopped}); "
        f"whole demo {seconds:.0f} s")
    log("Files: " + ", ".join(str(p) for p in files.values()))
    return DemoResult(dice=m.dice, true_ml=m.truth_volume_ml, measured_ml=m.volume_ml,
                      real_dice=rm.dice, real_true_ml=rm.truth_volume_ml, real_measured_ml=rm.volume_ml,
                      files={k: str(v) for k, v in files.items()}, seconds=seconds,
                      train_seconds=train_seconds, epochs=len(result.history))

"""The ``pneumoseg`` command line: the plugin's work for scripts and batch jobs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


class TextProgress:
    """A one-line text progress bar for ``progress(done, total, text)`` callbacks."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, text: str = "") -> None:
        frac = done / total if total else 0.0
        filled = int(round(frac * self.width))
        elapsed = time.monotonic() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {100 * frac:5.1f}% {elapsed:6.1f}s {text[:40]:<40}")
        if total and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _cmd_info(args) -> int:
    from .ct import read_ct
    from .ct.air import BODY_HU, internal_air_mask
    from .pleural import find_pleural_air

    ct = read_ct(args.ct, series_uid=args.series, progress=TextProgress("reading"))
    meta = ct.metadata
    print(f"CT: {args.ct}")
    print(f"  series      {meta.get('series_instance_uid') or '(no UID)'} {meta.get('series_description', '')}")
    print(f"  shape z,y,x {ct.shape}")
    print(f"  spacing mm  {tuple(round(s, 4) for s in ct.spacing)} (z from slice positions)")
    print(f"  origin LPS  {tuple(round(o, 2) for o in ct.origin)}")
    print(f"  slice axis  {[round(float(v), 3) for v in ct.direction[0]]} (LPS)")
    print(f"  HU range    {ct.hu.min():.0f} .. {ct.hu.max():.0f}")
    air = internal_air_mask(ct.hu)
    print(f"  air inside the body (HU < {BODY_HU:g}): {air.sum() * ct.voxel_volume_ml:.1f} mL")
    for w in ct.warnings:
        print(f"  warning: {w}")
    try:
        found = find_pleural_air(ct, progress=TextProgress("pleural air"))
    except ValueError as exc:  # e.g. not axial: the rest of the report still stands
        print(f"  pleural air: not looked for: {exc}")
        return 0
    print(f"  {_pleural_line(found)}")
    for w in found.warnings:
        print(f"  pleural air warning: {w}")
    return 0


def _pleural_line(found) -> str:
    """``pleural air (no model): left 1.0 mL in 1 pocket, right ...``: volumes and pockets kept per side."""
    kept = {side: sum(1 for p in found.pockets if p["kept"] and p["side"] == side)
            for side in ("left", "right")}
    v = found.volume_ml
    sides = ", ".join(f"{side} {v[side]:.1f} mL in {kept[side]} pocket{'s' * (kept[side] != 1)}"
                      for side in ("left", "right"))
    return f"pleural air (no model): {sides}, total {v['total']:.1f} mL"


#: ``segment``'s options only the network uses (destination: default), for ``--method pleural-air``'s warning.
NETWORK_ONLY = {"model": None, "batch_size": 4, "threshold": None, "device": "auto",
                "no_crop": False, "all_slices": False}


def _cmd_segment(args) -> int:
    from .ct import read_ct
    from .io.masks import mask_format, write_mask

    network = args.method == "network"
    if network and not args.model:
        raise ValueError("--model is required with --method network (the default); or use "
                         "--method pleural-air, which needs no model")
    ignored = [] if network else [f"--{dest.replace('_', '-')}" for dest, default in NETWORK_ONLY.items()
                                  if getattr(args, dest) != default]
    if ignored:
        verb = "applies" if len(ignored) == 1 else "apply"
        print(f"warning: {', '.join(ignored)} only {verb} to --method network; ignored", file=sys.stderr)
    out = Path(args.out)
    mask_format(out, for_writing=True)  # a bad suffix fails before minutes of work
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    if network:
        from .model import configure_device

        configure_device(args.device)
    ct = read_ct(args.ct, series_uid=args.series, progress=TextProgress("reading   "))
    for w in ct.warnings:
        print(f"warning: {w}", file=sys.stderr)
    mask = _network_mask(args, ct) if network else _pleural_air_mask(ct)
    write_mask(mask, out, ct, overwrite=args.force)
    from .measure import measure

    m = measure(mask, ct=ct)
    print(f"wrote {out}: {m.voxels} voxels, {m.volume_ml:.1f} mL "
          f"(left {_ml(m.left_ml)}, right {_ml(m.right_ml)})")
    return 0


def _network_mask(args, ct):
    """The network's mask of ``ct`` (``segment --method network``); prints what ran."""
    from .model import load_model, segment

    bundle = load_model(args.model)
    for w in bundle.warnings:
        print(f"warning: {w}", file=sys.stderr)
    result = segment(ct, bundle, batch_size=args.batch_size, threshold=args.threshold,
                     crop_chest=not args.no_crop, skip_slices=not args.all_slices,
                     progress=TextProgress("segmenting"))
    print(result.info.summary())
    return result.mask


def _pleural_air_mask(ct):
    """The pleural air found in ``ct`` without a model (``segment --method pleural-air``)."""
    from .pleural import find_pleural_air

    found = find_pleural_air(ct, progress=TextProgress("pleural air"))
    for w in found.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(_pleural_line(found))
    return found.mask


def _ml(v) -> str:
    return "n/a" if v is None else f"{v:.1f} mL"


def _cmd_train(args) -> int:
    from .model import configure_device
    from .training import train

    configure_device(args.device)
    bar = TextProgress("training  ")

    def on_epoch(epoch, logs):
        print(f"\nepoch {epoch}: loss {logs.get('loss', float('nan')):.4f} "
              f"val_loss {logs.get('val_loss', float('nan')):.4f} "
              f"val_dice {logs.get('val_dice', float('nan')):.4f}"
              + (" (saved)" if logs.get("saved") else ""), file=sys.stderr)

    result = train(args.dataset, args.out, epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, patience=args.patience, split=args.split,
                   seed=args.seed, patch_size=args.patch_size, augment=not args.no_augment,
                   backbone=args.backbone, encoder_weights=args.encoder_weights,
                   steps_per_epoch=args.steps_per_epoch, overwrite=args.force,
                   pixel_spacing_mm=_pixel_mm(args.pixel_mm), init_model=args.init, resume=args.resume,
                   max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                   progress=bar, on_epoch=on_epoch)
    print(f"\n{result.stopped} after {len(result.history)} epoch(s), best epoch "
          f"{result.best_epoch}; model: {result.model_path}; {result.seconds:.0f} s")
    print_table(result.table)
    return 0 if result.model_path else 1


def _cmd_add_case(args) -> int:
    from .ct import read_ct
    from .io.masks import read_mask
    from .training import add_case

    ct = read_ct(args.ct, series_uid=args.series, progress=TextProgress("reading   "))
    mask = read_mask(args.mask, like=ct)
    provenance = {"mask_file": str(Path(args.mask).resolve()), "ct": str(Path(args.ct).resolve())}
    if args.note:
        provenance["note"] = args.note
    folder = add_case(args.dataset, ct, mask, patient_id=args.patient, provenance=provenance,
                      overwrite=args.force, progress=TextProgress("writing   "))
    print(f"added {folder}: {int((mask != 0).sum())} mask voxels, "
          f"{float((mask != 0).sum()) * ct.voxel_volume_ml:.1f} mL")
    return 0


def _pixel_mm(value: str):
    """``--pixel-mm``: "auto", "native" or a number of mm (train()'s ``pixel_spacing_mm``)."""
    if value == "auto":
        return "auto"
    if value == "native":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--pixel-mm must be 'auto', 'native' or a number of mm, got {value!r}") from None


def print_table(table: dict) -> None:
    """The paper's Table 2 layout: one row per set."""
    if not table:
        return
    cols = ["loss", "auc", "binary_accuracy", "iou", "precision", "recall", "dice",
            "dice_per_slice", "jaccard", "tp", "tn", "fp", "fn"]
    print("set        " + " ".join(f"{c[:10]:>10}" for c in cols))
    for name, row in table.items():
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(f"{'':>10}" if v is None else f"{v:>10d}" if isinstance(v, int)
                         else f"{v:>10.4f}")
        print(f"{name:<10} " + " ".join(cells))


def _cmd_make_phantoms(args) -> int:
    from .phantom import make_phantom, write_phantom_case

    root = Path(args.out_dir)
    sides, sizes = ["left", "right", "both"], ["small", "moderate", "large"]
    real = _real_case_plan(args.real or [], args.real_per_ct, args.seed)
    targets = [root / f"patient{k + 1:03d}" for k in range(args.n)] + [root / name for _, name, _ in real]
    if not args.force:  # fail before minutes of work, not halfway through the dataset
        for folder in targets:
            _refuse_existing(folder)
    root.mkdir(parents=True, exist_ok=True)
    bar = TextProgress("phantoms  ")
    for k in range(args.n):
        p = make_phantom(seed=args.seed + k, side=sides[k % 3], size=sizes[(k // 3) % 3],
                         n_slices=args.slices, shape_yx=(args.size, args.size))
        write_phantom_case(p, root / f"patient{k + 1:03d}", overwrite=args.force)
        bar(k + 1, args.n, f"patient{k + 1:03d} {p.info['side']} {p.info['volume_ml']:.0f} mL")
    if real:
        from .ct import read_ct
        from .simulate import simulate_pneumothorax, write_simulated_case

        for ct_dir, names_params in _group_by_source(real):
            ct = read_ct(ct_dir, progress=TextProgress("reading   "))
            for w in ct.warnings:
                print(f"warning: {ct_dir}: {w}", file=sys.stderr)
            for name, params in names_params:
                case = simulate_pneumothorax(ct, **params)
                write_simulated_case(case, root / name, overwrite=args.force)
                print(f"{name}: {_facts_line(case.facts)}")
    print(f"wrote {args.n} phantom patients" + (f" and {len(real)} simulated real cases" if real else "")
          + f" to {root}")
    return 0


def _real_case_plan(ct_dirs: Sequence[str], per_ct: int, seed: int) -> list[tuple[str, str, dict]]:
    """(CT folder, patient folder name, simulate arguments) of each simulated real case.

    Sides cycle left, right, both and sizes small, moderate, large so that
    every combination appears within nine cases of one CT; seeds count up
    from ``seed``. Folders are ``real-<source folder name>-<k>``, made unique
    when two sources share a name.

    Examples
    --------
    >>> [(n, p["side"], p["size"], p["seed"]) for _, n, p in _real_case_plan(["/d/ctA"], 3, 5)]
    [('real-ctA-1', 'left', 'small', 5), ('real-ctA-2', 'right', 'moderate', 6), ('real-ctA-3', 'both', 'large', 7)]
    """
    sides, sizes = ("left", "right", "both"), ("small", "moderate", "large")
    if per_ct < 1 and ct_dirs:
        raise ValueError(f"--real-per-ct must be at least 1, got {per_ct}")
    plan, used = [], set()
    for ct_dir in ct_dirs:
        stem = _slug(Path(ct_dir).resolve().name) or "ct"
        base, n = stem, 2
        while base in used:
            base, n = f"{stem}_{n}", n + 1
        used.add(base)
        for k in range(per_ct):
            params = {"side": sides[k % 3], "size": sizes[(k + k // 3) % 3], "seed": seed + k}
            plan.append((str(ct_dir), f"real-{base}-{k + 1}", params))
    return plan


def _group_by_source(plan):
    """The plan as (CT folder, [(name, params), ...]) in order, so each CT is read once."""
    groups: dict[str, list] = {}
    for ct_dir, name, params in plan:
        groups.setdefault(ct_dir, []).append((name, params))
    return list(groups.items())


def _slug(name: str) -> str:
    """A folder-name-safe version of ``name``: letters, digits, ``._-``; others become ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._")


def _refuse_existing(folder: Path) -> None:
    """FileExistsError if ``folder`` is a file or a non-empty folder (the ``--force`` check)."""
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not empty; pass --force to replace it")


def _sides(value, unit: str, digits: int = 1) -> str:
    """``{left, right, total}`` (or one number) as text: ``left 1.0 mL, right 0.0 mL``."""
    if isinstance(value, dict):
        parts = [f"{k} {v:.{digits}f} {unit}" if isinstance(v, (int, float)) else f"{k} {v}"
                 for k, v in value.items() if v is not None]
        return ", ".join(parts) or "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f} {unit}"
    return "n/a" if value is None else str(value)


def _facts_line(facts: dict) -> str:
    vol = facts.get("volume_ml")
    total = vol.get("total") if isinstance(vol, dict) else vol
    return (f"{_sides(total, 'mL')}; {_sides(facts.get('pct_hemithorax'), '%')} of the hemithorax; "
            f"rim depth {_sides(facts.get('max_rim_depth_mm'), 'mm')}")


def _cmd_simulate(args) -> int:
    from .ct import read_ct
    from .simulate import simulate_pneumothorax, write_simulated_case

    out = Path(args.out_dir)
    if not args.force:
        _refuse_existing(out)
    ct = read_ct(args.ct, series_uid=args.series, progress=TextProgress("reading   "))
    for w in ct.warnings:
        print(f"warning: {w}", file=sys.stderr)
    case = simulate_pneumothorax(ct, side=args.side, size=args.size, seed=args.seed,
                                 progress=TextProgress("simulating"))
    write_simulated_case(case, out, overwrite=args.force, progress=TextProgress("writing   "))
    facts = case.facts
    print(f"simulated {args.side} {args.size} pneumothorax (seed {args.seed}) on {args.ct}")
    print(f"  volume      {_sides(facts.get('volume_ml'), 'mL')}")
    print(f"  hemithorax  {_sides(facts.get('pct_hemithorax'), '%')}")
    print(f"  rim depth   {_sides(facts.get('max_rim_depth_mm'), 'mm')} (deepest)")
    if facts.get("slices") is not None:
        print(f"  slices      {_slices(facts['slices'])} (slice index in the array)")
    print(f"wrote {out / 'ct'} (DICOM), {out / 'truth.seg.nrrd'}, {out / 'facts.json'}")
    return 0


def _slices(value) -> str:
    """The facts' ``slices`` (per side: first and last slice index with air, or None) as text."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_slices(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}-{value[1]}"
    return "none" if value is None else str(value)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    result = run_demo(args.out, quick=args.quick, overwrite=args.force,
                      progress=TextProgress("          "))
    return 0 if result.dice == result.dice else 1  # NaN never expected


def _cmd_report(args) -> int:
    from .ct import read_ct
    from .io.masks import read_mask
    from .report import IDENTIFIERS, write_report

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out}: a report is an .html file")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    show = [s.strip() for s in args.show.split(",") if s.strip()]
    unknown = [s for s in show if s not in IDENTIFIERS]
    if unknown:  # before minutes of work
        raise ValueError(f"--show: unknown identifier(s) {', '.join(unknown)}; choose from {', '.join(IDENTIFIERS)}")
    ct = read_ct(args.ct, series_uid=args.series, progress=TextProgress("reading   "))
    mask = read_mask(args.mask, like=ct)
    truth = None if args.truth is None else read_mask(args.truth, like=ct)
    method = {"mask file": str(Path(args.mask).resolve())}
    if args.method:
        method["method"] = args.method
    write_report(out, ct, mask, truth=truth, show=show, method=method, overwrite=args.force,
                 progress=TextProgress("report    "))
    print(f"wrote {out}")
    return 0


def _cmd_batch(args) -> int:
    from .batch import run

    method = args.method or ("network" if args.model else None)
    if method is None:
        raise ValueError("give --model M.pnxmodel (the network) or --method pleural-air (no model)")
    try:
        summary = run(args.root, args.out, method=method, model=args.model, workers=args.workers,
                      scheduler=args.scheduler, measure=args.measure, format=args.format,
                      batch_size=args.batch_size, threshold=args.threshold, crop_chest=not args.no_crop,
                      skip_slices=not args.all_slices, device=args.device, retries=args.retries,
                      progress=TextProgress("series    "), log=lambda line: print(f"\n{line}", file=sys.stderr))
    except KeyboardInterrupt:
        print(f"\npneumoseg: interrupted; the series finished so far are recorded in {args.out} "
              "(status.jsonl), and a rerun does the rest.", file=sys.stderr)
        return 130
    print(summary.summary())
    return 1 if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumoseg", description="Find and measure pneumothorax on chest CT."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="read a CT series and print its geometry, air volume and "
                                       "the pleural air found without a model")
    info.add_argument("ct", help="DICOM folder or file")
    info.add_argument("--series", default=None, help="SeriesInstanceUID to read")
    info.set_defaults(func=_cmd_info)

    seg = sub.add_parser("segment", help="segment pneumothorax and write the mask")
    seg.add_argument("ct", help="DICOM folder or file")
    seg.add_argument("--method", choices=["network", "pleural-air"], default="network",
                     help="network: the trained model (--model); pleural-air: pleural air from the "
                          "CT's HU alone, no model (default network)")
    seg.add_argument("--model", default=NETWORK_ONLY["model"],
                     help=".pnxmodel (or a Keras .keras/.h5) file; required with --method network")
    seg.add_argument("--out", required=True,
                     help="mask file: .nrrd, .seg.nrrd, .nii, .nii.gz or .dcm (DICOM-SEG)")
    seg.add_argument("--series", default=None, help="SeriesInstanceUID to read")
    seg.add_argument("--batch-size", type=int, default=NETWORK_ONLY["batch_size"])
    seg.add_argument("--threshold", type=float, default=NETWORK_ONLY["threshold"])
    seg.add_argument("--device", choices=["auto", "cpu", "gpu"], default=NETWORK_ONLY["device"])
    seg.add_argument("--no-crop", action="store_true",
                     help="run whole slices instead of a window around the chest")
    seg.add_argument("--all-slices", action="store_true",
                     help="run every slice, not only lung base to apex")
    seg.add_argument("--force", action="store_true", help="replace an existing output file")
    seg.set_defaults(func=_cmd_segment)

    tr = sub.add_parser("train", help="train the network on a dataset folder")
    tr.add_argument("dataset", help="folder with one subfolder per patient (DICOM + mask file)")
    tr.add_argument("--out", required=True, help="model file to write (.pnxmodel)")
    tr.add_argument("--epochs", type=int, default=1000)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--learning-rate", type=float, default=1e-4)
    tr.add_argument("--patience", type=int, default=8)
    tr.add_argument("--split", choices=["patient", "slice"], default="patient")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--patch-size", type=int, default=None,
                    help="train on random crops of this size (multiple of 32)")
    tr.add_argument("--steps-per-epoch", type=int, default=None)
    tr.add_argument("--no-augment", action="store_true")
    tr.add_argument("--backbone", default="resnet50")
    tr.add_argument("--encoder-weights", default=None, choices=[None, "imagenet"],
                    help="imagenet needs internet on first use")
    tr.add_argument("--pixel-mm", default="auto",
                    help="in-plane pixel size to train at and record in the model: a number of mm, "
                         "'native' (every CT at its own resolution) or 'auto' (the data's own, when shared)")
    tr.add_argument("--init", default=None, metavar="M.pnxmodel",
                    help="fine-tune: start from this model's weights, encoder, preprocessing and threshold "
                         "(it is only read)")
    tr.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that passes this time")
    tr.add_argument("--resume", action="store_true",
                    help="continue an interrupted run (killed, stopped, or out of time) writing --out, "
                         "with the same dataset and options")
    tr.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    tr.add_argument("--force", action="store_true", help="replace an existing model file")
    tr.set_defaults(func=_cmd_train)

    ac = sub.add_parser("add-case", help="add a CT and its mask to a training dataset as DATASET/<patient>/")
    ac.add_argument("dataset", help="the dataset folder (created if missing)")
    ac.add_argument("ct", help="DICOM folder or file of the CT")
    ac.add_argument("mask", help="the mask on the CT's grid (.seg.nrrd, .nrrd, .nii.gz, DICOM-SEG)")
    ac.add_argument("--patient", default=None, help="the case's folder name (default: the CT's PatientID)")
    ac.add_argument("--note", default=None, help="what made the mask, kept in case.json")
    ac.add_argument("--series", default=None, help="SeriesInstanceUID to read")
    ac.add_argument("--force", action="store_true", help="replace an existing case of that name")
    ac.set_defaults(func=_cmd_add_case)

    ph = sub.add_parser("make-phantoms", help="write a phantom dataset (DICOM + NRRD per patient)")
    ph.add_argument("out_dir")
    ph.add_argument("--n", type=int, default=20)
    ph.add_argument("--slices", type=int, default=60)
    ph.add_argument("--size", type=int, default=256, help="slice size in pixels")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--real", nargs="+", metavar="CT_DIR", default=None,
                    help="also simulate pneumothorax on these real CT series (DICOM folders), "
                         "each case in its own folder real-<CT folder name>-<k>")
    ph.add_argument("--real-per-ct", type=int, default=1, metavar="N",
                    help="simulated cases per real CT (sides and sizes cycled, seeds counting up "
                         "from --seed); they share one patient's anatomy (default 1)")
    ph.add_argument("--force", action="store_true", help="replace existing patient folders")
    ph.set_defaults(func=_cmd_make_phantoms)

    sim = sub.add_parser("simulate", help="add a simulated pneumothorax to a real CT and write "
                                          "it as a patient folder (DICOM + truth + facts)")
    sim.add_argument("ct", metavar="CT_DIR", help="DICOM folder or file of the source CT")
    sim.add_argument("out_dir", metavar="OUT_DIR",
                     help="patient folder to write: ct/ (DICOM series), truth.seg.nrrd, facts.json")
    sim.add_argument("--side", choices=["left", "right", "both"], default="left")
    sim.add_argument("--size", choices=["small", "moderate", "large"], default="moderate")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--series", default=None, help="SeriesInstanceUID to read")
    sim.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")
    sim.set_defaults(func=_cmd_simulate)

    rep = sub.add_parser("report", help="write one self-contained HTML report of a pneumothorax mask "
                                        "(sizes, classes by each guideline, key images, warnings)")
    rep.add_argument("ct", help="DICOM folder or file")
    rep.add_argument("--mask", required=True, help="the pneumothorax mask (.seg.nrrd, .nrrd, .nii.gz, DICOM-SEG)")
    rep.add_argument("--truth", default=None, help="a ground truth mask to compare with (outlined in green)")
    rep.add_argument("--out", required=True, help="the report, .html")
    rep.add_argument("--show", default="", help="comma-separated identifiers to show (none by default): "
                                                "patient_name, patient_id, birth_date, sex, study_date, "
                                                "accession, study, institution")
    rep.add_argument("--method", default=None, help="what made the mask (shown under Method), "
                                                    "e.g. 'pleural air (no model)' or a model's name")
    rep.add_argument("--series", default=None, help="SeriesInstanceUID to read")
    rep.add_argument("--force", action="store_true", help="replace an existing report")
    rep.set_defaults(func=_cmd_report)

    bat = sub.add_parser("batch", help="segment (and measure) every CT series below a folder tree on Dask: "
                                       "a local cluster, or a running one with --scheduler")
    bat.add_argument("root", help="folder tree holding DICOM (a PACS export, nested folders, mixed series)")
    bat.add_argument("--out", required=True, help="output folder: a mask folder per study/series, "
                                                  "results.csv and status.jsonl; a rerun resumes")
    bat.add_argument("--method", choices=["network", "pleural-air"], default=None,
                     help="network (needs --model, the default when it is given) or pleural-air (no model)")
    bat.add_argument("--model", default=None, help=".pnxmodel (or a Keras .keras/.h5) file")
    bat.add_argument("--workers", type=int, default=None,
                     help="local worker processes (default: one per GPU, else 1 for the network and one per "
                          "core for pleural air); ignored with --scheduler")
    bat.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (dask-jobqueue, Kubernetes); "
                          "its workers must see ROOT and --out at the same paths")
    bat.add_argument("--measure", action="store_true",
                     help="also the guideline sizes (rim depth, hilum distance, apex to cupola) and size classes")
    bat.add_argument("--format", choices=["seg.nrrd", "nrrd", "nii.gz", "nii", "dcm"], default="seg.nrrd",
                     help="mask format (default seg.nrrd)")
    bat.add_argument("--batch-size", type=int, default=4)
    bat.add_argument("--threshold", type=float, default=None)
    bat.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    bat.add_argument("--no-crop", action="store_true", help="run whole slices instead of a window around the chest")
    bat.add_argument("--all-slices", action="store_true", help="run every slice, not only lung base to apex")
    bat.add_argument("--retries", type=int, default=2,
                     help="extra attempts for a series whose task raised or whose worker died (default 2)")
    bat.set_defaults(func=_cmd_batch)

    demo = sub.add_parser("demo", help="the whole job on phantoms: train, segment, measure")
    demo.add_argument("--out", default="demo-out", help="folder for the results")
    demo.add_argument("--quick", action="store_true", help="tiny settings (seconds, for tests)")
    demo.add_argument("--force", action="store_true", help="replace earlier demo results")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _outputs(args) -> list[str]:
    """The files and folders a command will write (its ``--out``, and the dataset add-case fills)."""
    out = [getattr(args, "out", None), getattr(args, "out_dir", None)]
    if args.command == "add-case":
        out.append(args.dataset)
    return [o for o in out if o]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; user errors print one clear line and exit 2, never a traceback."""
    from .io.atomic import OutputError, check_writable
    from .progress import Cancelled

    args = build_parser().parse_args(argv)
    try:
        for where in _outputs(args):  # a read-only or full folder is said now, not after the work
            check_writable(where)
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, OutputError) as exc:  # CTReadError, ModelLoadError...
        print(f"\npneumoseg: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("\npneumoseg: cancelled; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

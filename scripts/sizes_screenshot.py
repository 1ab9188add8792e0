"""Screenshots of Measure's guideline sizes and of the HTML report, on a real CT with a simulated pneumothorax.

Usage: xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/sizes_screenshot.py [--out docs]
       [--chest DICOM_FOLDER] [--side right] [--size large] [--seed 1]

Writes ``measure_sizes.png`` (the viewer on the slice of the maximal rim depth, the
measured lines with their values, the Measure dock with its table and area plot),
``report.html`` to a temporary folder and ``report.png`` (the report's first screen in
headless Chromium).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pleural_screenshot import settle


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs")
    parser.add_argument("--chest", default=str(Path(__file__).resolve().parents[1].parent
                                               / "shared/data/real/chest_ct_lidc_idri_1011_2p5mm"))
    parser.add_argument("--side", default="right")
    parser.add_argument("--size", default="large")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from skimage.io import imsave

    from napari_pneumoseg import read_ct, simulate_pneumothorax
    from napari_pneumoseg._napari.measure_widget import MeasureWidget
    from napari_pneumoseg.ct.volume import geometry_metadata

    ct = read_ct(args.chest)
    case = simulate_pneumothorax(ct, side=args.side, size=args.size, seed=args.seed)
    viewer = napari.Viewer(title="napari-pneumoseg")
    viewer.window._qt_window.resize(1550, 1000)
    image = viewer.add_image(case.ct.hu, name="real CT + simulated pneumothorax", scale=ct.spacing,
                             translate=ct.translate, contrast_limits=(-1100, 200), colormap="gray",
                             metadata=geometry_metadata(case.ct))
    mask = viewer.add_labels(case.truth, name="pneumothorax", scale=ct.spacing, translate=ct.translate,
                             opacity=0.35)
    w = MeasureWidget(viewer)
    dock = viewer.window.add_dock_widget(w, name="Measure", area="right")
    dock.setMinimumWidth(430)
    w.prediction.value = mask
    w.ct.value = image
    w.run()
    start = time.monotonic()
    while w.busy and time.monotonic() - start < 300:
        settle(0.1)
    settle(1.0)
    if w.last_error:
        print(w.last_error, file=sys.stderr)
        return 1
    m = w.result
    side = args.side
    row = next(r for r in range(w.table.rowCount())
               if w.table.item(r, 0).text() == f"{side.capitalize()} rim depth (mm)")
    w.table.cellClicked.emit(row, 0)
    w.table.selectRow(row)
    viewer.reset_view()
    viewer.camera.zoom *= 1.1
    settle(1.0)
    path = out / "measure_sizes.png"
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"wrote {path}; {side}: {getattr(m, side + '_ml'):.1f} mL, rim {getattr(m, side + '_rim_depth_mm'):.1f} mm, "
          f"hilum {getattr(m, side + '_hilum_distance_mm')}, apex {getattr(m, side + '_apex_cupola_mm')}")

    tmp = Path(tempfile.mkdtemp())
    report = tmp / "report.html"
    w.save_report(report)
    while w.busy:
        settle(0.1)
    settle(0.5)
    viewer.close()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("no chromium: report.png not made", file=sys.stderr)
        return 1
    png = out / "report.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp / 'profile'}", "--window-size=1050,2500", f"--screenshot={png}",
                    report.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {png} from {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Screenshot of Segment's "Pleural air (no model)" on a real CT with a simulated pneumothorax (run under Xvfb).

Usage: xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/pleural_screenshot.py [--out docs]
       [--chest DICOM_FOLDER] [--side right] [--size moderate] [--seed 0]

The CT is read through the plugin's reader, the pneumothorax is added by
``simulate_pneumothorax``, and the truth is shown as an outline (contour) so the filled
result layer can be compared with it by eye.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def settle(seconds: float = 1.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs")
    parser.add_argument("--chest", default=str(Path(__file__).resolve().parents[1].parent
                                               / "shared/data/real/chest_ct_tcia_A0001_5mm"))
    parser.add_argument("--side", default="right")
    parser.add_argument("--size", default="moderate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from skimage.io import imsave

    from napari_pneumoseg import read_ct, simulate_pneumothorax
    from napari_pneumoseg._napari.segment_widget import PLEURAL_AIR, SegmentWidget
    from napari_pneumoseg.ct.volume import geometry_metadata

    ct = read_ct(args.chest)
    case = simulate_pneumothorax(ct, side=args.side, size=args.size, seed=args.seed)
    viewer = napari.Viewer(title="napari-pneumoseg")
    viewer.window._qt_window.resize(1500, 950)
    image = viewer.add_image(case.ct.hu, name="real CT + simulated pneumothorax", scale=ct.spacing,
                             translate=ct.translate, contrast_limits=(-1100, 200), colormap="gray",
                             metadata=geometry_metadata(case.ct))
    truth = viewer.add_labels(case.truth, name="truth (outline)", scale=ct.spacing, translate=ct.translate)
    truth.contour = 2
    from napari.utils.colormaps import DirectLabelColormap

    truth.colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "lime"})
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    seg.image.value = image
    seg.method.value = PLEURAL_AIR
    seg.run()
    start = time.monotonic()
    while seg.busy and time.monotonic() - start < 300:
        settle(0.1)
    settle(1.0)
    if seg.last_error:
        print(seg.last_error, file=sys.stderr)
        return 1
    result = [layer for layer in viewer.layers if "pleural air" in layer.name][0]
    result.opacity = 0.45
    viewer.layers.move(viewer.layers.index(truth), len(viewer.layers) - 1)  # the outline on top
    k = int(np.argmax((case.truth > 0).sum(axis=(1, 2))))
    viewer.dims.set_point(0, ct.translate[0] + k * ct.spacing[0])
    viewer.reset_view()
    settle(1.0)
    path = out / "pleural_air.png"
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"wrote {path}; slice {k}; {result.metadata['pneumoseg_result']['volume_ml']}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

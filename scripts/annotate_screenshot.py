"""Screenshot of the Annotate dock mid-correction on a real CT with a simulated pneumothorax (run under Xvfb).

Usage: xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/annotate_screenshot.py [--out docs]
       [--chest DICOM_FOLDER] [--side left] [--size moderate] [--seed 3]

Pre-annotates with pleural air, then stands in for a user's correction: on the shown slice
the annotation is replaced by the truth (what a user would paint and erase to), and the
truth is drawn as a green outline so the correction can be judged by eye.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from pleural_screenshot import settle


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs")
    parser.add_argument("--chest", default=str(Path(__file__).resolve().parents[1].parent
                                               / "shared/data/real/chest_ct_4dlung_113_3mm"))
    parser.add_argument("--side", default="left")
    parser.add_argument("--size", default="moderate")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from napari.utils.colormaps import DirectLabelColormap
    from skimage.io import imsave

    from napari_pneumoseg import read_ct, simulate_pneumothorax
    from napari_pneumoseg._napari.annotate_widget import PLEURAL_AIR, AnnotateWidget
    from napari_pneumoseg.ct.volume import geometry_metadata

    ct = read_ct(args.chest)
    case = simulate_pneumothorax(ct, side=args.side, size=args.size, seed=args.seed)
    viewer = napari.Viewer(title="napari-pneumoseg")
    viewer.window._qt_window.resize(1550, 1000)
    image = viewer.add_image(case.ct.hu, name="CT", scale=ct.spacing, translate=ct.translate,
                             contrast_limits=(-1100, 200), colormap="gray", metadata=geometry_metadata(case.ct))
    w = AnnotateWidget(viewer)
    dock = viewer.window.add_dock_widget(w, name="Annotate", area="right")
    dock.setMinimumWidth(430)
    w.image.value = image
    w.start.value = PLEURAL_AIR
    w.pre_annotate()
    start = time.monotonic()
    while w.busy and time.monotonic() - start < 300:
        settle(0.1)
    if w.last_error:
        print(w.last_error, file=sys.stderr)
        return 1
    truth = viewer.add_labels(case.truth, name="truth (outline)", scale=ct.spacing, translate=ct.translate)
    truth.contour = 2
    truth.colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "lime"})
    t = case.truth != 0
    per = (w.layer.data != 0) ^ t
    k = int(np.argmax(per.reshape(per.shape[0], -1).sum(axis=1)))  # the slice the pre-annotation got most wrong
    data = np.asarray(w.layer.data).copy()
    data[k] = t[k]
    w.layer.data = data
    w.layer.opacity = 0.5
    w.dataset.value = "/tmp/pneumothorax-dataset"
    w.patient.value = "4DLung-113"
    viewer.layers.selection.active = w.layer
    viewer.dims.set_point(0, image.data_to_world([k, 0, 0])[0])
    viewer.reset_view()
    settle(1.0)
    path = out / "annotate.png"
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"wrote {path}; slice {k}; {w.changes.value}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

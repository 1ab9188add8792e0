"""Screenshots of the real widgets on a phantom, for the README (run under Xvfb).

Usage: python scripts/screenshots.py MODEL.pnxmodel [--out docs] [--chest DICOM_FOLDER]
(`bash scripts/screenshots.sh` sets everything up and runs this under xvfb-run.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def wait_for(widget, timeout=1800):
    from qtpy.QtWidgets import QApplication

    start = time.monotonic()
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.05)
        if time.monotonic() - start > timeout:
            raise TimeoutError("widget did not finish")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def shot(viewer, path: Path) -> None:
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.reset_view()  # docks added since the last view narrow the canvas: fit the image again
    for _ in range(5):
        QApplication.processEvents()
        time.sleep(0.05)
    imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--chest", default=str(Path(__file__).resolve().parents[1].parent
                                               / "shared/data/real/chest_ct_tcia_A0001_5mm"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_pneumoseg._napari.measure_widget import MeasureWidget
    from napari_pneumoseg._napari.segment_widget import SegmentWidget
    from napari_pneumoseg._napari.train_widget import TrainWidget
    from napari_pneumoseg.figures import best_slice
    from napari_pneumoseg.phantom import make_phantom, write_phantom_case

    work = Path(tempfile.mkdtemp(prefix="pneumoseg-shots-"))
    case = work / "heldout"
    from napari_pneumoseg.demo import FULL

    # The demo's held-out phantom, at the size the demo's model was trained on.
    write_phantom_case(make_phantom(seed=1000, side="left", size="moderate",
                                    n_slices=FULL["n_slices"],
                                    shape_yx=(FULL["size"], FULL["size"])), case)

    viewer = napari.Viewer(title="napari-pneumoseg")
    viewer.window._qt_window.resize(1500, 950)

    # 1. A real chest CT opened through the reader.
    if Path(args.chest).is_dir():
        viewer.open(args.chest, plugin="napari-pneumoseg")
        viewer.dims.set_point(0, viewer.layers[0].scale[0] * 40 + viewer.layers[0].translate[0])
        shot(viewer, out / "open_ct.png")
        viewer.layers.clear()

    # 2. The phantom (DICOM via our reader, truth from NRRD), segmented by the model.
    (ct_layer,) = viewer.open(str(case / "ct"), plugin="napari-pneumoseg")
    ct_layer.name = "phantom"
    (truth_layer,) = viewer.open(str(case / "truth.nrrd"), plugin="napari-pneumoseg")
    truth_layer.name = "phantom truth"
    truth_layer.visible = False
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment", area="right")
    seg.image.value = ct_layer
    seg.model.value = args.model
    seg.run()
    wait_for(seg)
    if seg.last_error:
        print(seg.last_error, file=sys.stderr)
        return 1
    pred_layer = [layer for layer in viewer.layers if "pneumothorax" in layer.name][0]
    k = best_slice(np.asarray(truth_layer.data), np.asarray(pred_layer.data))
    viewer.dims.set_point(0, ct_layer.translate[0] + k * ct_layer.scale[0])
    shot(viewer, out / "segment.png")

    # 3. Measure against the truth.
    meas = MeasureWidget(viewer)
    viewer.window.add_dock_widget(meas, name="Measure", area="right")
    meas.prediction.value = pred_layer
    meas.truth.value = truth_layer
    meas.ct.value = ct_layer
    meas.run()
    wait_for(meas)
    if meas.last_error:
        print(meas.last_error, file=sys.stderr)
        return 1
    shot(viewer, out / "measure.png")

    # 4. A short real training on the phantom pair (small encoder so it takes a minute).
    viewer.window.remove_dock_widget("all")
    tw = TrainWidget(viewer)
    viewer.window.add_dock_widget(tw, name="Train", area="right")
    truth_layer.visible = True
    tw.backbone = "resnet18"
    tw.images.value = [ct_layer]
    tw.out.value = work / "screenshot.pnxmodel"
    tw.epochs.value, tw.batch_size.value, tw.patch_size.value, tw.steps.value = 8, 8, 64, 6
    tw.run()
    wait_for(tw)
    if tw.last_error:
        print(tw.last_error, file=sys.stderr)
        return 1
    shot(viewer, out / "train.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

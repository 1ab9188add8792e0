"""The core is GUI-free: importing every module outside ``_napari`` imports no napari, Qt or magicgui.

Nor TensorFlow: the core's modules import it only when a network is built or run,
which is what lets napari's process (and a worker thread in it) use them.
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt",
             "vispy", "tensorflow", "keras")

PROBE = r"""
import importlib, json, pkgutil, sys
import napari_pneumoseg
names = []
for info in pkgutil.walk_packages(napari_pneumoseg.__path__, "napari_pneumoseg."):
    if info.name.startswith("napari_pneumoseg._napari"):
        continue
    importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({"imported": names,
                  "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_no_module_outside_napari_layer_imports_gui_or_tensorflow():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    imported = set(result["imported"])
    # The walk really reached the core (a broken walk must not pass vacuously).
    for module in ("napari_pneumoseg.cli", "napari_pneumoseg.model.inference",
                   "napari_pneumoseg.engine.jobs", "napari_pneumoseg.engine.server",
                   "napari_pneumoseg.training.train", "napari_pneumoseg.measure.sides",
                   "napari_pneumoseg.ct.dicom", "napari_pneumoseg.io.dicom_seg"):
        assert module in imported
    loaded = set(result["loaded"])
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))

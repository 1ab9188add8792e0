"""Measure widget: volume (mL, per side, % hemithorax) and agreement with a ground truth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

from ..ct import CTVolume
from ..measure import Measurement, measure
from ._common import keep_choices_fresh, layer_choices, spacing_of

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: What the table shows, in order: (row label, Measurement field, format).
ROWS = [
    ("Volume (mL)", "volume_ml", "{:.2f}"),
    ("Left (mL)", "left_ml", "{:.2f}"),
    ("Right (mL)", "right_ml", "{:.2f}"),
    ("Left, % of hemithorax", "left_pct_hemithorax", "{:.1f}"),
    ("Right, % of hemithorax", "right_pct_hemithorax", "{:.1f}"),
    ("Ground truth volume (mL)", "truth_volume_ml", "{:.2f}"),
    ("Dice (volumetric)", "dice", "{:.4f}"),
    ("Dice (mean per slice)", "dice_per_slice", "{:.4f}"),
    ("IoU (Jaccard)", "iou", "{:.4f}"),
    ("Precision", "precision", "{:.4f}"),
    ("Recall", "recall", "{:.4f}"),
    ("Specificity", "specificity", "{:.6f}"),
    ("Accuracy", "accuracy", "{:.6f}"),
    ("Relative volume error", "relative_volume_error", "{:+.3f}"),
    ("Voxels", "voxels", "{:d}"),
    ("Voxel size z, y, x (mm)", "spacing_mm", None),
]

NONE = None


class MeasureWidget(Container):
    """A thin shell over :func:`napari_pneumoseg.measure`: layers in, table out."""

    def __init__(self, napari_viewer: "napari.Viewer"):
        import napari.layers
        from qtpy.QtWidgets import QTableWidget

        self.viewer = napari_viewer
        labels = layer_choices(napari_viewer, napari.layers.Labels)
        images = layer_choices(napari_viewer, napari.layers.Image)
        self.prediction = ComboBox(label="Pneumothorax", choices=labels)
        self.truth = ComboBox(label="Ground truth", choices=lambda w=None: [("(none)", NONE)] + labels())
        self.ct = ComboBox(label="CT image", choices=lambda w=None: [("(none)", NONE)] + images())
        self.measure_button = PushButton(text="Measure")
        self.copy_button = PushButton(text="Copy table")
        self.save_button = PushButton(text="Save CSV...")
        self.note = Label(value="")
        super().__init__(widgets=[self.prediction, self.truth, self.ct, self.measure_button,
                                  self.note, self.copy_button, self.save_button])
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Quantity", "Value"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.native.layout().insertWidget(5, self.table)
        self.measure_button.changed.connect(self.run)
        self.copy_button.changed.connect(self.copy)
        self.save_button.changed.connect(self.save_dialog)
        keep_choices_fresh(napari_viewer, self)
        self.result: Optional[Measurement] = None
        self.last_error: Optional[str] = None

    # ------------------------------------------------------------------ actions

    def run(self) -> Optional[Measurement]:
        """Measure the chosen layers and fill the table; errors become a message."""
        from napari.utils.notifications import show_error

        try:
            self.result = self.compute()
        except ValueError as exc:
            self.last_error = str(exc)
            self.note.value = f"Cannot measure: {exc}"
            show_error(f"Cannot measure: {exc}")
            return None
        self.last_error = None
        self._fill(self.result)
        return self.result

    def compute(self) -> Measurement:
        pred = self.prediction.value
        if pred is None:
            raise ValueError("no pneumothorax Labels layer: segment first, or open a mask")
        truth, image = self.truth.value, self.ct.value
        ct, spacing, notes = None, spacing_of(pred), []
        if image is not None:
            ct, notes = ct_from_layer(image)
            if spacing is not None and not np.allclose(spacing, ct.spacing, rtol=1e-4):
                raise ValueError(f"'{pred.name}' has voxel size {spacing} mm but the CT "
                                 f"'{image.name}' has {tuple(ct.spacing)} mm")
        elif truth is not None and spacing is None:
            spacing = spacing_of(truth)
        if truth is not None:
            t_spacing = spacing_of(truth)
            ref = ct.spacing if ct is not None else spacing
            if t_spacing is not None and ref is not None and not np.allclose(t_spacing, ref, rtol=1e-4):
                raise ValueError(f"ground truth '{truth.name}' has voxel size {t_spacing} mm, "
                                 f"the prediction {tuple(ref)} mm")
        result = measure(np.asarray(pred.data), ct=ct, spacing=None if ct is not None else spacing,
                         truth=None if truth is None else np.asarray(truth.data))
        result.notes[:0] = notes
        return result

    def table_text(self) -> str:
        """The table as tab-separated text (what Copy puts on the clipboard)."""
        rows = [f"{self.table.item(r, 0).text()}\t{self.table.item(r, 1).text()}"
                for r in range(self.table.rowCount())]
        return "\n".join(["Quantity\tValue", *rows])

    def copy(self) -> None:
        from qtpy.QtWidgets import QApplication

        QApplication.clipboard().setText(self.table_text())

    def save_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        if self.result is None:
            self.note.value = "Measure first, then save."
            return
        path, _ = QFileDialog.getSaveFileName(self.native, "Save measurements", "measurements.csv",
                                              "CSV (*.csv)")
        if path:  # the dialog has already asked before replacing a file
            self.save(path, overwrite=True)

    def save(self, path, *, overwrite: bool = False) -> None:
        from ..io import write_csv

        row = {"prediction": self.prediction.value.name,
               "truth": getattr(self.truth.value, "name", ""),
               "ct": getattr(self.ct.value, "name", ""), **self.result.as_row()}
        write_csv([row], path, overwrite=overwrite)
        self.note.value = f"saved {path}"

    # ------------------------------------------------------------------- table

    def _fill(self, result: Measurement) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        shown = []
        for label, field, fmt in ROWS:
            value = getattr(result, field)
            if value is None:
                continue
            if field == "spacing_mm":
                text = ", ".join(f"{v:.4g}" for v in value)
            else:
                text = fmt.format(value)
            shown.append((label, text))
        self.table.setRowCount(len(shown))
        for r, (label, text) in enumerate(shown):
            self.table.setItem(r, 0, QTableWidgetItem(label))
            self.table.setItem(r, 1, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.note.value = "\n".join(result.notes)


def ct_from_layer(layer) -> tuple[CTVolume, list[str]]:
    """A CTVolume from an Image layer: HU, scale as spacing, geometry from our metadata."""
    meta = layer.metadata.get("pneumoseg_ct", {})
    notes = []
    spacing = spacing_of(layer)
    if spacing is None:
        spacing = (2.5, 1.0, 1.0)
        notes.append(f"CT layer '{layer.name}' has no physical scale: assumed 2.5 mm slices "
                     "and 1 mm pixels")
    if "direction" not in meta:
        notes.append(f"CT layer '{layer.name}' has no patient orientation: assumed a standard "
                     "axial orientation (columns run to the patient's left)")
    ct = CTVolume(hu=np.asarray(layer.data), spacing=spacing,
                  origin=meta.get("origin", (0.0, 0.0, 0.0)),
                  direction=np.asarray(meta.get("direction", np.eye(3)[::-1])))
    return ct, notes

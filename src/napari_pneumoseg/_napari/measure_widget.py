"""Measure widget: volume (mL, per side, % hemithorax) and agreement with a ground truth."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

from ..ct.volume import ct_from_geometry
from ..measure import Measurement, measure
from ._common import BackgroundJob, keep_choices_fresh, layer_choices, spacing_of

if TYPE_CHECKING:  # pragma: no cover
    import napari

log = logging.getLogger(__name__)

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
#: Shown in the note while a measurement runs.
MEASURING = "Measuring..."


class MeasureWidget(Container):
    """A thin shell over :func:`napari_pneumoseg.measure`: layers in, table out.

    :meth:`run` measures in a worker thread (a :class:`BackgroundJob`). While it runs,
    ``busy`` is True, the Measure button is disabled and the note says
    :data:`MEASURING`. The final state (``result`` or ``last_error``, the table and
    the note) is set once, on the GUI thread, when the worker returns.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers it measures.
    """

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
        self.job: Optional[BackgroundJob] = None  # the latest run
        self._names: dict[str, str] = {}

    # ------------------------------------------------------------------ actions

    def run(self) -> None:
        """Start measuring the chosen layers in a worker thread, and return at once.

        Does nothing while a measurement runs. Invalid choices (no pneumothorax
        layer, shapes or voxel sizes that disagree) end as a message in the note,
        in ``last_error`` and in napari's notifications. They never raise here.
        """
        if self.busy:
            return
        self.result, self.last_error = None, None
        self.table.setRowCount(0)
        job, names = self._job()
        self.measure_button.enabled = False
        self.note.value = MEASURING
        self.job = BackgroundJob(partial(_outcome, job), on_progress=lambda item: None,
                                 on_result=partial(self._on_returned, names),
                                 on_error=self._on_errored, on_done=self._on_finished)

    @property
    def busy(self) -> bool:
        """True from :meth:`run` until that run's outcome is shown and the button is back."""
        return self.job is not None and not self.job.done

    @property
    def worker(self):
        """napari's worker of the latest run (None before the first)."""
        return None if self.job is None else self.job.worker

    def compute(self) -> Measurement:
        """Measure the chosen layers on the calling thread (no worker, no table).

        Returns
        -------
        Measurement

        Raises
        ------
        ValueError
            If no pneumothorax layer is chosen, or the core refuses the inputs
            (shapes or voxel sizes that disagree).
        """
        job, _ = self._job()
        return job()

    def _job(self) -> tuple[Callable[[], Measurement], dict[str, str]]:
        """The chosen layers (read on the GUI thread) as a call of the core for a worker, and their names."""
        pred, truth, image = self.prediction.value, self.truth.value, self.ct.value
        names = {"prediction": getattr(pred, "name", ""), "truth": getattr(truth, "name", ""),
                 "ct": getattr(image, "name", "")}
        if pred is None:
            def no_prediction() -> Measurement:
                raise ValueError("no pneumothorax Labels layer: segment first, or open a mask")

            return no_prediction, names
        mask = pred.data
        spacing = spacing_of(pred)
        truth_data = None if truth is None else truth.data
        truth_spacing = None if truth is None else spacing_of(truth)
        geometry = None if image is None else (image.data, tuple(image.scale), tuple(image.translate),
                                                dict(image.metadata), f"CT layer '{image.name}'")

        def job() -> Measurement:
            ct, notes = None, []
            if geometry is not None:
                hu, scale, translate, metadata, name = geometry
                ct, notes = ct_from_geometry(hu, scale, translate, metadata, name=name)
            result = measure(np.asarray(mask), ct=ct, spacing=spacing,
                             truth=None if truth_data is None else np.asarray(truth_data),
                             truth_spacing=truth_spacing)
            result.notes[:0] = notes
            return result

        return job, names

    def table_text(self) -> str:
        """The table as tab-separated text (what Copy puts on the clipboard).

        Returns
        -------
        str
            A ``Quantity\\tValue`` header line, then one line per row.
        """
        rows = [f"{self.table.item(r, 0).text()}\t{self.table.item(r, 1).text()}"
                for r in range(self.table.rowCount())]
        return "\n".join(["Quantity\tValue", *rows])

    def copy(self) -> None:
        """Put :meth:`table_text` on the clipboard."""
        from qtpy.QtWidgets import QApplication

        QApplication.clipboard().setText(self.table_text())

    def save_dialog(self) -> None:
        """Ask for a file name and :meth:`save` the last result there."""
        from qtpy.QtWidgets import QFileDialog

        if self.result is None:
            self.note.value = "Measure first, then save."
            return
        path, _ = QFileDialog.getSaveFileName(self.native, "Save measurements", "measurements.csv",
                                              "CSV (*.csv)")
        if path:  # the dialog has already asked before replacing a file
            self.save(path, overwrite=True)

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write the last result as a one-row CSV, with the names of the layers it measured.

        Parameters
        ----------
        path : str or os.PathLike
            The CSV file.
        overwrite : bool, default False
            Replace an existing file.

        Raises
        ------
        ValueError
            If nothing has been measured yet.
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        """
        from ..io import write_csv

        if self.result is None:
            raise ValueError("nothing measured yet: measure first, then save")
        row = {**self._names, **self.result.as_row()}
        write_csv([row], path, overwrite=overwrite)
        self.note.value = f"saved {path}"

    # ----------------------------------------------------------------- results

    def _on_returned(self, names: dict[str, str],
                     outcome: tuple[Optional[Measurement], Optional[str]]) -> None:
        """The one place where a run's final state is set (GUI thread)."""
        result, error = outcome
        if error is not None:
            self._show_error(error)
            return
        self.result, self._names = result, names
        self._fill(result)

    def _on_errored(self, exc: BaseException) -> None:
        # _outcome catches everything, so this only fires if the worker itself breaks.
        self._show_error(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.measure_button.enabled = True

    def _show_error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.note.value = f"Cannot measure: {message}"
        show_error(f"Cannot measure: {message}")

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


def _outcome(job: Callable[[], Measurement]) -> tuple[Optional[Measurement], Optional[str]]:
    """Run ``job`` (worker thread): ``(result, None)``, or ``(None, message)`` if it failed.

    Failures come back as a message so the widget shows them, not a traceback. A
    ValueError is the core refusing its inputs, and its message says why. Anything
    else is unexpected, so its traceback goes to the log.
    """
    try:
        return job(), None
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - shown as a message, logged with the traceback
        log.exception("measurement failed")
        return None, f"{type(exc).__name__}: {exc}"

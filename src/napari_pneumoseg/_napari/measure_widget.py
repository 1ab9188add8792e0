"""Measure widget: volume (mL, per side, % hemithorax), guideline sizes, agreement with a ground truth.

After a measurement it adds a Shapes layer with each measured distance drawn on its
slice and labelled with its value, plots the pneumothorax area per slice, moves the
viewer to a distance's slice when its table row is clicked, and writes the HTML report
(:func:`napari_pneumoseg.write_report`) with *Save report*.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Select

from ..ct.volume import ct_from_geometry
from ..measure import Measurement, measure
from ..measure.measurement import CLASS_FIELDS
from ..measure.sizing import DISAGREE, RULES, SIDES
from ..report import IDENTIFIERS
from ._common import BackgroundJob, keep_choices_fresh, layer_choices, spacing_of, unwritable

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

#: Guideline rows, after the volumes: (row label, Measurement field, format, line kind or None).
SIZE_ROWS = [
    *[(f"{s.capitalize()} {label}", f"{s}_{field}", fmt, kind) for s in SIDES
      for label, field, fmt, kind in (
          ("rim depth (mm)", "rim_depth_mm", "{:.1f}", "rim_depth"),
          ("hilum distance (mm)", "hilum_distance_mm", "{:.1f}", "hilum_distance"),
          ("apex to cupola (mm)", "apex_cupola_mm", "{:.1f}", "apex_cupola"),
          ("pockets", "pockets", "{:d}", None))],
    *[(f"{s.capitalize()} size, {r.name}", f"{s}_class_{CLASS_FIELDS[r.name]}", "{}", None)
      for s in SIDES for r in RULES],
]
#: Colour of the measured lines and their labels.
LINE_COLOUR = "cyan"

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
        self.report_button = PushButton(text="Save report...")
        self.report_ids = Select(label="Report shows", choices=[(label, name) for name, (_, label)
                                                                in IDENTIFIERS.items()], value=[])
        self.report_ids.tooltip = "identifiers the report shows (none unless chosen)"
        self.note = Label(value="")
        super().__init__(widgets=[self.prediction, self.truth, self.ct, self.measure_button,
                                  self.note, self.copy_button, self.save_button, self.report_ids,
                                  self.report_button])
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Quantity", "Value"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellClicked.connect(self.go_to_row)
        self.native.layout().insertWidget(5, self.table)
        self.plot = _AreaPlot()
        self.native.layout().insertWidget(6, self.plot.canvas)
        self.measure_button.changed.connect(self.run)
        self.copy_button.changed.connect(self.copy)
        self.save_button.changed.connect(self.save_dialog)
        self.report_button.changed.connect(self.report_dialog)
        keep_choices_fresh(napari_viewer, self)
        self.result: Optional[Measurement] = None
        self.last_error: Optional[str] = None
        self.job: Optional[BackgroundJob] = None  # the latest run (measurement or report)
        self._names: dict[str, str] = {}
        self._row_slice: dict[int, int] = {}  # table row -> source slice of its line
        self._inputs: Optional[dict] = None  # what the latest result measured (for the report)
        self._layer = None  # the pneumothorax layer measured (scale, translate of the lines)

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

        inputs = {"layer": pred, "method": dict(pred.metadata).get("pneumoseg_result")}
        self._pending = inputs

        def job() -> Measurement:
            ct, notes = None, []
            if geometry is not None:
                hu, scale, translate, metadata, name = geometry
                ct, notes = ct_from_geometry(hu, scale, translate, metadata, name=name)
            m = np.asarray(mask)
            t = None if truth_data is None else np.asarray(truth_data)
            result = measure(m, ct=ct, spacing=spacing, truth=t, truth_spacing=truth_spacing)
            result.notes[:0] = notes
            inputs.update(ct=ct, mask=m, truth=t)
            return result

        return job, names

    def go_to_row(self, row: int, column: int = 0) -> None:
        """Move the viewer to the slice where the row's distance was measured (rows without one: nothing)."""
        k = self._row_slice.get(row)
        if k is None or self._layer is None:
            return
        world = self._layer.data_to_world([k, 0, 0])
        self.viewer.dims.set_point(0, float(world[0]))

    def report_dialog(self) -> None:
        """Ask for a file name and :meth:`save_report` there."""
        from qtpy.QtWidgets import QFileDialog

        if self.result is None or self.result.sizing is None:
            self.note.value = "Measure with a CT image first, then save the report."
            return
        path, _ = QFileDialog.getSaveFileName(self.native, "Save report", "pneumothorax-report.html",
                                              "HTML (*.html)")
        if path:  # the dialog has already asked before replacing a file
            try:
                self.save_report(path, overwrite=True)
            except ValueError as exc:  # a read-only folder, a job running: said in the note
                self.note.value = str(exc)

    def save_report(self, path, *, overwrite: bool = False) -> None:
        """Write the HTML report of the last result in a worker thread, and return at once.

        The report shows what the last measurement measured (the layers' data at
        that time), the method from the pneumothorax layer's metadata, and the
        identifiers chosen in *Report shows* (none by default). The
        outcome goes to the note (and errors to napari's notifications).

        Parameters
        ----------
        path : str or os.PathLike
            The ``.html`` file.
        overwrite : bool, default False
            Replace an existing file.

        Raises
        ------
        ValueError
            If nothing was measured with a CT yet, a job is running, or the
            folder of ``path`` cannot be written (read-only, forbidden, full).
        """
        from ..report import write_report

        if self.busy:
            raise ValueError("busy: wait for the running measurement or report")
        if self.result is None or self.result.sizing is None or self._inputs is None:
            raise ValueError("measure with a CT image first, then save the report")
        if (why := unwritable(path)) is not None:
            raise ValueError(why)
        inputs, result = self._inputs, self.result
        method = inputs.get("method") or {"mask": self._names.get("prediction", "")}
        show = list(self.report_ids.value)

        def job():
            try:
                write_report(path, inputs["ct"], inputs["mask"], truth=inputs["truth"], measurement=result,
                             method=method, show=show, overwrite=overwrite)
                return None, None
            except (ValueError, OSError) as exc:
                return None, str(exc)

        def done(outcome):
            _, error = outcome
            if error is not None:
                self._show_error(error, "Cannot save the report")
            else:
                self.note.value = f"report saved: {path}"

        self.report_button.enabled = False
        self.note.value = "Writing the report..."
        self.job = BackgroundJob(job, on_progress=lambda item: None, on_result=done, on_error=self._on_errored,
                                 on_done=self._on_finished)

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
        self._inputs, self._layer = self._pending, self._pending["layer"]
        self._fill(result)
        self._draw(result)

    def _on_errored(self, exc: BaseException) -> None:
        # _outcome catches everything, so this only fires if the worker itself breaks.
        self._show_error(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.measure_button.enabled = True
        self.report_button.enabled = True

    def _show_error(self, message: str, what: str = "Cannot measure") -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.note.value = f"{what}: {message}"
        show_error(f"{what}: {message}")

    def _fill(self, result: Measurement) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        shown = []  # (label, text, slice of its line or None)
        rows = [(label, field, fmt, None) for label, field, fmt in ROWS]
        rows[5:5] = SIZE_ROWS  # after the volumes and % of hemithorax
        for label, field, fmt, kind in rows:
            value = getattr(result, field)
            if value is None:
                continue
            if field == "spacing_mm":
                text = ", ".join(f"{v:.4g}" for v in value)
            else:
                text = fmt.format(value)
            side = field.split("_")[0]
            line = None if kind is None or result.sizing is None else result.sizing.line(kind, side)
            if line is not None:
                text += f"  (slice {line.slice})"
            if field.endswith("_pockets") and result.sizing is not None and value:
                vols = result.sizing.sides[side].pockets_ml
                text += "  (" + ", ".join(f"{v:.1f}" for v in vols[:4]) + (", ..." if len(vols) > 4 else "") + " mL)"
            shown.append((label, text, None if line is None else line.slice))
        self.table.setRowCount(len(shown))
        self._row_slice = {}
        for r, (label, text, k) in enumerate(shown):
            self.table.setItem(r, 0, QTableWidgetItem(label))
            self.table.setItem(r, 1, QTableWidgetItem(text))
            if k is not None:
                self._row_slice[r] = k
                self.table.item(r, 0).setToolTip("click to go to the slice where it was measured")
        self.table.resizeColumnsToContents()
        self.note.value = "\n".join(result.notes + ([DISAGREE] if result.sizing is not None else []))

    def _draw(self, result: Measurement) -> None:
        """The measured lines as a Shapes layer on the pneumothorax layer's grid, and the area plot."""
        sizing = result.sizing
        self.plot.show(sizing, result.spacing_mm)
        name = f"{self._names.get('prediction', '')} sizes"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        if sizing is None or not sizing.lines:
            return
        layer = self._layer
        data = [np.array([ln.start, ln.end]) for ln in sizing.lines]
        width = 2.0 * float(min(result.spacing_mm[1:]))
        self.viewer.add_shapes(
            data, shape_type="line", name=name, edge_color=LINE_COLOUR, edge_width=width,
            scale=layer.scale, translate=layer.translate,
            features={"label": [ln.label for ln in sizing.lines], "value_mm": [ln.value_mm for ln in sizing.lines],
                      "kind": [ln.kind for ln in sizing.lines], "side": [ln.side for ln in sizing.lines]},
            text={"string": "{label}", "color": LINE_COLOUR, "size": 10, "anchor": "upper_left"},
            metadata={"pneumoseg_sizes": [ln.__dict__ for ln in sizing.lines]})
        self.viewer.layers.selection.active = layer


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


class _AreaPlot:
    """The pneumothorax area per slice (cm^2) of each side, as a small matplotlib canvas in the dock."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 1.6), dpi=100)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.lines: dict[str, np.ndarray] = {}
        self.show(None, None)

    def show(self, sizing, spacing) -> None:
        """Draw ``sizing``'s area curves (an empty frame when None)."""
        self.figure.clear()
        ax = self.figure.add_axes((0.16, 0.28, 0.8, 0.62))
        self.lines = {}
        if sizing is not None:
            for side, colour in (("right", "#1f77b4"), ("left", "#d62728")):
                area = np.asarray(sizing.area_mm2[side]) / 100.0
                self.lines[side] = area
                ax.plot(np.arange(area.size), area, color=colour, label=side, lw=1.2)
            ax.legend(fontsize=7, frameon=False)
        ax.set_xlabel("slice", fontsize=8)
        ax.set_ylabel("area (cm²)", fontsize=8)
        ax.set_title("Pneumothorax area per slice", fontsize=8)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()

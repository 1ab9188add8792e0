"""Train widget: image + labels pairs (or a dataset folder) in, a model bundle and curves out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    Select,
    SpinBox,
)

from ..ct.volume import ct_from_geometry
from ..preferences import update_preferences
from ._common import BackgroundJob, keep_choices_fresh, layer_choices, shared_engine, unwritable

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: Seconds a stopped training may take to finish its batch before the engine is killed.
STOP_GRACE_S = 300.0

TABLE_COLUMNS = ["loss", "auc", "binary_accuracy", "iou", "precision", "recall", "dice",
                 "dice_per_slice", "tp", "tn", "fp", "fn"]


class TrainWidget(Container):
    """Collects training cases from layers or a folder and trains in the engine process."""

    def __init__(self, napari_viewer: "napari.Viewer"):
        import napari.layers
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QTableWidget

        self.viewer = napari_viewer
        self.images = Select(label="CT images", choices=layer_choices(napari_viewer, napari.layers.Image))
        self.pair_hint = Label(value="Each CT is paired with the Labels layer on its grid named "
                                     "'<CT name> truth' or, failing that, the only Labels layer "
                                     "of its shape.")
        self.dataset = FileEdit(label="or dataset folder", mode="d", value="")
        self.out = FileEdit(label="Save model as", mode="w", filter="*.pnxmodel",
                            value=str(Path.home() / "pneumothorax.pnxmodel"))
        self.epochs = SpinBox(label="Max epochs", value=1000, min=1, max=100000)
        self.batch_size = SpinBox(label="Batch size", value=8, min=1, max=256)
        self.patience = SpinBox(label="Patience", value=8, min=1, max=1000)
        self.patch_size = SpinBox(label="Patch size (0 = whole slices)", value=256, min=0,
                                  max=1024, step=32)
        self.steps = SpinBox(label="Batches per epoch (0 = all)", value=0, min=0, max=100000)
        self.split = ComboBox(label="Split", choices=["patient", "slice"], value="patient")
        self.device = ComboBox(label="Device", choices=["auto", "cpu", "gpu"], value="auto")
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop (keeps the best model)", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.images, self.pair_hint, self.dataset, self.out, self.epochs,
                                  self.batch_size, self.patience, self.patch_size, self.steps,
                                  self.split, self.device, self.train_button, self.stop_button,
                                  self.status])
        self.figure = Figure(figsize=(5, 2.4), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.native.layout().addWidget(self.canvas)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.native.layout().addWidget(self.table)
        self.train_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        keep_choices_fresh(napari_viewer, self)
        self.history: list[dict] = []
        self.result: Optional[dict] = None
        self.last_error: Optional[str] = None
        self.job: Optional[BackgroundJob] = None
        #: The paper's encoder; scripts and tests may pick a smaller one (e.g. "resnet18").
        self.backbone = "resnet50"
        shared_engine(self.device.value)

    # ----------------------------------------------------------------- inputs

    def pairs(self) -> list[tuple]:
        """(image layer, labels layer) for every chosen CT, by
        :func:`~napari_pneumoseg.training.cases.pair_with_truth`'s rule."""
        import napari.layers

        from ..training.cases import pair_with_truth

        labels = [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels)]
        images = list(self.images.value)
        found = pair_with_truth([(im.name, im.data.shape) for im in images],
                                [(lb.name, lb.data.shape) for lb in labels])
        return [(image, labels[k]) for image, k in zip(images, found)]

    def _input_state(self) -> dict:
        """The widget's choices as :class:`~napari_pneumoseg.engine.TrainRequest` options."""
        return {
            "out": str(Path(str(self.out.value))), "epochs": int(self.epochs.value),
            "batch_size": int(self.batch_size.value), "patience": int(self.patience.value),
            "patch_size": int(self.patch_size.value) or None, "split": self.split.value,
            "steps_per_epoch": int(self.steps.value) or None, "backbone": self.backbone,
        }

    def _request(self, files):
        from ..engine import TrainRequest

        options = self._input_state()
        folder = str(self.dataset.value) if self.dataset.value else ""
        if folder and folder != "." and Path(folder).is_dir():
            return TrainRequest(dataset=folder, **options)
        pairs = self.pairs()
        if not pairs:
            raise ValueError("choose CT image layers (each with a truth Labels layer) "
                             "or a dataset folder")
        cases = [{"ct": files.save(f"ct{k}", np.asarray(img.data, np.float32)),
                  "mask": files.save(f"mask{k}", np.asarray(lab.data) != 0),
                  "spacing": list(ct_from_geometry(img.data, scale=img.scale,
                                                   metadata=img.metadata)[0].spacing)}
                 for k, (img, lab) in enumerate(pairs)]
        return TrainRequest(cases=cases, **options)

    # ---------------------------------------------------------------- actions

    def run(self) -> None:
        from napari.utils import progress as napari_progress

        from ..engine import JobFiles

        out = Path(str(self.out.value))
        if out.suffix != ".pnxmodel":
            return self._fail(f"The model file must end in .pnxmodel: {out}")
        if (why := unwritable(out)) is not None:  # said now, not after hours of training
            return self._fail(why)
        if out.exists():
            from ._common import ask_yes_no

            if not ask_yes_no(self.native, "Replace model?", f"{out} exists. Replace it?"):
                return
        files = JobFiles()
        try:
            request = self._request(files)
        except ValueError as exc:
            files.__exit__(None, None, None)
            return self._fail(str(exc))
        request.overwrite = True  # asked above
        engine = shared_engine(self.device.value)
        pbar = napari_progress(total=0, desc="Training")
        self.history = []

        def job():
            with files:
                yield ("progress", 0, 1, "starting the engine")
                # Training stops after the current batch and saves: give it time.
                return (yield from engine.run(request, cancel_grace=STOP_GRACE_S))

        def on_item(item):
            if item[0] == "event":
                self.history.append(item[1]["logs"])
                self.draw_curves()
                return
            _, done, total, text = item
            pbar.total, pbar.n = total, done
            pbar.set_description(f"Training: {text}")
            pbar.refresh()
            self.status.value = text

        def on_done():
            pbar.close()
            self.train_button.enabled, self.stop_button.enabled = True, False

        self.train_button.enabled, self.stop_button.enabled = False, True
        self.last_error, self.result = None, None
        self.job = BackgroundJob(job, on_progress=on_item, on_result=self._on_result,
                                 on_error=self._on_error, on_done=on_done)

    @property
    def busy(self) -> bool:
        """True from :meth:`run` until the outcome has been shown and the buttons are back."""
        return self.job is not None and not self.job.done

    def stop(self) -> None:
        self.status.value = "stopping after this batch; the best model so far is kept..."
        shared_engine(self.device.value).cancel()

    def draw_curves(self) -> None:
        from ..training.curves import draw_curves

        draw_curves(self.figure, self.history)
        self.canvas.draw_idle()

    # ---------------------------------------------------------------- results

    def _on_result(self, result: dict) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        self.result = result
        self.history = result.get("history") or self.history
        self.draw_curves()
        table = result.get("table") or {}
        self.table.setRowCount(len(table))
        self.table.setVerticalHeaderLabels(list(table))
        for r, row in enumerate(table.values()):
            for c, key in enumerate(TABLE_COLUMNS):
                v = row.get(key)
                text = "" if v is None else str(v) if isinstance(v, int) else f"{v:.4f}"
                self.table.setItem(r, c, QTableWidgetItem(text))
        path = result.get("model_path")
        if path:
            update_preferences(last_trained_model=path, last_model=path)
            self.status.value = (f"{result['stopped']} after {len(self.history)} epoch(s); best "
                                 f"epoch {result['best_epoch']}; saved {path}"
                                 + (f" and {result['curves_png']}" if result.get("curves_png") else ""))
        else:
            self.status.value = f"{result['stopped']} before the first epoch ended: no model saved"

    def _on_error(self, exc: BaseException) -> None:
        from ..progress import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = "stopped: the engine did not stop in time and was restarted"
            return
        self._fail(str(exc))

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = message
        show_error(message)

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

from ..preferences import update_preferences
from ._common import RateMeter, keep_choices_fresh, layer_choices, shared_engine

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
        self.worker = None
        self.busy = False
        #: The paper's encoder; scripts and tests may pick a smaller one (e.g. "resnet18").
        self.backbone = "resnet50"
        shared_engine(self.device.value)

    # ----------------------------------------------------------------- inputs

    def pairs(self) -> list[tuple]:
        """(image layer, labels layer) for every chosen CT; a clear error if one has no labels."""
        import napari.layers

        labels = [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels)]
        out = []
        for image in self.images.value:
            named = [lb for lb in labels if lb.name == f"{image.name} truth"]
            same = [lb for lb in labels if lb.data.shape == image.data.shape]
            match = named or (same if len(same) == 1 else [])
            if not match:
                raise ValueError(
                    f"no ground-truth Labels layer for '{image.name}': name it "
                    f"'{image.name} truth' (shape {image.data.shape})")
            if match[0].data.shape != image.data.shape:
                raise ValueError(f"'{match[0].name}' has shape {match[0].data.shape} but "
                                 f"'{image.name}' has {image.data.shape}")
            out.append((image, match[0]))
        return out

    def _params(self, files) -> dict:
        out = Path(str(self.out.value))
        params = {
            "out": str(out), "epochs": int(self.epochs.value),
            "batch_size": int(self.batch_size.value), "patience": int(self.patience.value),
            "patch_size": int(self.patch_size.value) or None, "split": self.split.value,
            "steps_per_epoch": int(self.steps.value) or None, "backbone": self.backbone,
        }
        folder = str(self.dataset.value) if self.dataset.value else ""
        if folder and folder != "." and Path(folder).is_dir():
            params["dataset"] = folder
        else:
            pairs = self.pairs()
            if not pairs:
                raise ValueError("choose CT image layers (each with a truth Labels layer) "
                                 "or a dataset folder")
            params["cases"] = [
                {"ct": files.save(f"ct{k}", np.asarray(img.data, np.float32)),
                 "mask": files.save(f"mask{k}", np.asarray(lab.data) != 0),
                 "spacing": [float(s) for s in img.scale[-3:]]}
                for k, (img, lab) in enumerate(pairs)]
        return params

    # ---------------------------------------------------------------- actions

    def run(self) -> None:
        from napari.qt.threading import create_worker
        from napari.utils import progress as napari_progress

        from ..engine import JobFiles

        out = Path(str(self.out.value))
        if out.suffix != ".pnxmodel":
            return self._fail(f"The model file must end in .pnxmodel: {out}")
        if out.exists():
            from ._common import ask_yes_no

            if not ask_yes_no(self.native, "Replace model?", f"{out} exists. Replace it?"):
                return
        files = JobFiles()
        try:
            params = self._params(files)
        except ValueError as exc:
            files.__exit__(None, None, None)
            return self._fail(str(exc))
        params["overwrite"] = True  # asked above
        engine = shared_engine(self.device.value)
        pbar = napari_progress(total=0, desc="Training")
        meter = {"m": RateMeter("batches")}
        self.history = []

        def job():
            with files:
                yield ("progress", 0, 1, "starting the engine")
                # Training stops after the current batch and saves: give it time.
                gen = engine.run("train", params, cancel_grace=STOP_GRACE_S)
                while True:
                    try:
                        yield next(gen)
                    except StopIteration as stop:
                        return stop.value

        def on_item(item):
            if not self.busy:
                return
            if item[0] == "event":
                self.history.append(item[1]["logs"])
                self.draw_curves()
                meter["m"] = RateMeter("batches")
                return
            _, done, total, text = item
            pbar.total, pbar.n = total, done
            pbar.set_description(f"Training: {text}")
            pbar.refresh()
            self.status.value = text

        def on_finished():
            pbar.close()
            self.busy = False
            self.train_button.enabled, self.stop_button.enabled = True, False

        self.train_button.enabled, self.stop_button.enabled = False, True
        self.busy, self.last_error, self.result = True, None, None
        self.worker = create_worker(job, _connect={
            "yielded": on_item, "returned": self._on_result, "errored": self._on_error,
            "finished": on_finished})

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

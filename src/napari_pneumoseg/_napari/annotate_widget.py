"""Annotate widget: a first answer, the user's corrections, interpolation, a dataset case, a fine-tuned model.

The loop, in one dock:

1. *Pre-annotate* copies a first answer into an editable Labels layer ``<CT> annotation``
   on the CT's grid: pleural air found from the HU (:func:`~napari_pneumoseg.find_pleural_air`,
   in napari's worker), a Labels layer already there (e.g. Segment's network result), or
   nothing (outline by hand).
2. The user corrects it with napari's brush, eraser and fill. The dock counts what
   changed against the pre-annotation (:func:`~napari_pneumoseg.annotate.corrections`).
3. *Interpolate* fills the slices between the edited ones
   (:func:`~napari_pneumoseg.interpolate_slices`, guided by the CT's air).
4. *Save case* adds the CT and the mask to a dataset folder
   (:func:`~napari_pneumoseg.add_case`), with the pre-annotation and the corrections as
   provenance.
5. *Fine-tune* trains from the chosen model on the dataset in the engine process
   (``train(init_model=...)``) with progress and *Stop*; the new model becomes Segment's
   default.

The widget only turns its values into core calls and results into layers.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from ..annotate import corrections, edited_slices, interpolate_slices
from ..ct.volume import ct_from_geometry
from ..pleural import find_pleural_air
from ..preferences import load_preferences, update_preferences
from ._common import BackgroundJob, keep_choices_fresh, layer_choices, progress_items, shared_engine, unwritable

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: Pre-annotation choices besides the Labels layers.
PLEURAL_AIR = "Pleural air (no model)"
EMPTY = "Nothing (outline by hand)"
#: Seconds a stopped fine-tune may take to finish its batch before the engine is killed.
STOP_GRACE_S = 300.0


class AnnotateWidget(Container):
    """Pre-annotate, correct, interpolate, save as a case, fine-tune: see the module docstring.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer"):
        import napari.layers

        self.viewer = napari_viewer
        labels = layer_choices(napari_viewer, napari.layers.Labels)
        self.image = ComboBox(label="CT image", choices=layer_choices(napari_viewer, napari.layers.Image))
        self.start = ComboBox(label="Start from", choices=lambda w=None: [(PLEURAL_AIR, PLEURAL_AIR),
                                                                          (EMPTY, EMPTY)] + labels())
        self.pre_button = PushButton(text="Pre-annotate")
        self.interpolate_button = PushButton(text="Interpolate between edited slices")
        self.changes = Label(value="")
        self.dataset = FileEdit(label="Dataset folder", mode="d", value="")
        self.patient = LineEdit(label="Patient id", value="")
        self.save_button = PushButton(text="Save case")
        prefs = load_preferences()
        parent = prefs.get("last_model") or prefs.get("last_trained_model") or ""
        self.init_model = FileEdit(label="Fine-tune from", mode="r", filter="*.pnxmodel",
                                   value=parent if parent and Path(parent).is_file() else "")
        self.out = FileEdit(label="Save new model as", mode="w", filter="*.pnxmodel",
                            value=str(Path.home() / "pneumothorax-finetuned.pnxmodel"))
        self.epochs = SpinBox(label="Max epochs", value=20, min=1, max=10000)
        self.patch_size = SpinBox(label="Patch size", value=256, min=32, max=1024, step=32)
        self.steps = SpinBox(label="Batches per epoch (0 = all)", value=0, min=0, max=100000)
        self.finetune_button = PushButton(text="Fine-tune")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.stop_button.tooltip = "stop the running job; a stopped fine-tune keeps its best model"
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[self.image, self.start, self.pre_button, self.interpolate_button,
                                  self.changes, self.dataset, self.patient, self.save_button, self.init_model,
                                  self.out, self.epochs, self.patch_size, self.steps, self.finetune_button,
                                  self.stop_button, self.status])
        self.pre_button.changed.connect(self.pre_annotate)
        self.interpolate_button.changed.connect(self.interpolate)
        self.save_button.changed.connect(self.save_case)
        self.finetune_button.changed.connect(self.fine_tune)
        self.stop_button.changed.connect(self.stop)
        keep_choices_fresh(napari_viewer, self)
        self.job: Optional[BackgroundJob] = None
        self.last_error: Optional[str] = None
        self.result: Optional[dict] = None  # the latest fine-tune's result
        self.layer = None  # the annotation layer
        self.before: Optional[np.ndarray] = None  # its pre-annotation
        self.source = ""  # what the pre-annotation was
        self._image = None  # the CT layer it belongs to
        self._stop: Callable[[], None] = lambda: None  # stops the running job

    # ------------------------------------------------------------------ helpers

    @property
    def busy(self) -> bool:
        """True while a job (pre-annotation, interpolation, saving, fine-tuning) runs."""
        return self.job is not None and not self.job.done

    def _ct(self, image):
        return ct_from_geometry(image.data, scale=image.scale, translate=image.translate,
                                metadata=image.metadata, name=f"CT layer '{image.name}'")[0]

    def _run(self, job: Callable, on_result: Callable, text: str, stop: Optional[Callable[[], None]] = None) -> None:
        """Run ``job`` in a worker; its progress items go to the status line; *Stop* calls ``stop``."""
        def on_progress(item):
            if item and item[0] == "progress":
                _, done, total, msg = item
                self.status.value = f"{text}: {msg} ({done}/{total})" if total else f"{text}: {msg}"

        def on_done():
            for b in (self.pre_button, self.interpolate_button, self.save_button, self.finetune_button):
                b.enabled = True
            self.stop_button.enabled = False

        for b in (self.pre_button, self.interpolate_button, self.save_button, self.finetune_button):
            b.enabled = False
        self.last_error = None
        self.status.value = f"{text}..."
        self._stop = stop or (lambda: None)
        self.stop_button.enabled = stop is not None
        self.job = BackgroundJob(job, on_progress=on_progress, on_result=on_result, on_error=self._on_error,
                                 on_done=on_done)

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = message
        show_error(message)

    def _on_error(self, exc: BaseException) -> None:
        from ..progress import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = "stopped"
            return
        self._fail(str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}")

    def update_changes(self, event=None) -> None:
        """Show what the user changed against the pre-annotation (voxels and mL added and removed)."""
        if self.layer is None or self.before is None:
            self.changes.value = ""
            return
        voxel_ml = float(np.prod(self.layer.scale)) / 1000.0
        self.changes.value = "Corrections: " + corrections(self.before, np.asarray(self.layer.data),
                                                           voxel_ml).summary()

    # ------------------------------------------------------------------ actions

    def pre_annotate(self) -> None:
        """Make the editable ``<CT> annotation`` layer from the chosen start (in a worker for pleural air)."""
        image, start = self.image.value, self.start.value
        if image is None:
            return self._fail("No CT image layer: open a CT folder first.")
        if start == PLEURAL_AIR:
            geometry = (image.data, tuple(image.scale), tuple(image.translate), dict(image.metadata))
            stop = threading.Event()

            def job():
                ct, _ = ct_from_geometry(*geometry, name=f"CT layer '{image.name}'")
                found = yield from progress_items(find_pleural_air, ct, cancel=stop)
                return found.mask

            return self._run(job, lambda mask: self._add_annotation(image, mask, "pleural air"),
                             "finding pleural air", stop=stop.set)
        if start == EMPTY:
            return self._add_annotation(image, np.zeros(image.data.shape, np.uint8), "none (outlined by hand)")
        if tuple(start.data.shape) != tuple(image.data.shape):
            return self._fail(f"'{start.name}' (shape {start.data.shape}) is not on the grid of "
                              f"'{image.name}' (shape {image.data.shape}).")
        meta = dict(start.metadata).get("pneumoseg_result") or {}
        what = f"layer '{start.name}'" + (f" (model {Path(meta['model']).name})" if meta.get("model") else "")
        self._add_annotation(image, (np.asarray(start.data) != 0).astype(np.uint8), what)

    def _add_annotation(self, image, mask: np.ndarray, source: str) -> None:
        name = f"{image.name} annotation"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.layer = self.viewer.add_labels(mask.astype(np.uint8), name=name, scale=image.scale,
                                            translate=image.translate, metadata=dict(image.metadata))
        self.layer.mode = "paint"
        self.before, self.source, self._image = mask.astype(np.uint8).copy(), source, image
        for ev in ("paint", "data"):
            if hasattr(self.layer.events, ev):
                getattr(self.layer.events, ev).connect(self.update_changes)
        self.update_changes()
        self.status.value = (f"pre-annotated from {source}: {int(np.count_nonzero(mask))} voxels. Correct it with "
                             "the brush, eraser and fill, then Interpolate or Save case.")

    def interpolate(self) -> None:
        """Fill the slices between the slices edited since the pre-annotation (in a worker)."""
        if self.layer is None:
            return self._fail("Pre-annotate first.")
        data = np.asarray(self.layer.data).copy()
        edited = edited_slices(self.before, data)
        if len(edited) < 2:
            return self._fail("Edit (outline or correct) at least two slices first; the slices between "
                              "them are then filled.")
        hu, spacing = self._image.data, tuple(self.layer.scale)

        def job():
            yield ("progress", 0, 1, f"between {len(edited)} edited slices")
            return interpolate_slices(data, edited, spacing=spacing, image=np.asarray(hu))

        def done(out):
            self.layer.data = out
            self.update_changes()
            self.status.value = f"interpolated between slices {edited[0]}..{edited[-1]} ({len(edited)} edited)"

        self._run(job, done, "interpolating")

    def save_case(self) -> None:
        """Add the CT and the annotation to the dataset folder (in a worker); never replaces a case."""
        from ..training import add_case

        folder = str(self.dataset.value) if self.dataset.value else ""
        if self.layer is None:
            return self._fail("Pre-annotate and correct first.")
        if not folder or folder == ".":
            return self._fail("Choose a dataset folder.")
        if (why := unwritable(folder)) is not None:
            return self._fail(why)
        ct = self._ct(self._image)
        mask = np.asarray(self.layer.data).copy()
        change = corrections(self.before, mask, ct.voxel_volume_ml)
        provenance = {"pre_annotation": self.source, "voxels_added": change.added_voxels,
                      "voxels_removed": change.removed_voxels, "slices_edited": len(change.slices)}
        patient = self.patient.value.strip() or None

        def job():
            path = yield from progress_items(add_case, folder, ct, mask, patient_id=patient, provenance=provenance)
            return path

        self._run(job, lambda path: setattr(self.status, "value", f"saved case {path}"), "saving the case")

    def fine_tune(self) -> None:
        """Fine-tune the chosen model on the dataset in the engine process; the new model becomes Segment's default."""
        from ..engine import TrainRequest

        folder = str(self.dataset.value) if self.dataset.value else ""
        parent = str(self.init_model.value) if self.init_model.value else ""
        out = Path(str(self.out.value))
        if not folder or not Path(folder).is_dir():
            return self._fail("Choose the dataset folder the cases were saved to.")
        if not parent or not Path(parent).is_file():
            return self._fail("Choose the model to fine-tune from (a .pnxmodel file).")
        if out.suffix != ".pnxmodel":
            return self._fail(f"The new model file must end in .pnxmodel: {out}")
        if (why := unwritable(out)) is not None:
            return self._fail(why)
        if out.exists():
            from ._common import ask_yes_no

            if not ask_yes_no(self.native, "Replace model?", f"{out} exists. Replace it?"):
                return
        request = TrainRequest(dataset=folder, out=str(out), init_model=parent, epochs=int(self.epochs.value),
                               patch_size=int(self.patch_size.value), steps_per_epoch=int(self.steps.value) or None,
                               overwrite=True)
        engine = shared_engine("auto")

        def job():
            yield ("progress", 0, 1, "starting the engine")
            return (yield from engine.run(request, cancel_grace=STOP_GRACE_S))

        self.result = None
        self._run(job, self._on_trained, "fine-tuning", stop=engine.cancel)

    def stop(self) -> None:
        """Stop the running job. A fine-tune stops after its batch and keeps its best model; the parent is untouched."""
        self.status.value = "stopping..."
        self._stop()

    def _on_trained(self, result: dict) -> None:
        self.result = result
        path = result.get("model_path")
        if path:
            update_preferences(last_trained_model=path, last_model=path)
            self.status.value = (f"{result['stopped']} after {len(result.get('history') or [])} epoch(s); "
                                 f"saved {path}: Segment now uses it by default")
        else:
            self.status.value = f"{result['stopped']} before the first epoch ended: no model saved"

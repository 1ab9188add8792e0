"""Segment widget: pick a CT image and a model, run the engine, get a Labels layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from ..ct.volume import ct_from_geometry
from ..preferences import load_preferences, update_preferences
from ._common import (
    BackgroundJob,
    RateMeter,
    ask_yes_no,
    keep_choices_fresh,
    layer_choices,
    shared_engine,
    unique_name,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

MODEL_FILTER = "*.pnxmodel *.keras *.h5"
NO_MODEL = (
    "No model chosen. Train one in the Train widget (or `pneumoseg train`), or choose a "
    "model file (.pnxmodel, or a Keras .keras/.h5 of the paper's network)."
)


class SegmentWidget(Container):
    """Runs the pneumothorax network on a CT image layer, in the engine process."""

    def __init__(self, napari_viewer: "napari.Viewer"):
        import napari.layers

        self.viewer = napari_viewer
        self.image = ComboBox(label="CT image", choices=layer_choices(napari_viewer, napari.layers.Image))
        prefs = load_preferences()
        default_model = prefs.get("last_model") or prefs.get("last_trained_model") or ""
        self.model = FileEdit(label="Model", mode="r", filter=MODEL_FILTER,
                              value=default_model if default_model and Path(default_model).is_file() else "")
        self.batch_size = SpinBox(label="Batch size", value=4, min=1, max=64)
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.01, max=0.99, step=0.05)
        self.device = ComboBox(label="Device", choices=["auto", "cpu", "gpu"], value="auto")
        self.crop_chest = CheckBox(text="Crop to the air inside the chest (faster)", value=True)
        self.skip_slices = CheckBox(text="Only slices from lung base to apex", value=True)
        self.probabilities = CheckBox(text="Also add the probability map", value=False)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.image, self.model, self.batch_size, self.threshold,
                                  self.device, self.crop_chest, self.skip_slices,
                                  self.probabilities, self.run_button,
                                  self.cancel_button, self.status])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.device.changed.connect(lambda: shared_engine(self.device.value))
        keep_choices_fresh(napari_viewer, self)
        #: Asked before replacing an existing layer; tests replace it to avoid a dialog.
        self.confirm_replace: Callable[[str], bool] = lambda name: ask_yes_no(
            self.native, "Replace layer?", f"A layer named '{name}' exists. Replace it?")
        self.job: Optional[BackgroundJob] = None
        #: (slices done, slices to run) of the latest progress shown.
        self.last_progress: Optional[tuple[int, int]] = None
        self.last_error: Optional[str] = None
        shared_engine(self.device.value)  # start importing TensorFlow in the background

    # ------------------------------------------------------------------ actions

    def run(self) -> None:
        """Start segmenting (returns at once; the work runs in a thread + the engine)."""
        from napari.utils import progress as napari_progress

        from ..engine import JobFiles, SegmentRequest

        image = self.image.value
        model = str(self.model.value) if self.model.value else ""
        if image is None:
            return self._fail("No CT image layer: open a CT folder first.")
        if not model or not Path(model).is_file() or Path(model).name in ("", "."):
            return self._fail(NO_MODEL)
        if image.data.ndim != 3:
            return self._fail(f"'{image.name}' is not a 3-D CT volume (shape {image.data.shape}).")
        update_preferences(last_model=model)

        ct, _notes = ct_from_geometry(image.data, scale=image.scale, translate=image.translate,
                                      metadata=image.metadata, name=f"CT layer '{image.name}'")
        total = int(image.data.shape[0])
        pbar = napari_progress(total=total, desc="Segmenting")
        meter = RateMeter()
        engine = shared_engine(self.device.value)
        options = self._input_state()

        def job():
            with JobFiles() as files:
                request = SegmentRequest.for_ct(
                    ct, ct_file=files.save("ct", np.asarray(ct.hu, dtype=np.float32)),
                    out_dir=str(files.path), model=model, **options)
                yield ("progress", 0, total, "starting the engine")
                result = yield from engine.run(request)
                mask = np.load(result["mask"])
                probs = np.load(result["probabilities"]) if result.get("probabilities") else None
            return mask, probs, result

        def on_progress(item):
            if item[0] != "progress":
                return
            _, done, total_, text = item
            self.last_progress = (done, total_)
            pbar.total = total_
            pbar.n = done
            label = meter.text(done, total_) if done else text
            pbar.set_description(f"Segmenting: {label}")
            pbar.refresh()
            self.status.value = label

        def on_done():
            pbar.close()
            self.run_button.enabled, self.cancel_button.enabled = True, False

        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.last_error, self.last_progress = None, None
        self.status.value = "starting..."
        self.job = BackgroundJob(job, on_progress=on_progress,
                                 on_result=lambda res: self._add_result(image, model, *res),
                                 on_error=self._on_error, on_done=on_done)

    @property
    def busy(self) -> bool:
        """True from :meth:`run` until the outcome has been shown and the buttons are back."""
        return self.job is not None and not self.job.done

    def cancel(self) -> None:
        self.status.value = "cancelling..."
        shared_engine(self.device.value).cancel()

    # ----------------------------------------------------------------- results

    def _input_state(self) -> dict:
        """The widget's choices as :class:`~napari_pneumoseg.engine.SegmentRequest` options."""
        return {
            "batch_size": int(self.batch_size.value),
            "threshold": float(self.threshold.value),
            "probabilities": bool(self.probabilities.value),
            "crop_chest": bool(self.crop_chest.value),
            "skip_slices": bool(self.skip_slices.value),
        }

    def _add_result(self, image, model: str, mask, probs, result) -> None:
        from ..model.inference import InferenceInfo

        name = f"{image.name} pneumothorax ({Path(model).stem})"
        common = {"scale": image.scale, "translate": image.translate}
        meta = {"pneumoseg_result": {"model": model, "model_config": result.get("model_config"),
                                     "seconds": result.get("seconds"), "source_layer": image.name}}
        if name in self.viewer.layers:
            if self.confirm_replace(name):
                self.viewer.layers.remove(name)
            else:
                name = unique_name(self.viewer, name)
        self.viewer.add_labels(mask, name=name, metadata={**image.metadata, **meta}, **common)
        if probs is not None:
            pname = unique_name(self.viewer, f"{name} probability")
            self.viewer.add_image(probs, name=pname, colormap="magma", contrast_limits=(0, 1),
                                  blending="additive", **common)
        voxels = int(np.count_nonzero(mask))
        info = InferenceInfo.from_dict(result["info"])
        self.status.value = f"{voxels} voxels labelled in '{name}'; {info.summary()}"

    def _on_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_info

        from ..progress import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = "cancelled: no layer was added"
            show_info("Segmentation cancelled; no layer was added.")
            return
        self._fail(str(exc))

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = message
        show_error(message)

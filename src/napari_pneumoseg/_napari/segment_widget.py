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

from ..preferences import load_preferences, update_preferences
from ._common import RateMeter, ask_yes_no, keep_choices_fresh, layer_choices, shared_engine, unique_name

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
        self.crop_chest = CheckBox(text="Crop to the chest (faster, same mask)", value=True)
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
        self.worker = None
        self.busy = False  # True from run() until the result (or error) has been handled
        self.last_error: Optional[str] = None
        shared_engine(self.device.value)  # start importing TensorFlow in the background

    # ------------------------------------------------------------------ actions

    def run(self) -> None:
        """Start segmenting (returns at once; the work runs in a thread + the engine)."""
        from napari.qt.threading import create_worker
        from napari.utils import progress as napari_progress

        image = self.image.value
        model = str(self.model.value) if self.model.value else ""
        if image is None:
            return self._fail("No CT image layer: open a CT folder first.")
        if not model or not Path(model).is_file() or Path(model).name in ("", "."):
            return self._fail(NO_MODEL)
        if image.data.ndim != 3:
            return self._fail(f"'{image.name}' is not a 3-D CT volume (shape {image.data.shape}).")
        update_preferences(last_model=model)

        total = int(image.data.shape[0])
        pbar = napari_progress(total=total, desc="Segmenting")
        meter = RateMeter()
        engine = shared_engine(self.device.value)
        params = self._params(image, model)

        def job():
            from ..engine import JobFiles

            with JobFiles() as files:
                params["ct"] = files.save("ct", np.asarray(image.data, dtype=np.float32))
                params["out_dir"] = str(files.path)
                yield ("progress", 0, total, "starting the engine")
                gen = engine.run("segment", params)
                while True:
                    try:
                        item = next(gen)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    yield item
                mask = np.load(result["mask"])
                probs = np.load(result["probabilities"]) if result.get("probabilities") else None
            return mask, probs, result

        def on_progress(item):
            _, done, total_, text = item
            if not self.busy:  # a late update after the run ended
                return
            pbar.total = total_
            pbar.n = done
            label = meter.text(done, total_) if done else text
            pbar.set_description(f"Segmenting: {label}")
            pbar.refresh()
            self.status.value = label

        def on_finished():
            pbar.close()
            self._on_finished()

        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.last_error = None
        self.busy = True
        self.status.value = "starting..."
        # Errors are handled (shown as messages), so napari must not re-raise them.
        self.worker = create_worker(job, _connect={
            "yielded": on_progress,
            "returned": lambda res: self._add_result(image, model, *res),
            "errored": self._on_error,
            "finished": on_finished,
        })

    def cancel(self) -> None:
        self.status.value = "cancelling..."
        shared_engine(self.device.value).cancel()

    # ----------------------------------------------------------------- results

    def _params(self, image, model: str) -> dict:
        meta = image.metadata.get("pneumoseg_ct", {})
        spacing = tuple(float(s) for s in image.scale[-3:])
        return {
            "model": model,
            "spacing": spacing,
            "origin": tuple(meta.get("origin", (0.0, 0.0, 0.0))),
            "direction": meta.get("direction", np.eye(3)[::-1].tolist()),
            "batch_size": int(self.batch_size.value),
            "threshold": float(self.threshold.value),
            "probabilities": bool(self.probabilities.value),
            "crop_chest": bool(self.crop_chest.value),
            "skip_slices": bool(self.skip_slices.value),
        }

    def _add_result(self, image, model: str, mask, probs, result) -> None:
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
        info = result.get("info") or {}
        ran = (f"; ran {info['slices_run']} of {info['slices_total']} slices, "
               f"{100 * info['pixel_fraction']:.0f}% of the pixels") if info else ""
        self.status.value = (f"done in {result.get('seconds', 0):.1f} s: {voxels} voxels "
                             f"labelled in '{name}'{ran}")

    def _on_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_info

        from ..progress import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = "cancelled: no layer was added"
            show_info("Segmentation cancelled; no layer was added.")
            return
        self._fail(str(exc))

    def _on_finished(self) -> None:
        self.busy = False
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = message
        show_error(message)

"""Segment widget: pick a CT image and a method, get a Labels layer.

Two methods: the network (a model file, run in the engine process) and pleural air
found from the CT's HU alone (:func:`~napari_pneumoseg.find_pleural_air`, no model,
run in napari's own worker thread).
"""

from __future__ import annotations

import logging
import threading
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
from ..pleural import find_pleural_air
from ..preferences import load_preferences, update_preferences
from ._common import (
    BackgroundJob,
    RateMeter,
    ask_yes_no,
    keep_choices_fresh,
    layer_choices,
    progress_items,
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
log = logging.getLogger(__name__)

#: The Method choices: the network (a model file, in the engine process) ...
NETWORK = "Network (model file)"
#: ... or pleural air from the CT's HU alone (no model, in napari's worker thread).
PLEURAL_AIR = "Pleural air (no model)"


class SegmentWidget(Container):
    """Segments pneumothorax in a CT image layer, by the network or as pleural air without a model.

    With Method :data:`NETWORK` the network runs in the engine process (a model
    file is needed). With :data:`PLEURAL_AIR`,
    :func:`~napari_pneumoseg.find_pleural_air` runs in napari's worker thread: no
    model, no engine; the network's options are disabled. Either way the result is
    a Labels layer on the CT's grid, and *Cancel* adds nothing.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose CT image layers it segments.
    """

    def __init__(self, napari_viewer: "napari.Viewer"):
        import napari.layers

        self.viewer = napari_viewer
        self.image = ComboBox(label="CT image", choices=layer_choices(napari_viewer, napari.layers.Image))
        self.method = ComboBox(label="Method", choices=[NETWORK, PLEURAL_AIR], value=NETWORK)
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
        self.status.native.setWordWrap(True)  # warnings are sentences
        #: What only the network uses: disabled with :data:`PLEURAL_AIR`.
        self.network_options = [self.model, self.batch_size, self.threshold, self.device,
                                self.crop_chest, self.skip_slices, self.probabilities]
        super().__init__(widgets=[self.image, self.method, *self.network_options,
                                  self.run_button, self.cancel_button, self.status])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.device.changed.connect(lambda: shared_engine(self.device.value))
        self.method.changed.connect(self._method_changed)
        keep_choices_fresh(napari_viewer, self)
        #: Asked before replacing an existing layer; tests replace it to avoid a dialog.
        self.confirm_replace: Callable[[str], bool] = lambda name: ask_yes_no(
            self.native, "Replace layer?", f"A layer named '{name}' exists. Replace it?")
        self.job: Optional[BackgroundJob] = None
        #: (done, total) of the latest progress shown: slices for the network, the core's
        #: steps for pleural air.
        self.last_progress: Optional[tuple[int, int]] = None
        self.last_error: Optional[str] = None
        #: The warnings of the latest result (shown in the status line and logged).
        self.last_warnings: list[str] = []
        self._stop: Callable[[], None] = lambda: None  # cancels the running job
        self._method_changed()  # with the network: start importing TensorFlow in the background

    # ------------------------------------------------------------------ actions

    def _method_changed(self, _value=None) -> None:
        """Enable the network's options only for the network, and warm its engine up then."""
        network = self.method.value == NETWORK
        for widget in self.network_options:
            widget.enabled = network
        if network:
            shared_engine(self.device.value)

    def run(self) -> None:
        """Start segmenting with the chosen method, and return at once.

        The network runs in the engine process, pleural air in napari's worker
        thread. Invalid choices end as a message in the status line, in
        ``last_error`` and in napari's notifications; they never raise here.
        """
        image = self.image.value
        if image is None:
            return self._fail("No CT image layer: open a CT folder first.")
        if image.data.ndim != 3:
            return self._fail(f"'{image.name}' is not a 3-D CT volume (shape {image.data.shape}).")
        if self.method.value == PLEURAL_AIR:
            return self._run_pleural_air(image)
        return self._run_network(image)

    def _run_network(self, image) -> None:
        from ..engine import JobFiles, SegmentRequest

        model = str(self.model.value) if self.model.value else ""
        if not model or not Path(model).is_file() or Path(model).name in ("", "."):
            return self._fail(NO_MODEL)
        update_preferences(last_model=model)

        ct, _notes = ct_from_geometry(image.data, scale=image.scale, translate=image.translate,
                                      metadata=image.metadata, name=f"CT layer '{image.name}'")
        total = int(image.data.shape[0])
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

        self._start(job, desc="Segmenting", total=total, stop=engine.cancel,
                    label=lambda done, total_, text: meter.text(done, total_) if done else text,
                    on_result=lambda res: self._add_result(image, model, *res))

    def _run_pleural_air(self, image) -> None:
        # The layer is read here, on the GUI thread; the worker builds the CT and runs the core.
        geometry = (image.data, tuple(image.scale), tuple(image.translate), dict(image.metadata))
        name = f"CT layer '{image.name}'"
        stop = threading.Event()
        core = find_pleural_air  # looked up at each run, so tests can stand in for the core

        def job():
            ct, notes = ct_from_geometry(*geometry, name=name)
            found = yield from progress_items(core, ct, cancel=stop)
            return found, notes

        self._start(job, desc="Finding pleural air", total=0, stop=stop.set,
                    label=lambda done, total, text: f"step {done}/{total}: {text}",
                    on_result=lambda res: self._add_pleural_air(image, *res))

    def _start(self, job: Callable, *, desc: str, total: int, stop: Callable[[], None],
               label: Callable[[int, int, str], str], on_result: Callable) -> None:
        """Run ``job`` in a :class:`BackgroundJob`, its progress in napari's bar and the status line.

        ``stop`` is what :meth:`cancel` calls; ``label(done, total, text)`` is the
        progress text.
        """
        from napari.utils import progress as napari_progress

        pbar = napari_progress(total=total, desc=desc)

        def on_progress(item):
            if item[0] != "progress":
                return
            _, done, total_, text = item
            self.last_progress = (done, total_)
            pbar.total = total_
            pbar.n = done
            text = label(done, total_, text)
            pbar.set_description(f"{desc}: {text}")
            pbar.refresh()
            self.status.value = text

        def on_done():
            pbar.close()
            self.run_button.enabled, self.cancel_button.enabled = True, False

        self._stop = stop
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.last_error, self.last_progress, self.last_warnings = None, None, []
        self.status.value = "starting..."
        self.job = BackgroundJob(job, on_progress=on_progress, on_result=on_result,
                                 on_error=self._on_error, on_done=on_done)

    @property
    def busy(self) -> bool:
        """True from :meth:`run` until the outcome has been shown and the buttons are back."""
        return self.job is not None and not self.job.done

    def cancel(self) -> None:
        """Ask the running job to stop; it then ends as "cancelled" and adds no layer."""
        self.status.value = "cancelling..."
        self._stop()

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

    def _add_labels(self, image, name: str, mask, meta: dict) -> str:
        """Add ``mask`` as a Labels layer on ``image``'s grid (asking before replacing); its name."""
        if name in self.viewer.layers:
            if self.confirm_replace(name):
                self.viewer.layers.remove(name)
            else:
                name = unique_name(self.viewer, name)
        self.viewer.add_labels(mask, name=name, metadata={**image.metadata, **meta},
                               scale=image.scale, translate=image.translate)
        return name

    def _add_result(self, image, model: str, mask, probs, result) -> None:
        from ..model.inference import InferenceInfo

        meta = {"pneumoseg_result": {"model": model, "model_config": result.get("model_config"),
                                     "seconds": result.get("seconds"), "source_layer": image.name}}
        name = self._add_labels(image, f"{image.name} pneumothorax ({Path(model).stem})", mask, meta)
        if probs is not None:
            pname = unique_name(self.viewer, f"{name} probability")
            self.viewer.add_image(probs, name=pname, colormap="magma", contrast_limits=(0, 1),
                                  blending="additive", scale=image.scale, translate=image.translate)
        voxels = int(np.count_nonzero(mask))
        info = InferenceInfo.from_dict(result["info"])
        self.status.value = f"{voxels} voxels labelled in '{name}'; {info.summary()}"

    def _add_pleural_air(self, image, found, notes: list[str]) -> None:
        """Show a :class:`~napari_pneumoseg.PleuralAir`: its mask as a layer, its summary and warnings."""
        meta = {"pneumoseg_result": {"method": "pleural-air", "source_layer": image.name,
                                     "volume_ml": found.volume_ml, "pockets": found.pockets,
                                     "warnings": found.warnings, "facts": found.facts}}
        name = self._add_labels(image, f"{image.name} pleural air", found.mask, meta)
        self.last_warnings = [*notes, *found.warnings]
        for warning in self.last_warnings:
            log.warning("%s: %s", name, warning)
        voxels = int(np.count_nonzero(found.mask))
        self.status.value = "\n".join([f"{voxels} voxels labelled in '{name}'; {found.summary()}",
                                       *(f"warning: {w}" for w in self.last_warnings)])

    def _on_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_info

        from ..engine import EngineError
        from ..progress import Cancelled
        from ._common import JobFailed

        if isinstance(exc, Cancelled):
            self.status.value = "cancelled: no layer was added"
            show_info("Segmentation cancelled; no layer was added.")
            return
        if isinstance(exc, (ValueError, EngineError, JobFailed)):  # messages meant for the user
            return self._fail(str(exc))
        log.error("segmentation failed", exc_info=exc)
        self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.last_error = message
        self.status.value = message
        show_error(message)

"""Pieces every widget shares: the engine singleton, layer pickers, progress, messages."""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional

from ..ct.volume import physical_spacing
from ..engine import Engine

if TYPE_CHECKING:  # pragma: no cover
    import napari

_engines: dict[str, Engine] = {}


def shared_engine(device: str = "auto") -> Engine:
    """One engine process per device setting for the whole napari session."""
    engine = _engines.get(device)
    if engine is None:
        for other in list(_engines):  # one engine at a time: they hold memory
            _engines.pop(other).stop()
        engine = _engines[device] = Engine(device=device)
    return engine.start()


def stop_engines() -> None:
    for engine in _engines.values():
        engine.stop()
    _engines.clear()


def layer_choices(viewer: "napari.Viewer", kind) -> Callable:
    """A magicgui ``choices`` callable listing the viewer's layers of one type."""

    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


def keep_choices_fresh(viewer: "napari.Viewer", container) -> None:
    """Refresh the pickers whenever layers are added, removed or renamed."""

    def refresh(event=None):
        container.reset_choices()

    viewer.layers.events.inserted.connect(refresh)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.changed.connect(refresh)


def spacing_of(layer) -> Optional[tuple[float, float, float]]:
    """The layer's voxel size in mm, or None when it has napari's default unit scale."""
    return physical_spacing(layer.scale)


def unique_name(viewer: "napari.Viewer", name: str) -> str:
    names = {layer.name for layer in viewer.layers}
    if name not in names:
        return name
    k = 2
    while f"{name} [{k}]" in names:
        k += 1
    return f"{name} [{k}]"


class RateMeter:
    """Turns (done, total) updates into a 'N/M slices, X/s, ETA' text."""

    def __init__(self, unit: str = "slices"):
        self.unit, self.start = unit, time.monotonic()
        self.first_done: Optional[int] = None
        self.first_t = self.start

    def text(self, done: int, total: int) -> str:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.first_t = done, now
            return f"{done}/{total} {self.unit}"
        rate = (done - self.first_done) / max(now - self.first_t, 1e-9)
        if rate <= 0:
            return f"{done}/{total} {self.unit}"
        eta = (total - done) / rate
        return f"{done}/{total} {self.unit}, {rate:.2f}/s, ETA {eta:.0f} s"


class JobFailed(Exception):
    """A RuntimeError raised by a widget's job, re-raised as something napari's workers report.

    superqt's generator workers treat a RuntimeError as "the worker was deleted"
    and end without emitting ``errored`` or ``finished``: the widget would wait forever.
    """


def _reporting_runtime_errors(job: Callable) -> Callable:
    """``job`` as a generator function (a plain function becomes one that yields nothing)."""
    import inspect

    def run(*args, **kwargs):
        try:
            if inspect.isgeneratorfunction(job):
                return (yield from job(*args, **kwargs))
            return job(*args, **kwargs)
        except RuntimeError as exc:
            raise JobFailed(str(exc) or type(exc).__name__) from exc
        yield  # pragma: no cover - makes run a generator function in both cases

    return run


_END = object()


def progress_items(func: Callable, *args, cancel=None, **kwargs) -> Generator[tuple, None, Any]:
    """Run a core function that reports through ``progress(done, total, text)``, as a generator.

    ``func(*args, progress=..., cancel=cancel, **kwargs)`` runs in a helper thread,
    and each of its progress reports is yielded, in order, as ``("progress", done,
    total, text)`` while it runs: inside a :class:`BackgroundJob`'s job
    (``result = yield from progress_items(...)``) they reach ``on_progress`` on the
    GUI thread as the work goes on. Every report is yielded before the generator
    returns ``func``'s result or raises its exception.

    Parameters
    ----------
    func : callable
        A core function taking ``progress`` and ``cancel`` keywords.
    *args
        Passed on to ``func``.
    cancel : callable or threading.Event, optional
        Passed on to ``func``. If the generator is closed before ``func`` has
        ended (the worker was quit), ``cancel.set()`` is called when it has one,
        so that ``func`` stops at its next check.
    **kwargs
        Passed on to ``func``.

    Yields
    ------
    tuple
        ``("progress", done, total, text)``.

    Returns
    -------
    object
        What ``func`` returned.

    Raises
    ------
    BaseException
        Whatever ``func`` raised (e.g. :class:`~napari_pneumoseg.progress.Cancelled`).

    Examples
    --------
    >>> def work(n, *, progress, cancel=None):
    ...     for k in range(1, n + 1):
    ...         progress(k, n, f"step {k}")
    ...     return "done"
    >>> gen = progress_items(work, 2)
    >>> next(gen), next(gen)
    (('progress', 1, 2, 'step 1'), ('progress', 2, 2, 'step 2'))
    >>> next(gen)
    Traceback (most recent call last):
    ...
    StopIteration: done
    """
    items: "queue.Queue" = queue.Queue()
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int, text: str = "") -> None:
        items.put(("progress", done, total, text))

    def target() -> None:
        try:
            outcome["value"] = func(*args, progress=progress, cancel=cancel, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the generator
            outcome["error"] = exc
        finally:
            items.put(_END)

    thread = threading.Thread(target=target, daemon=True, name="pneumoseg-core")
    thread.start()
    try:
        while (item := items.get()) is not _END:
            yield item
    finally:
        if thread.is_alive() and hasattr(cancel, "set"):  # closed early: let func stop
            cancel.set()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class BackgroundJob:
    """One background run of a widget, with a deterministic order: the outcome always wins.

    ``job`` is a function or generator function run in napari's worker thread;
    what it yields goes to ``on_progress`` and what it returns to ``on_result``
    (or an exception to ``on_error``), all on the GUI thread. Once the outcome
    has arrived, nothing that arrives later (a progress message still queued, a
    second outcome) is passed on, so the widget's final state is the outcome's.
    ``on_done`` runs last, after the outcome, whatever it was. :attr:`done`
    turns True after ``on_done``: tests wait on it.

    A progress handler may re-enter Qt's event loop (napari's progress bar
    does), and the outcome can then be delivered in the middle of it; so the
    outcome and ``on_done`` are held until the handler has returned, and run
    after it.
    """

    def __init__(self, job: Callable, *, on_progress: Callable, on_result: Callable,
                 on_error: Callable, on_done: Callable):
        from napari.qt.threading import create_worker

        self.final = False
        self.done = False
        self._on_progress, self._on_result = on_progress, on_result
        self._on_error, self._on_done = on_error, on_done
        self._in_progress = False
        self._held: list[Callable[[], None]] = []
        # Errors are handled (shown as messages), so napari must not re-raise them.
        self.worker = create_worker(_reporting_runtime_errors(job), _connect={
            "yielded": self._progress, "returned": self._result, "errored": self._error,
            "finished": self._finished})

    def _progress(self, item) -> None:
        if self.final or self._in_progress:  # after the outcome, or re-entered: stale
            return
        self._in_progress = True
        try:
            self._on_progress(item)
        finally:
            self._in_progress = False
            held, self._held = self._held, []
            for call in held:
                call()

    def _after_progress(self, call: Callable[[], None]) -> None:
        if self._in_progress:
            self._held.append(call)
        else:
            call()

    def _result(self, value) -> None:
        if not self.final:
            self.final = True
            self._after_progress(lambda: self._on_result(value))

    def _error(self, exc: BaseException) -> None:
        if not self.final:
            self.final = True
            self._after_progress(lambda: self._on_error(exc))

    def _finished(self) -> None:
        self.final = True
        self._after_progress(self._done)

    def _done(self) -> None:
        try:
            self._on_done()
        finally:
            self.done = True


def unwritable(path) -> Optional[str]:
    """Why ``path`` cannot be written (read-only, forbidden or full folder), for the status line; None if it can."""
    from ..io.atomic import OutputError, check_writable

    try:
        check_writable(path)
    except OutputError as exc:
        return str(exc)
    return None


def ask_yes_no(parent, title: str, question: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, title, question,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes

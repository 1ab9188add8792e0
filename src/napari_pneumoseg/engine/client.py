"""Talk to the engine process from napari (or any process that must stay TensorFlow-free).

TensorFlow and napari's OpenGL drawing cannot share a process on Mesa (TF's
bundled LLVM clashes with Mesa's), so network jobs run in a child process.
That also gives a hard cancel (terminate) and frees memory between runs.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Generator, Optional

from ..progress import Cancelled
from .requests import Request


class EngineError(Exception):
    """The engine failed a job or stopped unexpectedly; the message says what to do.

    Not a RuntimeError: napari's workers silently drop RuntimeErrors from threads.
    """


class EngineBusy(EngineError):
    """Another job is running in the engine: one job at a time, never two interleaved."""


class Engine:
    """A long-lived engine process that runs network jobs one at a time, outside this process.

    Creating an Engine starts nothing. :meth:`start` launches the process in
    the background (it imports TensorFlow, which takes seconds);
    :meth:`run` (a generator, for ``yield from`` in a napari worker) or
    :meth:`call` (plain callbacks) runs a job and starts the process first
    if needed. The process talks over a private Unix socket with a random
    key, and is kept alive between jobs until :meth:`stop`; if it dies, the
    next job starts a new one.

    Parameters
    ----------
    device : {"auto", "cpu", "gpu"}, default "auto"
        Where the engine runs the network (see
        :func:`~napari_pneumoseg.model.configure_device`); with ``"cpu"`` the
        process does not see any GPU.
    cancel_grace : float, default 5.0
        Seconds a cancelled job may take to stop by itself before the
        process is killed.
    start_timeout : float, default 300.0
        Seconds :meth:`wait_ready` waits for the process to be ready.

    Attributes
    ----------
    info : dict
        What the engine reported when it became ready (TensorFlow version,
        devices, process id); empty before.

    Examples
    --------
    >>> from napari_pneumoseg.engine import SelfTestRequest
    >>> engine = Engine(device="cpu")
    >>> engine.alive
    False
    >>> engine.call(SelfTestRequest(steps=3, step_s=0.0))["steps"]  # doctest: +SKIP
    3
    >>> engine.stop()
    """

    def __init__(self, *, device: str = "auto", cancel_grace: float = 5.0,
                 start_timeout: float = 300.0):
        self.device = device
        self.cancel_grace = cancel_grace
        self.start_timeout = start_timeout
        self.info: dict = {}
        self._proc: Optional[subprocess.Popen] = None
        self._conn = None
        self._listener: Optional[Listener] = None
        self._sockdir: Optional[str] = None
        self._lock = threading.RLock()
        self._job_lock = threading.Lock()  # held while a job runs: one at a time
        self._job_kind = ""
        self._ids = itertools.count(1)
        self._cancel = threading.Event()
        self._connect_thread: Optional[threading.Thread] = None
        self._connect_error: Optional[BaseException] = None
        self._ready = threading.Event()

    # ---------------------------------------------------------------- lifecycle

    @property
    def alive(self) -> bool:
        """Whether the engine process is running (started and not exited)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "Engine":
        """Launch the engine process if it is not running; returns at once, without waiting.

        Use :meth:`wait_ready` to wait until it can take jobs (:meth:`run`
        does).

        Returns
        -------
        Engine
            ``self``.

        Raises
        ------
        OSError
            The process could not be launched.

        Examples
        --------
        >>> engine = Engine().start()  # doctest: +SKIP
        >>> engine.alive  # doctest: +SKIP
        True
        """
        with self._lock:
            if self.alive:
                return self
            self._cleanup()
            self._sockdir = tempfile.mkdtemp(prefix="pneumoseg-engine-")
            address = os.path.join(self._sockdir, "engine.sock")
            authkey = secrets.token_bytes(32)
            self._listener = Listener(address, family="AF_UNIX", authkey=authkey)
            env = dict(os.environ)
            env.setdefault("SM_FRAMEWORK", "tf.keras")
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            if self.device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = "-1"
            env["PNEUMOSEG_DEVICE"] = self.device
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "napari_pneumoseg.engine.server", address],
                stdin=subprocess.PIPE, env=env,
            )
            self._proc.stdin.write((authkey.hex() + "\n").encode())
            self._proc.stdin.close()
            self._ready.clear()
            self._connect_error = None
            self._connect_thread = threading.Thread(target=self._accept, daemon=True,
                                                    name="engine-accept")
            self._connect_thread.start()
            return self

    def _accept(self) -> None:
        try:
            conn = self._listener.accept()
            while not conn.poll(0.5):
                if self._proc is None or self._proc.poll() is not None:
                    raise EngineError(self._died_message("while starting"))
            message = conn.recv()
            if message[0] != "ready":
                raise EngineError(f"engine sent {message[0]!r} instead of 'ready'")
            self.info = message[1]
            self._conn = conn
        except BaseException as exc:  # reported to whoever waits in wait_ready()
            self._connect_error = exc
        finally:
            self._ready.set()

    def wait_ready(self, timeout: Optional[float] = None) -> dict:
        """Block until the engine has imported TensorFlow and is ready; return its info.

        Starts the process first if it is not running.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; default the engine's ``start_timeout``.

        Returns
        -------
        dict
            :attr:`info`: ``tensorflow`` (version), ``devices``, ``pid``.

        Raises
        ------
        EngineError
            The process died while starting, or did not get ready in time
            (it is then stopped).

        Examples
        --------
        >>> Engine(device="cpu").wait_ready()["devices"]  # doctest: +SKIP
        ['/device:CPU:0']
        """
        self.start()
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while not self._ready.wait(0.2):
            if not self.alive:
                # The accept thread may still be blocked in accept(): unblock it.
                self._ready.wait(0.5)
                if not self._ready.is_set():
                    raise EngineError(self._died_message("while starting"))
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError("The engine did not start in time; it was stopped. Try again.")
        if self._connect_error is not None:
            error, self._connect_error = self._connect_error, None
            self._kill()
            raise error if isinstance(error, EngineError) else EngineError(str(error))
        return self.info

    def stop(self) -> None:
        """Ask the engine process to exit, then make sure it did.

        The process is killed if it has not exited after 5 s; its socket
        folder is removed. Safe to call when nothing runs; a later job starts
        a new process.

        Examples
        --------
        >>> engine = Engine()
        >>> engine.stop()  # nothing started: nothing to do
        >>> engine.alive
        False
        """
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(("stop",))
                except OSError:
                    pass
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._kill()
            self._cleanup()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        for closable in (self._conn, self._listener):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self._conn = self._listener = None
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def _died_message(self, when: str) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return (
            f"The segmentation engine stopped unexpectedly {when} (exit code {code}). "
            "It will be restarted for the next run; if this repeats, check memory use and "
            "the terminal output."
        )

    # --------------------------------------------------------------------- jobs

    def cancel(self) -> None:
        """Ask the running job to stop; safe to call from any thread.

        The job's :meth:`run` then raises
        :class:`~napari_pneumoseg.progress.Cancelled`: when the job stops by
        itself, or after ``cancel_grace`` seconds, when the process is killed
        (and restarted for the next job). A job started later is not
        affected.

        Examples
        --------
        >>> engine = Engine()
        >>> engine.cancel()  # no job runs: nothing to stop
        """
        self._cancel.set()

    def run(self, request: Request, *, cancel_grace: Optional[float] = None) -> Generator[tuple, None, dict]:
        """Run one job; yields progress and event tuples, returns the result dict.

        Use it as ``result = yield from engine.run(request)`` inside a generator
        (a napari worker), or :meth:`call` for the plain result.

        Parameters
        ----------
        request : Request
            A :class:`SegmentRequest`, :class:`TrainRequest` or :class:`SelfTestRequest`.
        cancel_grace : float, optional
            Seconds a cancelled job may take to stop by itself before the process
            is killed (default: the engine's).

        Yields
        ------
        tuple
            ``("progress", done, total, text)`` or ``("event", dict)``.

        Returns
        -------
        dict
            The job's result.

        Raises
        ------
        EngineBusy
            Another job is running (from another widget or thread): refused,
            never interleaved.
        EngineError
            The job failed (the message is meant for the user) or the engine died.
        napari_pneumoseg.progress.Cancelled
            :meth:`cancel` was called.

        Examples
        --------
        >>> from napari_pneumoseg.engine import SelfTestRequest
        >>> def job(engine):  # e.g. a napari worker
        ...     result = yield from engine.run(SelfTestRequest(steps=2, step_s=0.0))
        ...     print(result["steps"])
        >>> for item in job(Engine(device="cpu")):  # doctest: +SKIP
        ...     print(item)
        ('progress', 1, 2, 'step 1')
        ('progress', 2, 2, 'step 2')
        2
        """
        if not isinstance(request, Request):
            raise TypeError(f"request must be an engine Request, got {type(request).__name__}")
        if not self._job_lock.acquire(blocking=False):
            raise EngineBusy(f"The engine is already running a {self._job_kind} job; wait for it to finish "
                             f"or cancel it, then start the {request.kind} job again.")
        self._job_kind = request.kind
        try:
            return (yield from self._run(request, cancel_grace))
        finally:
            self._job_lock.release()

    def _run(self, request: Request, cancel_grace: Optional[float]) -> Generator[tuple, None, dict]:
        grace = self.cancel_grace if cancel_grace is None else cancel_grace
        self.wait_ready()
        job_id = next(self._ids)
        self._cancel.clear()
        conn = self._conn
        conn.send(("job", job_id, request.kind, request.as_params()))
        cancel_sent_at: Optional[float] = None
        while True:
            if self._cancel.is_set() and cancel_sent_at is None:
                try:
                    conn.send(("cancel",))
                except OSError:
                    pass
                cancel_sent_at = time.monotonic()
            if cancel_sent_at is not None and time.monotonic() - cancel_sent_at > grace:
                self._kill()  # hard cancel: the job did not stop in time
                raise Cancelled("cancelled (the engine was stopped and will restart)")
            try:
                ready = conn.poll(0.1)
            except OSError:
                ready = False
            if not ready:
                if not self.alive:
                    message = self._died_message("during the job")
                    self._kill()
                    raise EngineError(message)
                continue
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = self._died_message("during the job")
                self._kill()
                raise EngineError(message) from None
            tag = message[0]
            if message[1] != job_id:
                continue
            if tag == "progress":
                yield ("progress",) + tuple(message[2:])
            elif tag == "event":
                yield ("event", message[2])
            elif tag == "done":
                return message[2]
            elif tag == "cancelled":
                raise Cancelled("cancelled by the user")
            elif tag == "error":
                _, _, name, text, tb = message
                raise EngineError(f"{text}" if name in _USER_ERRORS else f"{name}: {text}\n\n{tb}")

    def call(self, request: Request, progress=None, event=None) -> dict:
        """Run one job to the end with callbacks; the plain-function form of :meth:`run`.

        Parameters
        ----------
        request : Request
            A :class:`SegmentRequest`, :class:`TrainRequest` or :class:`SelfTestRequest`.
        progress : callable, optional
            ``progress(done, total, text)``, called for each progress report.
        event : callable, optional
            ``event(dict)``, called for each event (e.g. a training epoch).

        Returns
        -------
        dict
            The job's result.

        Raises
        ------
        EngineError
            The job failed (the message is meant for the user) or the engine died.
        napari_pneumoseg.progress.Cancelled
            :meth:`cancel` was called.
        TypeError
            ``request`` is not an engine :class:`Request`.

        Examples
        --------
        >>> from napari_pneumoseg.engine import SelfTestRequest
        >>> engine = Engine(device="cpu")
        >>> result = engine.call(SelfTestRequest(steps=2, step_s=0.0), progress=print)  # doctest: +SKIP
        1 2 step 1
        2 2 step 2
        >>> result["steps"]  # doctest: +SKIP
        2
        >>> engine.stop()
        """
        gen = self.run(request)
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            if item[0] == "progress" and progress is not None:
                progress(*item[1:])
            elif item[0] == "event" and event is not None:
                event(item[1])

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self._kill()
        except Exception:
            pass


#: Errors whose message is meant for the user as it is (no traceback shown).
_USER_ERRORS = {"CTReadError", "ModelLoadError", "ValueError", "FileExistsError",
                "FileNotFoundError", "EngineError"}


class JobFiles:
    """A private temporary folder for one job's arrays, removed with everything in it on exit.

    Large arrays cross to the engine process as ``.npy`` files named in the
    request, not through the socket. Use it as a context manager around the
    job.

    Attributes
    ----------
    path : pathlib.Path
        The folder (created at once, ``pneumoseg-job-*`` in the system's
        temporary folder).

    Examples
    --------
    >>> import numpy as np
    >>> with JobFiles() as files:
    ...     ct_file = files.save("ct", np.zeros((2, 4, 4), np.float32))
    ...     print(Path(ct_file).name, np.load(ct_file).shape)
    ct.npy (2, 4, 4)
    >>> Path(ct_file).exists()
    False
    """

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="pneumoseg-job-"))

    def __enter__(self) -> "JobFiles":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def save(self, name: str, array) -> str:
        """Save ``array`` (C-contiguous) as ``<name>.npy`` in the folder; return its path.

        Parameters
        ----------
        name : str
            File name without suffix; an existing file of that name is replaced.
        array : array_like
            The data.

        Returns
        -------
        str
            The file's path, as a request field takes it.

        Examples
        --------
        >>> import numpy as np
        >>> with JobFiles() as files:
        ...     print(Path(files.save("mask", np.zeros((2, 4, 4), np.uint8))).name)
        mask.npy
        """
        import numpy as np

        target = self.path / f"{name}.npy"
        np.save(target, np.ascontiguousarray(array))
        return str(target)

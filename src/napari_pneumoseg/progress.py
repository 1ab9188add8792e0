"""Progress reporting and cancellation shared by all long-running core functions.

Core functions take ``progress(done, total, text)`` and ``cancel`` (a callable
returning True, or anything with ``is_set()`` such as a ``threading.Event``),
so the same code serves scripts, the CLI's text bar and napari's workers.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

#: ``progress(done, total, text)``: ``done`` of ``total`` steps, and what is being done.
ProgressFn = Callable[[int, int, str], None]


class Cancelled(Exception):
    """The user cancelled the work; nothing half-done was kept.

    Raised by :func:`check_cancel`, and so by every long-running core
    function given a ``cancel`` that says so.
    """


def is_cancelled(cancel: Any) -> bool:
    """Whether ``cancel`` says to stop.

    Parameters
    ----------
    cancel : None, callable, or object with ``is_set()``
        None (never cancelled), a callable returning true to cancel, or
        anything with ``is_set()`` such as a :class:`threading.Event`.

    Returns
    -------
    bool

    Examples
    --------
    >>> import threading
    >>> stop = threading.Event()
    >>> is_cancelled(None), is_cancelled(stop), is_cancelled(lambda: True)
    (False, False, True)
    >>> stop.set()
    >>> is_cancelled(stop)
    True
    """
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` if ``cancel`` says so (see :func:`is_cancelled`).

    Parameters
    ----------
    cancel : None, callable, or object with ``is_set()``
        As for :func:`is_cancelled`.

    Raises
    ------
    Cancelled
        ``cancel`` says to stop.

    Examples
    --------
    >>> check_cancel(None)
    >>> check_cancel(lambda: True)
    Traceback (most recent call last):
    ...
    napari_pneumoseg.progress.Cancelled: cancelled by the user
    """
    if is_cancelled(cancel):
        raise Cancelled("cancelled by the user")


def report(progress: Optional[ProgressFn], done: int, total: int, text: str = "") -> None:
    """Call ``progress(done, total, text)`` unless ``progress`` is None.

    Parameters
    ----------
    progress : callable or None
        A :data:`ProgressFn`.
    done, total : int
        Steps done so far, of ``total``.
    text : str, default ""
        What is being done.

    Examples
    --------
    >>> report(print, 3, 10, "decoding pixels")
    3 10 decoding pixels
    >>> report(None, 3, 10)
    """
    if progress is not None:
        progress(done, total, text)

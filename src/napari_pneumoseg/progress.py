"""Progress reporting and cancellation shared by all long-running core functions.

Core functions take ``progress(done, total, text)`` and ``cancel`` (a callable
returning True, or anything with ``is_set()`` such as a ``threading.Event``),
so the same code serves scripts, the CLI's text bar and napari's workers.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

ProgressFn = Callable[[int, int, str], None]


class Cancelled(Exception):
    """The user cancelled the work; nothing half-done was kept."""


def is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` if ``cancel`` says so."""
    if is_cancelled(cancel):
        raise Cancelled("cancelled by the user")


def report(progress: Optional[ProgressFn], done: int, total: int, text: str = "") -> None:
    if progress is not None:
        progress(done, total, text)

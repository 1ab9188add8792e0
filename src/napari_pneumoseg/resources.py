"""What one process of this package may use: CPU cores, and memory before a large allocation.

One home for the thread counts of the slice-wise work (pleural air, DICOM
decoding, TensorFlow's intra-op pool). A process alone on a machine uses the
cores it may run on; a batch worker that shares the machine with others is
told its share through the environment variable ``PNEUMOSEG_THREADS``, which
:func:`napari_pneumoseg.batch.local_cluster` sets (cores / workers) and which a
cluster's worker environment can set too.
"""

from __future__ import annotations

import os

#: The environment variable that caps the cores one process uses.
ENV = "PNEUMOSEG_THREADS"


def cpu_budget() -> int:
    """The cores this process may use: ``PNEUMOSEG_THREADS`` if set, else those it may run on.

    Returns
    -------
    int
        At least 1. A value of ``PNEUMOSEG_THREADS`` that is not a positive
        integer is ignored.
    """
    value = os.environ.get(ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


#: Largest array a mask file may claim (its header's sizes x its type): far above any CT mask.
MAX_ARRAY_BYTES = 4 * 2**30


def available_memory() -> "int | None":
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_allocation(nbytes: int, what: str, *, limit: "int | None" = None) -> "str | None":
    """Why allocating ``nbytes`` for ``what`` should be refused, or None if it may go ahead.

    Parameters
    ----------
    nbytes : int
        The size a file's header claims (before anything is allocated).
    what : str
        What the bytes are for, for the message ("the series as HU").
    limit : int, optional
        A fixed cap as well (e.g. :data:`MAX_ARRAY_BYTES`).

    Returns
    -------
    str or None
        A sentence saying how much is needed against what is allowed or free.
    """
    gb = 2**30
    if limit is not None and nbytes > limit:
        return (f"{what} would take {nbytes / gb:.1f} GB, more than the {limit / gb:.0f} GB any such file "
                "needs (a header that lies?)")
    free = available_memory()
    if free is not None and nbytes > free:
        return (f"{what} would take {nbytes / gb:.1f} GB, more than the {free / gb:.1f} GB of memory free; "
                "close other programs, or use a smaller series")
    return None

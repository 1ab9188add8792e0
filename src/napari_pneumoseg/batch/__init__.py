"""Batch work on Dask: every CT series of a folder tree segmented and measured, one task per series.

``run(root, out, ...)`` (and ``pneumoseg batch``) on a local cluster by
default, or on any running Dask cluster by its scheduler address.
"""

from .discover import SeriesTask, discover, fingerprint
from .run import BatchSummary, local_cluster, read_status, run
from .worker import Settings, process_series

__all__ = ["run", "BatchSummary", "discover", "SeriesTask", "fingerprint", "local_cluster", "read_status",
           "Settings", "process_series"]

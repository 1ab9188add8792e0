"""The batch driver: discover series, skip those up to date, run the rest on Dask, record as they finish."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .discover import SeriesTask, discover
from .worker import Settings, model_id, process_series, result_columns

PathLike = Union[str, os.PathLike]

STATUS_FILE = "status.jsonl"
RESULTS_FILE = "results.csv"
METHODS = ("network", "pleural-air")


@dataclass
class BatchSummary:
    """What :func:`run` did.

    ``total`` series were found; ``skipped`` were up to date from an earlier
    run (nothing was done for them); of the ``submitted`` rest, ``done``,
    ``refused`` and ``failed`` count this run's outcomes. ``records`` are this
    run's status records, in the order they finished.
    """

    out: Path
    total: int = 0
    skipped: int = 0
    submitted: int = 0
    done: int = 0
    refused: int = 0
    failed: int = 0
    seconds: float = 0.0
    dashboard: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``12 series: 3 up to date, 8 done, 1 refused, 0 failed in 40 s``."""
        return (f"{self.total} series: {self.skipped} up to date, {self.done} done, {self.refused} refused, "
                f"{self.failed} failed in {self.seconds:.0f} s; results in {self.out}")


def run(
    root: PathLike,
    out: PathLike,
    *,
    method: str = "network",
    model: Optional[PathLike] = None,
    workers: Optional[int] = None,
    scheduler: Any = None,
    measure: bool = False,
    format: str = "seg.nrrd",
    batch_size: int = 4,
    threshold: Optional[float] = None,
    crop_chest: bool = True,
    skip_slices: bool = True,
    device: str = "auto",
    retries: int = 2,
    progress: Optional[Callable[[int, int, str], None]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> BatchSummary:
    """Segment (and measure) every CT series below ``root`` on Dask, one task per series.

    Series are found as :func:`~napari_pneumoseg.ct.read_ct` counts them (see
    :func:`~napari_pneumoseg.batch.discover`). Each one's mask goes to
    ``out/<StudyInstanceUID>/<SeriesInstanceUID>/pneumothorax.<format>`` with a
    ``result.json`` beside it, the folder written atomically; the masks are
    those ``pneumoseg segment`` writes for the same series and options. As each
    task finishes the driver appends its line to ``out/status.jsonl`` (done,
    refused with the reader's reason, or failed with the error) and, when
    done, its row to ``out/results.csv``, so a crash of the driver loses no
    finished work and a failing series does not stop the others.

    Resumable: a series is skipped when its status line has the same input
    fingerprint (its files' paths, sizes and mtimes) and settings, and, when
    done, its folder holds the mask and a matching ``result.json``; everything
    else is redone. At the start ``status.jsonl`` and ``results.csv`` are
    rewritten (atomically) to hold the up-to-date series only, one line each.

    Without ``scheduler`` a :class:`distributed.LocalCluster` of ``workers``
    processes (spawn start method, one thread each) is started and closed; a
    worker that dies mid-task has its series retried on another worker, at
    most ``retries`` times, and so does a task that raises; then it is
    recorded as failed. The model is loaded once per worker process.

    Parameters
    ----------
    root : str or os.PathLike
        A folder tree holding DICOM (a PACS export, nested folders, mixed series).
    out : str or os.PathLike
        The output folder (created). On a cluster every worker must see it
        and ``root`` at the same paths (a shared file system).
    method : {"network", "pleural-air"}, default "network"
        The trained model (``model``) or the pleural air found from HU alone.
    model : str or os.PathLike, optional
        The model file; required with ``method="network"``.
    workers : int, optional
        Local worker processes. Default: one per GPU for the network when
        GPUs are visible (each sees only its own), else one for the network
        (TensorFlow uses all cores itself) and one per core for pleural air.
        Ignored with ``scheduler``.
    scheduler : str or distributed.Client, optional
        A running cluster's scheduler address (e.g. ``tcp://10.0.0.5:8786``)
        or a connected Client; its workers are used as they are (start them
        with ``--nthreads 1`` for the network).
    measure : bool, default False
        Also take the guideline measures (rim depth, interpleural distance,
        apex to cupola, pockets) and size class by each rule; the volumes per
        side and % of hemithorax are always measured.
    format : {"seg.nrrd", "nrrd", "nii.gz", "nii", "dcm"}, default "seg.nrrd"
        The mask format.
    batch_size, threshold, crop_chest, skip_slices, device
        The network's options, as for :func:`~napari_pneumoseg.model.segment`
        and ``pneumoseg segment``.
    retries : int, default 2
        Extra attempts for a series whose task raised or whose worker died.
    progress : callable, optional
        ``progress(done, total, text)`` as series finish; ``text`` gives the
        rate (series/min) and the ETA.
    log : callable, optional
        ``log(line)`` for what the user should see: the dashboard address,
        discovery notes, each refusal or failure.

    Returns
    -------
    BatchSummary

    Raises
    ------
    ValueError
        Unknown ``method`` or ``format``, ``model`` missing for the network, or
        a ``model`` given for pleural air; ``root`` holds no files
        (:class:`~napari_pneumoseg.ct.CTReadError`).
    FileNotFoundError
        ``model`` does not exist.
    OutputError
        ``out`` cannot be written (read-only, forbidden, full): said before
        any work (:func:`~napari_pneumoseg.io.atomic.check_writable`).
    KeyboardInterrupt
        Re-raised after the outstanding tasks are cancelled and a local
        cluster is closed: the finished series are recorded, and no
        half-written file is left in ``out``.
    """
    from ..io.atomic import check_writable
    from ..io.masks import mask_format

    start = time.monotonic()
    say = log or (lambda line: None)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "network":
        if not model:
            raise ValueError("a model file is required with method 'network'; or use method 'pleural-air'")
        if not Path(model).is_file():
            raise FileNotFoundError(f"{model}: no such model file")
    elif model:
        raise ValueError("method 'pleural-air' uses no model; leave the model out")
    format = format.lstrip(".")
    mask_format(f"mask.{format}", for_writing=True)
    settings = Settings(method=method, model=str(Path(model).resolve()) if model else None,
                        model_id=model_id(model) if model else None, format=format, measure=measure,
                        batch_size=batch_size, threshold=threshold, crop_chest=crop_chest,
                        skip_slices=skip_slices, device=device)
    out = Path(out)
    check_writable(out)  # a read-only or full output folder is said before any work
    out.mkdir(parents=True, exist_ok=True)
    _remove_partials(out)

    tasks, notes = discover(root)
    for note in notes:
        say(note)
    summary = BatchSummary(out=out, total=len(tasks), notes=notes)
    todo, kept = _plan(tasks, settings, out)
    summary.skipped = len(tasks) - len(todo)
    columns = result_columns(settings)
    _rewrite(out, kept, columns)
    if summary.skipped:
        say(f"{summary.skipped} of {len(tasks)} series are up to date; {len(todo)} to do")
    if not todo:
        summary.seconds = time.monotonic() - start
        return summary

    client, cluster, own_client = _connect(scheduler, workers, settings, retries)
    try:
        summary.dashboard = _dashboard(client)
        say(f"Dask dashboard: {summary.dashboard}")
        _run_tasks(client, todo, settings, out, columns, retries, summary, progress, say)
    finally:
        _close(client if own_client else None, cluster)
        if cluster is not None:  # our own workers are gone: nothing can be mid-write any more
            _remove_partials(out)
    summary.seconds = time.monotonic() - start
    return summary


# --------------------------------------------------------------------------- resume


def _plan(tasks: list[SeriesTask], settings: Settings, out: Path) -> tuple[list[SeriesTask], list[dict]]:
    """The tasks to run, and the status records of those up to date (kept as they are)."""
    previous = read_status(out / STATUS_FILE)
    todo, kept = [], []
    for task in tasks:
        rec = previous.get(task.folder)
        if rec is not None and _up_to_date(rec, task, settings, out):
            kept.append(rec)
        else:
            todo.append(task)
    order = {folder: k for k, folder in enumerate(previous)}  # as they were written: a rerun changes nothing
    return todo, sorted(kept, key=lambda rec: order[rec["folder"]])


def _up_to_date(rec: dict, task: SeriesTask, settings: Settings, out: Path) -> bool:
    if rec.get("fingerprint") != task.fingerprint or rec.get("settings") != settings.digest:
        return False
    if rec.get("status") == "refused":
        return True
    if rec.get("status") != "done":
        return False
    folder = out / task.folder
    try:
        saved = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return False
    return (saved.get("fingerprint") == task.fingerprint and saved.get("settings") == settings.digest
            and (folder / settings.mask_name).is_file())


def read_status(path: PathLike) -> dict[str, dict]:
    """The last status record of each series folder in a ``status.jsonl`` (empty if there is none).

    Lines that are not JSON records (a line torn by a power cut) are ignored.

    Parameters
    ----------
    path : str or os.PathLike
        The ``status.jsonl`` file.

    Returns
    -------
    dict
        ``folder -> record``.
    """
    records: dict[str, dict] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("folder"), str):
            records[rec["folder"]] = rec
    return records


def _rewrite(out: Path, kept: list[dict], columns: list[str]) -> None:
    """``status.jsonl`` and ``results.csv`` holding only the up-to-date series (atomic replacements)."""
    _replace_if_changed(out / STATUS_FILE, "".join(_status_line(r) for r in kept))
    rows = []
    for rec in kept:
        if rec.get("status") == "done":
            try:
                rows.append(json.loads((out / rec["folder"] / "result.json").read_text())["row"])
            except (OSError, ValueError, KeyError):
                rows.append(rec.get("row") or {})
    _replace_if_changed(out / RESULTS_FILE, _csv_lines([columns, *([r.get(c) for c in columns] for r in rows)]))


def _replace_if_changed(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, unless it already holds exactly that."""
    from ..io.atomic import write_text_atomic

    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_text_atomic(path, text, overwrite=True)


def _status_line(rec: dict) -> str:
    slim = {k: v for k, v in rec.items() if k != "row"}
    return json.dumps(slim, default=str) + "\n"


def _csv_lines(rows) -> str:
    from ..io.table import _cell

    buf = io.StringIO()
    writer = csv.writer(buf)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _append(path: Path, text: str) -> None:
    """Append ``text`` with one ``write`` (O_APPEND) and flush it to disk: a line is there whole or not at all."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        while written < len(data):  # only on exotic file systems
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_partials(out: Path) -> None:
    """Remove temporary files and folders an interrupted atomic write left in ``out`` (hidden ``.*.part*``)."""
    for here, dirs, files in os.walk(out):
        for name in list(dirs):
            if name.startswith(".") and (".partial-" in name or ".old-" in name):
                shutil.rmtree(Path(here) / name, ignore_errors=True)
                dirs.remove(name)
        for name in files:
            if name.startswith(".") and name.endswith(".part"):
                Path(here, name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- Dask


def gpu_count() -> int:
    """How many NVIDIA GPUs ``nvidia-smi -L`` lists (0 without it); TensorFlow is not imported."""
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        listing = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def local_cluster(n_workers: int, *, gpus: int = 0, retries: int = 2):
    """A :class:`distributed.LocalCluster` for batch work: spawned worker processes, one thread each.

    Spawn, not fork: TensorFlow is not fork-safe. Each worker's slice-wise
    work and TensorFlow use its share of the cores (``PNEUMOSEG_THREADS`` =
    cores / workers, see :mod:`napari_pneumoseg.resources`). A worker that dies
    mid-task has it rescheduled at most ``retries`` times
    (``distributed.scheduler.allowed-failures``). With ``gpus``, there is one
    worker per GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES``).

    Parameters
    ----------
    n_workers : int
        Worker processes (ignored with ``gpus``).
    gpus : int, default 0
        GPUs to give one worker each.
    retries : int, default 2
        Deaths of a task's workers allowed before it is given up.

    Returns
    -------
    distributed.SpecCluster
    """
    import dask
    import distributed  # noqa: F401  (registers the distributed config)
    from distributed import LocalCluster, Nanny

    from ..resources import ENV, cpu_budget

    config = {"distributed.worker.multiprocessing-method": "spawn",
              "distributed.scheduler.allowed-failures": retries}
    # Each worker keeps its share of the cores busy, not all of them (threads.cpu_budget).
    share = {ENV: str(max(1, cpu_budget() // max(1, gpus or n_workers)))}
    with dask.config.set(config):
        cluster = LocalCluster(n_workers=0 if gpus else n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", scheduler_port=0, env=share)
        if gpus:
            cluster.worker_spec.update({
                f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": 1,
                                                       "env": {**share, "CUDA_VISIBLE_DEVICES": str(i)}}}
                for i in range(gpus)})
            cluster.scale(gpus)
    return cluster


def _connect(scheduler, workers: Optional[int], settings: Settings, retries: int):
    """(client, our own cluster or None, whether the client is ours to close)."""
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, None, False
    if scheduler:
        return Client(scheduler), None, True
    gpus = gpu_count() if settings.method == "network" and workers is None else 0
    if workers is None:
        workers = 1 if settings.method == "network" else max(1, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cluster = local_cluster(workers, gpus=gpus, retries=retries)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return client, cluster, True


def _close(client, cluster) -> None:
    try:
        if client is not None:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _dashboard(client) -> str:
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:
        services = {}
    if "dashboard" in services:
        return client.dashboard_link
    return "not running (pip install 'bokeh>=3.1' to have it)"


def _run_tasks(client, todo: list[SeriesTask], settings: Settings, out: Path, columns: list[str],
               retries: int, summary: BatchSummary, progress, say) -> None:
    from distributed import as_completed

    futures = {client.submit(process_series, task, settings, str(out), key=f"pneumoseg-{task.folder}-{os.getpid()}"
                             f"-{time.time_ns()}", retries=retries, pure=False): task for task in todo}
    summary.submitted = len(futures)
    started = time.monotonic()
    _report(progress, 0, len(todo), started)
    try:
        for n, future in enumerate(as_completed(futures), 1):
            task = futures.pop(future)
            try:
                rec = future.result()
            except Exception as exc:  # the task raised on every attempt, or its workers died (KilledWorker)
                rec = {"study": task.study_uid, "series": task.series_uid, "folder": task.folder,
                       "fingerprint": task.fingerprint, "settings": settings.digest, "status": "failed",
                       "error": f"{type(exc).__name__}: {exc}"}
            rec["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if rec["status"] == "done":
                _append(out / RESULTS_FILE, _csv_lines([[rec["row"].get(c) for c in columns]]))
            _append(out / STATUS_FILE, _status_line(rec))
            summary.records.append(rec)
            setattr(summary, rec["status"], getattr(summary, rec["status"]) + 1)
            if rec["status"] != "done":
                say(f"{task.folder}: {rec['status']}: {rec.get('reason') or rec.get('error')}")
            _report(progress, n, len(todo), started)
    finally:
        if futures:
            client.cancel(list(futures))


def _report(progress, done: int, total: int, started: float) -> None:
    from ..model.inference import _clock

    if progress is None:
        return
    elapsed = time.monotonic() - started
    rate = 60 * done / elapsed if done and elapsed > 0 else 0.0
    eta = "--:--" if not done else _clock(elapsed / done * (total - done))
    progress(done, total, f"{done}/{total} series, {rate:.1f}/min, ETA {eta}")



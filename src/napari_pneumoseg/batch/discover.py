"""Find every CT series below a folder tree, as :func:`~napari_pneumoseg.ct.read_ct` would count them.

A PACS export is a tree of folders with studies, series and other objects
mixed in any layout. Each CT image series in it (by SeriesInstanceUID) becomes
one :class:`SeriesTask`: its files, the study it belongs to and a fingerprint
of those files, so a rerun can tell whether the input changed. What counts as
a CT image, and how its files form a stack, are read_ct's own rules (its
helpers are used, not copied): localizers, secondary captures, reports,
DICOMDIR and non-DICOM files are not series; a series whose only stacks are
not axial is kept, with the reason it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..ct.dicom import _is_axial, _list_files, _names, _not_ct_reason, _parse, _pick_stack, _SkipFile, _slices_of
from ..progress import check_cancel, report

PathLike = Union[str, os.PathLike]

#: Characters kept in an output folder name; a UID is digits and dots.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class SeriesTask:
    """One CT series to segment: the unit of batch work.

    Attributes
    ----------
    study_uid, series_uid : str
        StudyInstanceUID and SeriesInstanceUID ("" when the files have none).
    files : tuple of str
        The series' files (all its images; :func:`read_ct` picks the stack).
    fingerprint : str
        SHA-256 of the files' paths (relative to the root), sizes and
        modification times: it changes when any file is added, removed,
        replaced or touched.
    description : str
        SeriesDescription of the first file.
    refusal : str or None
        Why the series is refused without being read (no axial stack), or None.
    """

    study_uid: str
    series_uid: str
    files: tuple[str, ...]
    fingerprint: str
    description: str = ""
    refusal: Optional[str] = None

    @property
    def folder(self) -> str:
        """The output folder, relative to the batch's ``out``: ``<study>/<series>``."""
        return f"{_folder_name(self.study_uid, 'study')}/{_folder_name(self.series_uid, 'series')}"

    @property
    def key(self) -> str:
        """A name for the series in status lines and task keys (the output folder)."""
        return self.folder


def _folder_name(uid: str, what: str) -> str:
    """``uid`` if it is safe as a folder name, else a stable hash of it (``no-<what>-uid`` when empty)."""
    if not uid:
        return f"no-{what}-uid"
    if _SAFE.match(uid) and uid not in (".", ".."):
        return uid
    return f"{what}-{hashlib.sha256(uid.encode()).hexdigest()[:16]}"


def _header(file: Path):
    """The dataset of ``file`` without reading its pixel data, or read_ct's reason why it is not one."""
    import pydicom

    try:
        return pydicom.dcmread(file, defer_size="2 KB")
    except Exception:  # no preamble, truncated header...: read_ct's own parser decides
        return _parse(file)


def fingerprint(files, root: PathLike) -> str:
    """SHA-256 (hex) of the files' paths relative to ``root``, sizes and modification times (ns).

    Parameters
    ----------
    files : iterable of path
        The files; their order does not matter.
    root : str or os.PathLike
        Paths are taken relative to it (when below it), so moving the whole
        tree keeps the fingerprint.

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    OSError
        A file cannot be stat'ed (e.g. it was removed).

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "a").write_bytes(b"1")
    >>> fp = fingerprint([root / "a"], root)
    >>> len(fp), fp == fingerprint([str(root / "a")], root)
    (64, True)
    >>> _ = (root / "a").write_bytes(b"12")
    >>> fp == fingerprint([root / "a"], root)
    False
    """
    root = Path(root).resolve()
    entries = []
    for f in files:
        p = Path(f).resolve()
        st = p.stat()
        try:
            name = str(p.relative_to(root))
        except ValueError:
            name = str(p)
        entries.append((name, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def discover(root: PathLike, *, progress=None, cancel: Any = None) -> tuple[list[SeriesTask], list[str]]:
    """Every CT image series below ``root``, one :class:`SeriesTask` each.

    Headers are read without pixel data (``pydicom.dcmread(..., defer_size)``),
    so a tree of thousands of studies is listed in about a millisecond per file.
    Files are found and judged with :func:`~napari_pneumoseg.ct.read_ct`'s own
    helpers: hidden files are skipped, objects that are not CT images
    (localizers, secondary captures, reports, DICOMDIR, non-DICOM files) are
    not series, and images without the geometry read_ct needs are skipped.
    Files without a SeriesInstanceUID form one series per folder.

    Parameters
    ----------
    root : str or os.PathLike
        A folder tree (searched recursively), e.g. a PACS export.
    progress : callable, optional
        ``progress(done, total, text)`` while headers are read.
    cancel : callable or threading.Event, optional
        Checked every few files.

    Returns
    -------
    tasks : list of SeriesTask
        Sorted by study, then series.
    notes : list of str
        What was skipped and why (one line per reason).

    Raises
    ------
    CTReadError
        ``root`` does not exist or holds no files.
    napari_pneumoseg.progress.Cancelled
        ``cancel`` said so.
    """
    files = _list_files(root)
    by_series: dict[tuple[str, str], list] = defaultdict(list)
    info: dict[tuple[str, str], tuple[str, str]] = {}
    skipped: dict[str, list[str]] = defaultdict(list)
    for i, file in enumerate(files):
        if i % 32 == 0:
            check_cancel(cancel)
            report(progress, i, len(files), "reading headers")
        ds = _header(file)
        if isinstance(ds, str):
            skipped[ds].append(file.name)
            continue
        reason = _not_ct_reason(ds)
        if reason:
            skipped[f"that are not CT images ({reason})"].append(file.name)
            continue
        try:
            slices = _slices_of(file, ds)
        except _SkipFile as exc:
            skipped[str(exc)].append(file.name)
            continue
        if not slices:  # an Enhanced CT file holding only localizer frames
            skipped["that hold only localizer frames"].append(file.name)
            continue
        uid = slices[0].series_uid
        key = (uid, "" if uid else str(file.parent))
        by_series[key].extend(slices)
        info.setdefault(key, (str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesDescription", "") or "")))
    report(progress, len(files), len(files), "headers read")

    tasks = []
    for key, slices in by_series.items():
        stack, _ = _pick_stack(slices, key[0], root)
        refusal = None
        if not _is_axial(stack[0].normal):
            refusal = (f"{_describe(key)}: the series has no axial slices (slice normal "
                       f"{[round(float(v), 3) for v in stack[0].normal]}); pneumothorax is segmented on axial CT.")
        names = sorted({str(s.file) for s in slices})
        study, description = info[key]
        tasks.append(SeriesTask(study, key[0], tuple(names), fingerprint(names, root), description, refusal))
    tasks.sort(key=lambda t: (t.study_uid, t.series_uid, t.files[0]))
    notes = [f"Skipped {len(names)} file(s) {reason}: {_names(names)}" for reason, names in skipped.items()]
    return tasks, notes


def _describe(key: tuple[str, str]) -> str:
    return f"series {key[0]}" if key[0] else f"the series without a UID in {key[1]}"

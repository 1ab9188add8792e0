"""Measurement tables as CSV (one row per measured mask)."""

from __future__ import annotations

import csv
import os
from typing import Any, Iterable, Mapping, Union

from .atomic import atomic_path


def write_csv(rows: Iterable[Mapping[str, Any]], path: Union[str, os.PathLike], *,
              overwrite: bool = False) -> None:
    """Write rows (dicts) as a CSV table with a header, columns in first-seen order.

    A key missing from a row, or None, is an empty cell; floats are written
    with 6 significant digits. Written atomically (see
    :func:`~napari_pneumoseg.io.atomic.atomic_path`).

    Parameters
    ----------
    rows : iterable of mapping
        One mapping per row, column name -> value.
    path : str or os.PathLike
        The file to write; its folder must exist.
    overwrite : bool, default False
        Replace an existing file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "measurements.csv"
    >>> write_csv([{"case": "p1", "volume_ml": 123.456789}, {"case": "p2", "dice": None}], path)
    >>> print(path.read_text(), end="")
    case,volume_ml,dice
    p1,123.457,
    p2,,
    """
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value

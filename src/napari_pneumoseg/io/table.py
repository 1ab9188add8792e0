"""Measurement tables as CSV (one row per measured mask)."""

from __future__ import annotations

import csv
import os
from typing import Any, Iterable, Mapping, Union

from .atomic import atomic_path


def write_csv(rows: Iterable[Mapping[str, Any]], path: Union[str, os.PathLike], *,
              overwrite: bool = False) -> None:
    """Write rows (dicts) as CSV, columns in first-seen order; atomic, no silent overwrite."""
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

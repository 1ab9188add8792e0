"""The reader against a hostile corpus: every case reads right or is refused with CTReadError naming it.

The corpus (``hostile_corpus.py``) is made at test time from the real 5 mm chest CT and
pydicom's own test files: damaged bytes and hostile tag values in one slice (alone and in a
series), files that are not DICOM, looping links, missing paths, and every file of pydicom's
corpus alone in a folder. ``benchmarks/fuzz_reader.py`` prints the same cases as a table.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile_corpus import attempt, not_dicom_cases, pydicom_cases, series_cases

from napari_pneumoseg._napari.reader import get_reader

SHARED = Path(os.environ.get("PNEUMOSEG_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CHEST = SHARED / "data" / "real" / "chest_ct_tcia_A0001_5mm"
CASES = series_cases(CHEST) + not_dicom_cases(CHEST) + pydicom_cases()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_case_reads_right_or_is_refused_clearly(case, tmp_path, real_data):
    out = attempt(case, tmp_path)
    assert out.problems == [], out


@pytest.mark.timeout(60)
def test_the_napari_reader_hook_never_raises_on_the_damaged_series(tmp_path, real_data):
    from napari_pneumoseg import CTReadError

    for case in series_cases(CHEST)[:12] + not_dicom_cases(CHEST):
        folder = tmp_path / case.name
        folder.mkdir()
        path = case.make(folder)
        reader = get_reader(str(path))  # napari asks every reader: this must not raise
        if reader is None:
            continue
        try:
            layers = reader(str(path))
        except CTReadError:
            continue
        assert layers and layers[0][0].ndim == 3


def test_the_corpus_covers_what_the_issue_lists():
    names = {c.name for c in CASES}
    for word in ("truncated-half", "truncated-last-bytes", "header-bytes-flipped", "pixel-bytes-flipped",
                 "tail-zeroed", "no-preamble", "garbage-after-dicm", "rows-65535", "columns-0",
                 "bits-allocated-12", "rescale-slope-0", "rescale-slope-nan", "pixel-spacing-zero",
                 "pixel-spacing-negative", "orientation-zero", "orientation-short", "position-text",
                 "no-pixel-data", "frames-lie-1000", "samples-per-pixel-3", "syntax-lies-jpeg2000"):
        assert {f"lone-{word}", f"series-{word}"} <= names, word
    assert {"empty-file", "text-file", "zip-named-dcm", "folder-symlink-loop", "missing-path"} <= names
    assert sum(n.startswith("pydicom-") for n in names) >= 100

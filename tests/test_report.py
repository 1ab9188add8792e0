"""The HTML report: self-contained, the numbers and classes of measure(), atomic, and it renders in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest

from napari_pneumoseg import Cancelled, measure, read_ct, read_mask
from napari_pneumoseg.cli import main
from napari_pneumoseg.phantom import make_phantom, write_phantom_case
from napari_pneumoseg.report import build_report, write_report


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A phantom written as DICOM and read back (so the report can show its header's identifiers)."""
    folder = tmp_path_factory.mktemp("report") / "case"
    write_phantom_case(make_phantom(seed=4, side="right", size="large", n_slices=40, shape_yx=(192, 192)), folder)
    ct = read_ct(folder / "ct")
    truth = read_mask(folder / "truth.nrrd", like=ct)
    return folder, ct, truth


def test_report_is_self_contained_with_the_measured_numbers(case):
    _, ct, truth = case
    pred = truth.copy()
    pred[pred.shape[0] // 2] = 0  # one slice missed, so the agreement is not perfect
    m = measure(pred, ct=ct, truth=truth)
    doc = build_report(ct, pred, truth=truth, measurement=m, method={"method": "test", "model": {"epochs": 3}})
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    # Nothing outside the file: every src/href is embedded data.
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)""", doc)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert len(refs) >= 3  # key images and the area curve
    for rule in ("BTS 2010", "ACCP 2001", "35 mm rule", "20 % rule", "Nikolic"):
        assert rule in doc
    assert f"{m.right_ml:.1f} mL" in doc and f"{m.dice:.3f}" in doc
    assert f"{m.right_rim_depth_mm:.1f} mm (slice {m.sizing.line('rim_depth', 'right').slice})" in doc
    assert "model.epochs" in doc  # the method's mapping, flattened
    assert "No patient identifiers shown" in doc and "Patient ID" not in doc


def test_identifiers_only_when_asked(case):
    _, ct, truth = case
    import pydicom

    header = pydicom.dcmread(ct.metadata["files"][0], stop_before_pixels=True)
    doc = build_report(ct, truth, show=["patient_id", "study_date"])
    assert "Patient ID" in doc and str(header.PatientID) in doc and "No patient identifiers" not in doc
    with pytest.raises(ValueError, match="unknown identifier"):
        build_report(ct, truth, show=["shoe_size"])


def test_write_report_never_overwrites_unless_asked_and_cancel_writes_nothing(case, tmp_path):
    _, ct, truth = case
    out = tmp_path / "r.html"
    out.write_text("earlier")
    with pytest.raises(FileExistsError, match="exists"):
        write_report(out, ct, truth)
    assert out.read_text() == "earlier"
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        write_report(out, ct, truth, overwrite=True, cancel=stop)
    assert out.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    steps = []
    write_report(out, ct, truth, overwrite=True, progress=lambda d, t, text="": steps.append((d, t)))
    assert out.read_text().startswith("<!DOCTYPE html>") and steps[-1] == (3, 3)


def test_cli_report(case, tmp_path, capsys):
    folder, ct, _ = case
    out = tmp_path / "report.html"
    args = ["report", str(folder / "ct"), "--mask", str(folder / "truth.nrrd"), "--out", str(out)]
    assert main(args + ["--method", "phantom truth"]) == 0
    doc = out.read_text()
    assert "phantom truth" in doc and "truth.nrrd" in doc
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main(args + ["--force", "--show", "patient_id,nope"]) == 2
    assert "unknown identifier(s) nope" in capsys.readouterr().err


def _chromium():
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup.sh installs Debian's chromium package")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it as root)")
    return exe


def test_report_renders_and_prints_in_headless_chromium(case, tmp_path):
    _, ct, truth = case
    out = write_report(tmp_path / "r.html", ct, truth)
    exe = _chromium()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    png, pdf = tmp_path / "r.png", tmp_path / "r.pdf"
    subprocess.run(flags + ["--window-size=1000,1400", f"--screenshot={png}", out.as_uri()],
                   check=True, timeout=120, capture_output=True)
    subprocess.run(flags + [f"--print-to-pdf={pdf}", "--no-pdf-header-footer", out.as_uri()],
                   check=True, timeout=120, capture_output=True)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), float)
    assert img.shape == (1400, 1000)
    assert img.std() > 20  # text, tables and images, not a blank page
    assert (img < 120).mean() > 0.05  # the CT images (lung window: air is dark grey) were drawn
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page") >= 2

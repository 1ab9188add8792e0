"""Disk full and read-only folders in every writer: a clear OutputError, no partial file, the old file untouched.

For real on a small tmpfs where the test may mount one (root on Linux), and simulated (the
flush to disk fails with ENOSPC) everywhere.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_pneumoseg.ct import CTVolume
from napari_pneumoseg.io import atomic, write_csv, write_mask
from napari_pneumoseg.io.atomic import OutputError, check_writable, write_text_atomic


def _mount(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KB tmpfs holding one 'old' file per writer's target; skipped where mounting is not allowed."""
    where = tmp_path / "small"
    if not _mount(where, "size=512k"):
        pytest.skip("cannot mount a tmpfs here (needs root): the simulated ENOSPC tests still run")
    yield where
    _umount(where)


@pytest.fixture
def read_only(tmp_path):
    where = tmp_path / "ro"
    if not _mount(where, "size=64k,ro"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield where
    _umount(where)


def _ct(n=40):
    return CTVolume(np.random.default_rng(0).normal(-500, 300, (n, 64, 64)).astype(np.float32),
                    spacing=(2.5, 0.7, 0.7))


def _writers(ct):
    """(name, target file name, write(path, overwrite)) for the writers of user-visible files."""
    mask = (np.random.default_rng(1).random(ct.shape) > 0.5).astype(np.uint8)  # incompressible-ish
    rows = [{"case": f"c{k}", "value": "x" * 200} for k in range(20000)]
    return [
        ("text", "notes.txt", lambda p, o: write_text_atomic(p, "y" * 2_000_000, overwrite=o)),
        ("csv", "table.csv", lambda p, o: write_csv(rows, p, overwrite=o)),
        ("seg.nrrd", "m.seg.nrrd", lambda p, o: write_mask(np.repeat(mask, 8, axis=0), p,
                                                            _ct(ct.shape[0] * 8), overwrite=o)),
        ("nii.gz", "m.nii.gz", lambda p, o: write_mask(np.repeat(mask, 8, axis=0), p, _ct(ct.shape[0] * 8),
                                                        overwrite=o)),
    ]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("which", ["text", "csv", "seg.nrrd", "nii.gz"])
def test_a_full_disk_for_real(small_disk, which):
    name, target, write = next(w for w in _writers(_ct()) if w[0] == which)
    path = small_disk / target
    path.write_bytes(b"old")
    filler = small_disk / "filler"  # leave ~100 KB free
    filler.write_bytes(b"\0" * (400 * 1024))
    with pytest.raises(OutputError) as info:
        write(path, True)
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "disk is full" in str(info.value)
    assert path.read_bytes() == b"old" and _hidden(small_disk) == []


@pytest.mark.parametrize("which", ["text", "csv", "seg.nrrd", "nii.gz"])
def test_a_full_disk_simulated(tmp_path, monkeypatch, which):
    name, target, write = next(w for w in _writers(_ct(4)) if w[0] == which)
    path = tmp_path / target
    path.write_bytes(b"old")

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_fsync_file", full)
    with pytest.raises(OutputError, match="disk is full"):
        write(path, True)
    assert path.read_bytes() == b"old" and _hidden(tmp_path) == []


def test_a_full_disk_in_a_folder_writer(tmp_path, monkeypatch):
    from napari_pneumoseg.ct import write_dicom_series

    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "old.dcm").write_bytes(b"old")

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_fsync_file", full)
    with pytest.raises(OutputError, match="disk is full"):
        write_dicom_series(_ct(4), tmp_path / "ct", overwrite=True)
    assert [p.name for p in (tmp_path / "ct").iterdir()] == ["old.dcm"] and _hidden(tmp_path) == []


def test_a_read_only_folder_is_said_before_any_work(read_only, tmp_path, capsys):
    from napari_pneumoseg.cli import main

    with pytest.raises(OutputError, match="read-only"):
        check_writable(read_only / "sub" / "m.seg.nrrd")
    # The CT folder does not exist either: the output's problem is found first, before any reading.
    code = main(["segment", str(tmp_path / "no-ct"), "--method", "pleural-air", "--out",
                 str(read_only / "m.seg.nrrd")])
    err = capsys.readouterr().err
    assert code == 2 and "read-only" in err and "no-ct" not in err
    from napari_pneumoseg.batch import run

    with pytest.raises(OutputError, match="read-only"):
        run(tmp_path / "no-ct", read_only / "out", method="pleural-air")


def test_check_writable_passes_on_a_writable_folder_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "a" / "b" / "file.txt")
    assert list(tmp_path.iterdir()) == []


def _more_writers():
    """Every other writer of user files, each writing under ``folder``: (name, write(folder) -> target)."""
    from napari_pneumoseg import make_phantom, write_phantom_case
    from napari_pneumoseg.figures import save_case_figure
    from napari_pneumoseg.report import write_report
    from napari_pneumoseg.training import add_case
    from napari_pneumoseg.training.curves import save_curves_png

    ph = make_phantom(seed=3, n_slices=8, shape_yx=(64, 64))
    history = [{"epoch": 1, "loss": 1.0, "val_loss": 1.1}, {"epoch": 2, "loss": 0.8, "val_loss": 0.9}]
    def then(path, write):
        write(path)
        return path

    return {
        "report": lambda d: then(d / "r.html", lambda p: write_report(p, ph.ct, ph.truth, overwrite=True)),
        "phantom case": lambda d: write_phantom_case(ph, d / "case", overwrite=True),
        "add_case": lambda d: add_case(d / "dataset", ph.ct, ph.truth, patient_id="p1", overwrite=True),
        "case figure": lambda d: then(d / "f.png", lambda p: save_case_figure(ph.ct.hu, ph.truth, p)),
        "curves": lambda d: then(d / "c.png", lambda p: save_curves_png(history, p)),
    }


@pytest.mark.parametrize("which", ["report", "phantom case", "add_case", "case figure", "curves"])
def test_a_full_disk_in_the_other_writers_simulated(tmp_path, monkeypatch, which):
    write = _more_writers()[which]
    target = write(tmp_path)  # once for real: what is there before
    before = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_fsync_file", full)
    with pytest.raises(OutputError, match="disk is full"):
        write(tmp_path)
    after = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before and target.exists()  # the earlier output untouched, nothing half-written
    assert not [p for p in tmp_path.rglob(".*")]


def test_a_full_disk_when_saving_a_model(tmp_path, monkeypatch):
    from napari_pneumoseg.model import ModelBundle, save_model

    bundle = ModelBundle.build("resnet18")
    path = tmp_path / "m.pnxmodel"
    path.write_bytes(b"old")

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_fsync_file", full)
    with pytest.raises(OutputError, match="disk is full"):
        save_model(bundle, path, overwrite=True)
    assert path.read_bytes() == b"old" and _hidden(tmp_path) == []

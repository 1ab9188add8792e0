"""first_dicom_file: the reader hook's cheap question "is there DICOM in this folder?"."""

from __future__ import annotations

from napari_pneumoseg.ct import dicom


def _dicom_like(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)


def test_finds_a_dicom_file_below_and_skips_hidden(tmp_path):
    _dicom_like(tmp_path / ".hidden" / "x.dcm")
    _dicom_like(tmp_path / ".y.dcm")
    (tmp_path / "notes.txt").write_text("no")
    assert dicom.first_dicom_file(tmp_path) is None
    _dicom_like(tmp_path / "a" / "b" / "IM0001")
    assert dicom.first_dicom_file(tmp_path) == tmp_path / "a" / "b" / "IM0001"


def test_gives_up_after_max_files_without_walking_the_whole_tree(tmp_path, monkeypatch):
    for k in range(300):
        (tmp_path / f"f{k:03d}.txt").write_text("no")
    _dicom_like(tmp_path / "zz" / "IM0001")
    opened = []
    real = dicom.looks_like_dicom
    monkeypatch.setattr(dicom, "looks_like_dicom", lambda p: opened.append(p) or real(p))
    assert dicom.first_dicom_file(tmp_path, max_files=64) is None
    assert len(opened) == 64
    opened.clear()
    assert dicom.first_dicom_file(tmp_path, max_files=1000) == tmp_path / "zz" / "IM0001"

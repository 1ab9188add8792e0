"""Atomic writes: all or nothing, no clobbering (even racing), durable, with the user's umask."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

from napari_pneumoseg.ct import CTVolume
from napari_pneumoseg.io import atomic, write_csv, write_mask
from napari_pneumoseg.io.atomic import (
    atomic_folder,
    atomic_path,
    current_umask,
    write_bytes_atomic,
    write_text_atomic,
)
from napari_pneumoseg.progress import Cancelled

UMASKS = [0o022, 0o077, 0o002]


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask{m:03o}")
def umask(request):
    """Run the test under a given umask, restoring the caller's afterwards."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ umask and modes


def test_current_umask_reads_the_process_umask_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # unchanged by reading it


def test_current_umask_falls_back_without_proc(umask, monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    assert current_umask() == umask
    assert os.umask(umask) == umask  # the fallback restored it


def test_file_gets_the_umask_mode(tmp_path, umask):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert _mode(tmp) == 0o600  # a private temp file while being written...
        tmp.write_text("hello")
    assert target.read_text() == "hello"
    assert _mode(target) == 0o666 & ~umask  # ...but the result is what the user's umask gives
    assert _names(tmp_path) == ["out.txt"]


def test_replaced_file_gets_the_umask_mode_too(tmp_path, umask):
    target = tmp_path / "out.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and _mode(target) == 0o666 & ~umask


def test_folder_gets_the_umask_mode(tmp_path, umask):
    target = tmp_path / "series"
    with atomic_folder(target) as tmp:
        (tmp / "a.dcm").write_bytes(b"x")
        (tmp / "sub").mkdir()
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "a.dcm") == 0o666 & ~umask
    assert _mode(target / "sub") == 0o777 & ~umask
    assert _names(tmp_path) == ["series"]


def test_helpers_write_bytes_and_text(tmp_path, umask):
    b = write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    t = write_text_atomic(tmp_path / "t.json", '{"é": 1}')
    assert b.read_bytes() == b"\x00\x01" and t.read_text(encoding="utf-8") == '{"é": 1}'
    assert _mode(b) == _mode(t) == 0o666 & ~umask
    with pytest.raises(FileExistsError):
        write_text_atomic(t, "again")
    assert write_text_atomic(t, "again", overwrite=True).read_text() == "again"
    assert _names(tmp_path) == ["b.bin", "t.json"]


# ------------------------------------------------------------------ files: no clobbering, all or nothing


def test_refuses_to_overwrite_and_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "mine.csv"
    target.write_text("precious")
    os.chmod(target, 0o640)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_path(target) as tmp:
            tmp.write_text("clobber")
    assert target.read_text() == "precious" and _mode(target) == 0o640
    assert _names(tmp_path) == ["mine.csv"]


def test_refuses_a_dangling_symlink_too(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        with atomic_path(tmp_path / "link"):
            pass
    assert not (tmp_path / "nowhere").exists()


def test_overwrite_replaces(tmp_path):
    target = tmp_path / "m.txt"
    target.write_text("old")
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["m.txt"]


def test_overwrite_of_a_folder_fails_cleanly(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "d", overwrite=True) as tmp:
            tmp.write_text("x")
    assert (tmp_path / "d").is_dir() and _names(tmp_path) == ["d"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), Cancelled("cancelled"), KeyboardInterrupt()],
                         ids=["error", "cancel", "ctrl-c"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_an_exception_leaves_no_target_and_no_temp_file(tmp_path, error, existing):
    target = tmp_path / "out.nrrd"
    if existing:
        target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("half a fi")
            raise error
    if existing:
        assert target.read_text() == "old" and _names(tmp_path) == ["out.nrrd"]
    else:
        assert _names(tmp_path) == []


def test_a_failure_while_moving_into_place_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("data")
    assert _names(tmp_path) == []


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        with atomic_path(tmp_path / "absent" / "x.txt"):
            pass
    assert _names(tmp_path) == []


def test_temp_file_is_hidden_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.png.") and tmp.exists()


def test_no_clobber_even_when_the_target_appears_meanwhile(tmp_path):
    target = tmp_path / "report.csv"
    with pytest.raises(FileExistsError):
        with atomic_path(target) as tmp:
            tmp.write_text("ours")
            target.write_text("theirs")  # someone else, while we write
    assert target.read_text() == "theirs"
    assert _names(tmp_path) == ["report.csv"]


@pytest.fixture
def no_hard_links(monkeypatch):
    """A file system without hard links (FAT, some network shares)."""
    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", refuse)


def test_without_hard_links_writing_still_works(tmp_path, no_hard_links, umask):
    target = tmp_path / "x.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("data")
    assert target.read_text() == "data" and _mode(target) == 0o666 & ~umask
    assert _names(tmp_path) == ["x.txt"]


def test_without_hard_links_no_clobber_holds_against_a_race(tmp_path, no_hard_links):
    target = tmp_path / "x.txt"
    with pytest.raises(FileExistsError):
        with atomic_path(target) as tmp:
            tmp.write_text("ours")
            target.write_text("theirs")
    assert target.read_text() == "theirs" and _names(tmp_path) == ["x.txt"]


def test_data_is_flushed_before_the_move_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "m.bin"
    events = []
    real_file, real_dir = atomic._fsync_file, atomic._fsync_dir
    monkeypatch.setattr(atomic, "_fsync_file",
                        lambda p: (events.append(("file", p.name, target.exists())), real_file(p)))
    monkeypatch.setattr(atomic, "_fsync_dir",
                        lambda p: (events.append(("dir", p, target.exists())), real_dir(p)))
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"123")
    assert events[0][0] == "file" and events[0][1] == tmp.name and events[0][2] is False
    assert events[-1] == ("dir", tmp_path, True)


# ------------------------------------------------------------------ folders


def test_folder_refuses_a_non_empty_folder_or_a_file(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_folder(tmp_path / "full"):
            pass
    (tmp_path / "afile").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="is a file"):
            with atomic_folder(tmp_path / "afile", overwrite=overwrite):
                pass
    assert _names(tmp_path) == ["afile", "full"] and _names(tmp_path / "full") == ["keep"]


def test_folder_accepts_an_empty_folder_and_creates_parents(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as tmp:
        (tmp / "a").write_text("1")
    with atomic_folder(tmp_path / "new" / "deeper") as tmp:
        (tmp / "b").write_text("2")
    assert _names(tmp_path / "empty") == ["a"] and _names(tmp_path / "new" / "deeper") == ["b"]
    assert _names(tmp_path) == ["empty", "new"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), Cancelled("cancelled"), KeyboardInterrupt()],
                         ids=["error", "cancel", "ctrl-c"])
def test_folder_exception_leaves_nothing(tmp_path, error):
    with pytest.raises(type(error)):
        with atomic_folder(tmp_path / "case") as tmp:
            (tmp / "half").write_text("x")
            raise error
    assert _names(tmp_path) == []


def test_folder_overwrite_keeps_the_old_contents_on_error(tmp_path):
    target = tmp_path / "x"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target, overwrite=True) as tmp:
            (tmp / "b").write_text("new")
            raise RuntimeError("boom")
    assert _names(target) == ["a"]
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "b").write_text("new")
    assert _names(target) == ["b"]
    assert _names(tmp_path) == ["x"]


def test_folder_no_clobber_when_someone_fills_it_meanwhile(tmp_path):
    target = tmp_path / "case"
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_folder(target) as tmp:
            (tmp / "ours").write_text("ours")
            target.mkdir()
            (target / "theirs").write_text("theirs")
    assert _names(target) == ["theirs"] and (target / "theirs").read_text() == "theirs"
    assert _names(tmp_path) == ["case"]


def test_folder_no_clobber_when_a_file_appears_meanwhile(tmp_path):
    target = tmp_path / "case"
    with pytest.raises(FileExistsError, match="is a file"):
        with atomic_folder(target) as tmp:
            (tmp / "ours").write_text("ours")
            target.write_text("theirs")
    assert target.read_text() == "theirs" and _names(tmp_path) == ["case"]


def test_folder_contents_are_flushed_before_the_rename(tmp_path, monkeypatch):
    flushed = []
    real = atomic._fsync_file
    monkeypatch.setattr(atomic, "_fsync_file", lambda p: (flushed.append(p.name), real(p)))
    with atomic_folder(tmp_path / "s") as tmp:
        for k in range(3):
            (tmp / f"{k}.dcm").write_bytes(b"x")
    assert sorted(flushed) == ["0.dcm", "1.dcm", "2.dcm"]


# ------------------------------------------------------------------ the writers end to end


def _ct(shape=(4, 8, 10)):
    return CTVolume(hu=np.full(shape, -1000.0, np.float32), spacing=(2.0, 0.7, 0.7))


@pytest.mark.parametrize("name", ["m.nrrd", "m.seg.nrrd", "m.nii.gz"])
def test_write_mask_has_umask_permissions(tmp_path, umask, name):
    ct = _ct()
    mask = np.zeros(ct.shape, np.uint8)
    mask[1:3, 2:5, 3:7] = 1
    path = write_mask(mask, tmp_path / name, ct)
    assert _mode(path) == 0o666 & ~umask
    assert _names(tmp_path) == [name]
    with pytest.raises(FileExistsError):
        write_mask(mask, path, ct)


def test_write_csv_has_umask_permissions(tmp_path, umask):
    path = tmp_path / "t.csv"
    write_csv([{"case": "a", "volume_ml": 1.5}], path)
    assert path.read_text().splitlines() == ["case,volume_ml", "a,1.5"]
    assert _mode(path) == 0o666 & ~umask
    with pytest.raises(FileExistsError):
        write_csv([{"case": "b"}], path)
    assert _names(tmp_path) == ["t.csv"]

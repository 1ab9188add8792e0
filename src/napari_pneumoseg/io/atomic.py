"""Write files and folders so that a crash or cancel never leaves a half-written or clobbered result.

The one implementation of atomic writing in napari-pneumoseg; every writer of
user-visible output (model files, masks, tables, figures, DICOM series,
preferences) goes through it. The contract:

- **All or nothing.** Output is assembled under a hidden temporary name
  beside the target and moved into place only when the ``with`` block
  succeeds; on any exception (an error, :class:`~napari_pneumoseg.progress.Cancelled`,
  ``KeyboardInterrupt``) the temporary file or folder is removed and the
  target is left as it was.
- **Durable.** Before the move the data are flushed to disk (``fsync`` of the
  file, or of every file and folder of a folder tree), and after it the
  parent folder is flushed, so a power cut never leaves a named but empty file.
- **No clobbering.** An existing target is replaced only with
  ``overwrite=True``; otherwise :class:`FileExistsError`, also when the
  target appears while the block runs (someone else's file is never replaced).
- **The user's permissions.** Results get the mode the user's umask gives a
  new file (``0o666 & ~umask``) or folder (``0o777 & ~umask``), as if written
  with a plain ``open``; not the private ``0o600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = [
    "OutputError",
    "check_writable",
    "atomic_path",
    "atomic_folder",
    "write_bytes_atomic",
    "write_text_atomic",
    "current_umask",
    "file_mode",
    "folder_mode",
]


# --------------------------------------------------------------------------- disk errors

#: errno values that mean "this output cannot be written here", with what to do about it.
_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or choose another folder",
    errno.EDQUOT: "your disk quota is used up; free some space or choose another folder",
    errno.EROFS: "the folder is on a read-only file system; choose another folder",
    errno.EACCES: "you may not write in that folder; choose another folder",
    errno.EPERM: "you may not write in that folder; choose another folder",
}


class OutputError(OSError):
    """An output could not be written (disk full, read-only or forbidden folder); nothing was left behind.

    An :class:`OSError` with the errno of the cause; its message names the
    target and says what to do.
    """


def _output_error(exc: BaseException, target: Path) -> "OutputError | None":
    """The :class:`OutputError` for a write that failed with ``exc``, or None if ``exc`` is not a disk problem."""
    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, OSError) and not isinstance(cause, OutputError) and cause.errno in _WRITE_HINTS:
            return OutputError(cause.errno, f"cannot write {target}: {_WRITE_HINTS[cause.errno]} "
                                            f"({os.strerror(cause.errno)}); nothing was written")
    return None


@contextlib.contextmanager
def _as_output_error(target: Path) -> Iterator[None]:
    """Re-raise a disk problem in the block as an :class:`OutputError` naming ``target``; anything else as it is."""
    try:
        yield
    except Exception as exc:  # a library's own wrapper of ENOSPC too (h5py, pydicom, keras)
        err = _output_error(exc, target)
        if err is None:
            raise
        raise err from exc


def check_writable(path: PathLike) -> None:
    """Raise :class:`OutputError` now, before any work, if ``path`` could not be created.

    ``path`` is a file or folder to be written; the nearest folder of it that
    exists must take a new file (tried for real: permissions alone say nothing
    for root, or on a read-only mount).

    Raises
    ------
    OutputError
        The folder is read-only, forbidden or full.
    """
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        here = here.parent
    with _as_output_error(Path(path)):
        fd, name = tempfile.mkstemp(dir=here, prefix=".pneumoseg-write-test-")
        os.close(fd)
        os.unlink(name)


# --------------------------------------------------------------------------- permissions


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    On Linux it is read from ``/proc/self/status``; elsewhere it is set and
    restored at once with :func:`os.umask` (which, for an instant, changes it
    for every thread of the process).

    Returns
    -------
    int
        The umask, e.g. ``0o022``.

    Examples
    --------
    >>> old = os.umask(0o027)
    >>> oct(current_umask())
    '0o27'
    >>> _ = os.umask(old)
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a new file gets from the user's umask: ``0o666 & ~umask``.

    Returns
    -------
    int
        E.g. ``0o644`` with the usual umask ``0o022``.

    Examples
    --------
    >>> old = os.umask(0o022)
    >>> oct(file_mode())
    '0o644'
    >>> _ = os.umask(old)
    """
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a new folder gets from the user's umask: ``0o777 & ~umask``.

    Returns
    -------
    int
        E.g. ``0o755`` with the usual umask ``0o022``.

    Examples
    --------
    >>> old = os.umask(0o022)
    >>> oct(folder_mode())
    '0o755'
    >>> _ = os.umask(old)
    """
    return 0o777 & ~current_umask()


# --------------------------------------------------------------------------- flushing


def _fsync_file(path: Path) -> None:
    flags = os.O_RDONLY if os.name != "nt" else os.O_RDWR  # Windows wants write access to flush
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_FSYNC_DIR_UNSUPPORTED = {getattr(errno, n) for n in ("EINVAL", "EBADF", "ENOTSUP", "EOPNOTSUPP")
                          if hasattr(errno, n)}


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames); a no-op where folders cannot be opened."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every regular file and folder below ``root`` (and ``root`` itself)."""
    for here, _dirs, files in os.walk(root):
        for name in files:
            p = Path(here) / name
            if p.is_file() and not p.is_symlink():
                _fsync_file(p)
        _fsync_dir(Path(here))


def _exists_message(path: Path) -> str:
    return f"{path} already exists; choose another name or allow replacing it (overwrite=True)."


# --------------------------------------------------------------------------- files


def _move_no_clobber(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists, without a window for a race.

    A hard link is created atomically and fails if the name is taken. Where
    hard links are not supported (FAT, some network shares) the name is first
    reserved with an exclusive create (which also fails if it is taken), then
    replaced by ``tmp``; a reader may then briefly see an empty file, but no
    existing file is ever replaced.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    except (OSError, AttributeError, NotImplementedError):
        _reserve_and_replace(tmp, path)
        return
    tmp.unlink()


def _reserve_and_replace(tmp: Path, path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    try:
        placeholder = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # remove our placeholder, never someone else's file
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (placeholder.st_dev, placeholder.st_ino):
                os.unlink(path)
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it becomes ``path`` only if the block succeeds.

    The temporary file already exists (empty) and sits in the same folder as
    ``path``, under a hidden name (``.<name>.<random>.part``). Write it by name
    (any library's ``save(tmp)``) or open it; replacing it with a new file of
    the same name is fine too. When the block ends without an exception the
    file is flushed to disk, given the mode of a new file under the user's
    umask (``0o666 & ~umask``), moved onto ``path`` and the folder flushed.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create. Its folder must exist.
    overwrite : bool, default False
        Replace an existing ``path`` (atomically: readers see the old or the
        new file, never a mixture). Without it an existing ``path`` is never
        touched, even one that appears while the block runs.

    Yields
    ------
    pathlib.Path
        The temporary file to write.

    Raises
    ------
    FileExistsError
        ``path`` exists (checked on entry, and again atomically at the move)
        and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.
    Exception
        Whatever the block raises (including
        :class:`~napari_pneumoseg.progress.Cancelled` and ``KeyboardInterrupt``)
        is re-raised after removing the temporary file; ``path`` is untouched.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "table.csv") as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> (folder / "table.csv").read_text()
    'a,b\\n1,2\\n'
    >>> try:
    ...     with atomic_path(folder / "table.csv") as tmp:
    ...         _ = tmp.write_text("replaced?")
    ... except FileExistsError:
    ...     print("refused")
    refused
    >>> with atomic_path(folder / "table.csv", overwrite=True) as tmp:
    ...     _ = tmp.write_text("replaced")
    >>> (folder / "table.csv").read_text()
    'replaced'
    """
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(_exists_message(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder to write {path.name} into.")
    with _as_output_error(path):
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        with _as_output_error(path):
            yield tmp
            _fsync_file(tmp)
            os.chmod(tmp, file_mode())
            if overwrite:
                os.replace(tmp, path)
            else:
                _move_no_clobber(tmp, path)
            _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to create; its folder must exist.
    data : bytes
        The whole content.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> p = write_bytes_atomic(Path(tempfile.mkdtemp()) / "x.bin", b"\\x00\\x01")
    >>> p.read_bytes()
    b'\\x00\\x01'
    """
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def write_text_atomic(path: PathLike, text: str, *, overwrite: bool = False,
                      encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to create; its folder must exist.
    text : str
        The whole content (newlines written as given).
    overwrite : bool, default False
        Replace an existing file.
    encoding : str, default "utf-8"
        Text encoding.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> p = write_text_atomic(Path(tempfile.mkdtemp()) / "prefs.json", '{"a": 1}')
    >>> p.read_text()
    '{"a": 1}'
    """
    return write_bytes_atomic(path, text.encode(encoding), overwrite=overwrite)


# --------------------------------------------------------------------------- folders


def _folder_not_empty(folder: Path) -> FileExistsError:
    return FileExistsError(
        f"{folder} already exists and is not empty; choose a new or empty folder "
        "(or pass overwrite=True to replace its contents)."
    )


def _folder_is_a_file(folder: Path) -> FileExistsError:
    return FileExistsError(f"{folder} exists and is a file, not a folder; choose another folder.")


def _rename_folder_no_clobber(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` onto ``folder`` if that is absent or an empty folder; never replace contents.

    POSIX ``rename`` replaces an empty folder atomically and fails on a
    non-empty one or a file, so nothing that appeared meanwhile is lost.
    """
    if os.name == "nt" and folder.is_dir():  # Windows renames only onto free names
        try:
            os.rmdir(folder)  # fails if someone filled it meanwhile
        except OSError:
            raise _folder_not_empty(folder) from None
    try:
        os.rename(tmp, folder)
    except OSError as exc:
        if folder.is_dir() and not folder.is_symlink():
            raise _folder_not_empty(folder) from None
        if folder.exists() or folder.is_symlink():
            raise _folder_is_a_file(folder) from None
        raise exc


@contextlib.contextmanager
def atomic_folder(folder: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; it becomes ``folder`` only if the block succeeds.

    The temporary folder (``.<name>.partial-<random>`` beside ``folder``) is
    created empty. When the block ends without an exception every file and
    folder in it is flushed to disk, it gets the mode of a new folder under
    the user's umask (``0o777 & ~umask``; files inside keep the modes their
    writers gave them) and is renamed to ``folder``; the parent is flushed.
    Parent folders of ``folder`` are created as needed.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to create. An existing *empty* folder is fine.
    overwrite : bool, default False
        Replace an existing non-empty ``folder`` and all its contents. The old
        folder is moved aside first and deleted only once the new one is in
        place; if the move fails it is put back.

    Yields
    ------
    pathlib.Path
        The temporary folder to fill.

    Raises
    ------
    FileExistsError
        ``folder`` is a file (even with ``overwrite``), or it is a non-empty
        folder and ``overwrite`` is false (checked on entry, and again
        atomically at the rename).
    Exception
        Whatever the block raises (including
        :class:`~napari_pneumoseg.progress.Cancelled` and ``KeyboardInterrupt``)
        is re-raised after removing the temporary folder; ``folder`` is left
        as it was.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_folder(root / "case") as tmp:
    ...     _ = (tmp / "info.json").write_text("{}")
    >>> sorted(p.name for p in (root / "case").iterdir())
    ['info.json']
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise _folder_is_a_file(folder)
        if not overwrite and any(folder.iterdir()):
            raise _folder_not_empty(folder)
    tmp = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    with _as_output_error(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        with _as_output_error(folder):
            yield tmp
            _fsync_tree(tmp)
            os.chmod(tmp, folder_mode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if overwrite and (folder.exists() or folder.is_symlink()):
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(folder, old)
            os.rename(tmp, folder)
        else:
            _rename_folder_no_clobber(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        if old is not None and not folder.exists():
            os.rename(old, folder)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            if old.is_symlink():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)

"""A corpus of hostile DICOM input, generated from files the tests already have, and the reader's contract on it.

Used by ``tests/ct/test_corpus.py`` (each case a test) and ``benchmarks/fuzz_reader.py`` (a table).
A case writes what it needs under a folder of its own and returns the path to read; the
contract (:func:`attempt`): :func:`~napari_pneumoseg.read_ct` either returns a volume with
finite HU and positive, finite spacing, or raises ``CTReadError`` naming the file or folder;
nothing else escapes, memory stays bounded by what is on disk (not by a header's claims).
"""

from __future__ import annotations

import io
import os
import shutil
import time
import tracemalloc
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

#: Slices of the real 5 mm chest CT that the series cases start from (four middle slices).
BASE_SLICES = ("1-20.dcm", "1-21.dcm", "1-22.dcm", "1-23.dcm")
#: The damaged or edited slice of a series case.
VICTIM = BASE_SLICES[1]
#: Memory a read may use beyond a multiple of the bytes on disk.
MEMORY_SLACK = 96 * 2**20


@dataclass
class Case:
    """One input: ``make(folder) -> path`` to read; what should happen, and a word the message must hold."""

    name: str
    make: Callable[[Path], object]
    expect: str = "either"  # "read", "refused" or "either"
    says: Optional[str] = None  # in the refusal, or in the warnings of a read
    slices: Optional[int] = None  # slices a read must give


@dataclass
class Outcome:
    case: str
    status: str  # "read", "refused" or "crash"
    seconds: float
    message: str = ""
    peak_mb: float = 0.0
    disk_mb: float = 0.0
    shape: tuple = ()
    problems: list = field(default_factory=list)  # contract breaches


def attempt(case: Case, root: Path) -> Outcome:
    """Make ``case`` under ``root / case.name``, read it, and check the contract (never raises)."""
    from napari_pneumoseg import CTReadError, read_ct

    folder = root / case.name
    folder.mkdir(parents=True, exist_ok=True)
    path = case.make(folder)
    disk = _disk_bytes(folder)
    tracemalloc.start()
    t0 = time.monotonic()
    out = Outcome(case.name, "crash", 0.0, disk_mb=disk / 2**20)
    try:
        ct = read_ct(path)
    except CTReadError as exc:
        out.status, out.message = "refused", str(exc)
    except Exception as exc:  # the contract says this never happens
        out.message = f"{type(exc).__name__}: {exc}"
        out.problems.append(f"raised {type(exc).__name__}, not CTReadError: {exc}")
    else:
        out.status, out.shape = "read", tuple(ct.shape)
        out.message = " | ".join(ct.warnings)
        if min(ct.shape) < 1:
            out.problems.append(f"an empty volume {ct.shape}")
        if not np.all(np.isfinite(ct.hu)):
            out.problems.append("non-finite HU")
        if not all(np.isfinite(s) and s > 0 for s in ct.spacing):
            out.problems.append(f"spacing {ct.spacing}")
        if case.slices is not None and ct.shape[0] != case.slices:
            out.problems.append(f"{ct.shape[0]} slices, expected {case.slices}")
        del ct
    finally:
        out.seconds = time.monotonic() - t0
        out.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if out.status == "refused" and not _names_input(out.message, path):
        out.problems.append(f"the refusal names neither the file nor the folder: {out.message}")
    if case.expect != "either" and out.status != case.expect:
        out.problems.append(f"{out.status}, expected {case.expect}: {out.message[:300]}")
    if case.says and out.status != "crash" and case.says.lower() not in out.message.lower():
        out.problems.append(f"the message does not say {case.says!r}: {out.message[:300]}")
    if out.peak_mb * 2**20 > MEMORY_SLACK + 8 * disk:
        out.problems.append(f"allocated {out.peak_mb:.0f} MB for {disk / 2**20:.1f} MB on disk")
    return out


def _names_input(message: str, path) -> bool:
    paths = path if isinstance(path, (list, tuple)) else [path]
    words = set()
    for p in paths:
        p = Path(p)
        words |= {p.name, p.parent.name, str(p)}
    return any(w and w in message for w in words)


def _disk_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder, followlinks=False):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------- building blocks


def _series(src: Path, folder: Path) -> list[Path]:
    out = []
    for name in BASE_SLICES:
        target = folder / name
        target.write_bytes((src / name).read_bytes())
        out.append(target)
    return out


def _lone(src: Path, folder: Path) -> Path:
    target = folder / VICTIM
    target.write_bytes((src / VICTIM).read_bytes())
    return target


def _bytes_case(src: Path, damage: Callable[[bytes], bytes], in_series: bool):
    def make(folder: Path):
        files = _series(src, folder) if in_series else [_lone(src, folder)]
        victim = next(f for f in files if f.name == VICTIM)
        victim.write_bytes(damage(victim.read_bytes()))
        return folder
    return make


def _tag_case(src: Path, edit: Callable, in_series: bool):
    def make(folder: Path):
        import pydicom
        from pydicom import config

        files = _series(src, folder) if in_series else [_lone(src, folder)]
        victim = next(f for f in files if f.name == VICTIM)
        ds = pydicom.dcmread(victim)
        mode = config.settings.writing_validation_mode
        config.settings.writing_validation_mode = config.IGNORE
        try:
            edit(ds)
            ds.save_as(victim)
        finally:
            config.settings.writing_validation_mode = mode
        return folder
    return make


def _set(**values):
    def edit(ds):
        for key, value in values.items():
            setattr(ds, key, value)
    return edit


def _raw(tag: int, vr: str, value):
    def edit(ds):
        from pydicom.dataelem import DataElement

        ds[tag] = DataElement(tag, vr, value)
    return edit


def _delete(*keys):
    def edit(ds):
        for key in keys:
            delattr(ds, key)
    return edit


def _text_value(tag: int, text: str):
    """A damage that stores ``text`` as the value of ``tag`` in an implicit-VR little-endian file.

    pydicom refuses to write some hostile values (text in a DS), so the bytes are edited:
    the element's value and its 4-byte length.
    """
    def damage(data: bytes) -> bytes:
        key = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
        at = data.find(key, 132)
        length = int.from_bytes(data[at + 4:at + 8], "little")
        value = text.encode() + (b" " if len(text) % 2 else b"")
        return data[:at + 4] + len(value).to_bytes(4, "little") + value + data[at + 8 + length:]
    return damage


def _flip(offsets):
    def damage(data: bytes) -> bytes:
        b = bytearray(data)
        for o in offsets:
            if 0 <= o < len(b):
                b[o] ^= 0xFF
        return bytes(b)
    return damage


def _pixel_offset(data: bytes) -> int:
    return data.rfind(b"\xe0\x7f\x10\x00")  # the (7FE0,0010) Pixel Data tag, little endian


def _lying_syntax(uid: str):
    """The file meta's TransferSyntaxUID replaced (lengths fixed up), the data set left as it was encoded."""
    def damage(data: bytes) -> bytes:
        at = data.find(b"\x02\x00\x10\x00UI")
        old_len = int.from_bytes(data[at + 6:at + 8], "little")
        value = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
        out = data[:at + 6] + len(value).to_bytes(2, "little") + value + data[at + 8 + old_len:]
        group = out.find(b"\x02\x00\x00\x00UL\x04\x00")
        if group >= 0:
            length = int.from_bytes(out[group + 8:group + 12], "little") + len(value) - old_len
            out = out[:group + 8] + length.to_bytes(4, "little") + out[group + 12:]
        return out
    return damage


# --------------------------------------------------------------------------- the corpus


def series_cases(chest: Path) -> list[Case]:
    """Damaged bytes and hostile tag values in one slice of four real ones, alone and inside the series."""
    n = len(BASE_SLICES)
    damages = {
        "truncated-half": lambda d: d[: len(d) // 2],
        "truncated-last-bytes": lambda d: d[:-7],
        "header-bytes-flipped": _flip(range(140, 1200, 53)),
        "pixel-bytes-flipped": lambda d: _flip(range(_pixel_offset(d) + 12, len(d), 257))(d),
        "tail-zeroed": lambda d: d[: len(d) - 65536] + b"\x00" * 65536,
        "no-preamble": lambda d: d[128:],
        "no-preamble-no-dicm": lambda d: d[132:],
        "garbage-after-dicm": lambda d: d[:132] + np.random.default_rng(0).bytes(20000),
        "syntax-lies-big-endian": _lying_syntax("1.2.840.10008.1.2.2"),
        "syntax-lies-explicit": _lying_syntax("1.2.840.10008.1.2.1"),
        "syntax-lies-rle": _lying_syntax("1.2.840.10008.1.2.5"),
        "syntax-lies-jpeg2000": _lying_syntax("1.2.840.10008.1.2.4.90"),
    }
    # (edit, what a refusal or warning says, the slice is unusable)
    tags = {
        "rows-65535": (_set(Rows=65535), "rows", True),
        "columns-0": (_set(Columns=0), "columns", True),
        "bits-allocated-12": (_set(BitsAllocated=12), "bitsallocated", True),
        "rescale-slope-0": (_raw(0x00281053, "DS", "0"), "rescaleslope", True),
        "rescale-slope-nan": (_raw(0x00281053, "DS", "NaN"), "rescaleslope", True),
        "rescale-intercept-text": (None, "rescaleintercept", True),
        "pixel-spacing-zero": (_raw(0x00280030, "DS", ["0", "0"]), "pixelspacing", True),
        "pixel-spacing-negative": (_raw(0x00280030, "DS", ["-0.7", "0.7"]), "pixelspacing", True),
        "orientation-zero": (_raw(0x00200037, "DS", ["0"] * 6), "orientation", True),
        "orientation-short": (_raw(0x00200037, "DS", ["1", "0", "0"]), "geometry", True),
        "position-text": (None, "geometry", True),
        "no-pixel-data": (_delete("PixelData"), "no pixel data", True),
        "frames-lie-1000": (_raw(0x00280008, "IS", "1000"), "frame", True),
        "frames-lie-0": (_raw(0x00280008, "IS", "0"), "frame", True),
        "samples-per-pixel-3": (_set(SamplesPerPixel=3), "samples per pixel", True),
        "rescale-slope-missing": (_delete("RescaleSlope"), None, False),  # default 1: reads
    }
    cases = []
    for label, damage in damages.items():
        cases.append(Case(f"lone-{label}", _bytes_case(chest, damage, False)))
        cases.append(Case(f"series-{label}", _bytes_case(chest, damage, True)))
    text = {"rescale-intercept-text": _text_value(0x00281052, "minus1024"),
            "position-text": _text_value(0x00200032, "a\\b\\c")}
    for label, (edit, says, unusable) in tags.items():
        def make(in_series, edit=edit, label=label):
            return _bytes_case(chest, text[label], in_series) if edit is None else _tag_case(chest, edit, in_series)
        cases.append(Case(f"lone-{label}", make(False),
                          expect="refused" if unusable else "read", says=says if unusable else None))
        cases.append(Case(f"series-{label}", make(True), expect="read",
                          says=VICTIM if unusable else None, slices=n - 1 if unusable else n))
    return cases


def not_dicom_cases(chest: Path) -> list[Case]:
    """Files that are not DICOM at all, links that loop, paths that do not exist."""
    def empty(folder):
        (folder / "empty.dcm").write_bytes(b"")
        return folder

    def text(folder):
        (folder / "notes.dcm").write_text("Patient is fine.\n" * 50)
        return folder

    def zipped(folder):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("1-20.dcm", (chest / "1-20.dcm").read_bytes())
        (folder / "study.dcm").write_bytes(buf.getvalue())
        return folder

    def file_link_loop(folder):
        _series(chest, folder)
        os.symlink("b.dcm", folder / "a.dcm")
        os.symlink("a.dcm", folder / "b.dcm")
        return folder

    def folder_link_loop(folder):
        (folder / "series").mkdir()
        _series(chest, folder / "series")
        os.symlink("..", folder / "series" / "up")
        return folder

    def lone_link_loop(folder):
        os.symlink("b.dcm", folder / "a.dcm")
        os.symlink("a.dcm", folder / "b.dcm")
        return folder / "a.dcm"

    n = len(BASE_SLICES)
    return [
        Case("empty-file", empty, expect="refused", says="empty.dcm"),
        Case("text-file", text, expect="refused", says="not DICOM"),
        Case("zip-named-dcm", zipped, expect="refused", says="study.dcm"),
        Case("file-symlink-loop-in-series", file_link_loop, expect="read", slices=n),
        Case("folder-symlink-loop", folder_link_loop, expect="read", slices=n),
        Case("lone-file-symlink-loop", lone_link_loop, expect="refused"),
        Case("missing-path", lambda folder: folder / "no-such-series", expect="refused", says="no such"),
        Case("empty-folder", lambda folder: folder, expect="refused"),
    ]


def pydicom_cases() -> list[Case]:
    """Every file of pydicom's (and pydicom-data's, when installed) test corpus alone in a folder; its folders whole."""
    from pydicom.data import get_testdata_files

    def copy(file: str):
        def make(folder: Path):
            target = folder / Path(file).name
            if Path(file).is_dir():  # a DICOMDIR tree of pydicom's: the whole folder
                shutil.copytree(file, target, symlinks=True)
            else:
                target.write_bytes(Path(file).read_bytes())
            return folder
        return make

    files = sorted(set(get_testdata_files()), key=lambda f: (Path(f).name, f))
    seen: dict[str, int] = {}
    cases = []
    for f in files:
        name = Path(f).name
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}-{seen[name]}"
        cases.append(Case(f"pydicom-{label}", copy(f)))
    return cases


def all_cases(chest: Path) -> list[Case]:
    return series_cases(chest) + not_dicom_cases(chest) + pydicom_cases()

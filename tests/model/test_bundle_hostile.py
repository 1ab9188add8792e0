"""Model files from strangers: zip bombs, escaping names, malformed configs, wrong weights, truncation.

Each is refused with ModelLoadError naming the file; nothing is written outside a temporary
folder; memory stays bounded.
"""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import h5py
import pytest

from napari_pneumoseg.model import ModelLoadError, load_model, save_model
from napari_pneumoseg.model.bundle import CONFIG_NAME, WEIGHTS_NAME


@pytest.fixture(scope="module")
def saved(small_bundle, tmp_path_factory):
    return save_model(small_bundle, tmp_path_factory.mktemp("hostile") / "good.pnxmodel")


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def refused(path, *words, max_mb=64.0) -> str:
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError) as info:
            load_model(path)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert path.name in msg, msg
    for w in words:
        assert w in msg, msg
    assert peak < max_mb, f"{peak:.0f} MB"
    return msg


def test_a_config_bomb_is_refused_by_its_declared_size(saved, tmp_path):
    entries = members(saved)
    entries[CONFIG_NAME] = b" " * (64 * 2**20) + entries[CONFIG_NAME]  # 64 MB of blanks: ~64 KB zipped
    bomb = write_zip(tmp_path / "bomb.pnxmodel", entries)
    with zipfile.ZipFile(bomb) as z:
        assert z.getinfo(CONFIG_NAME).compress_size < 2**20  # small on disk, 64 MB inflated
    refused(bomb, "implausibly large")


def test_a_member_that_lies_about_its_size_is_refused(saved, tmp_path):
    entries = members(saved)
    entries[CONFIG_NAME] = entries[CONFIG_NAME] + b" " * 100000
    path = write_zip(tmp_path / "liar.pnxmodel", entries)
    data = bytearray(path.read_bytes())
    # Shrink config.json's declared size in the central directory (and the local header): inflating
    # it gives more than declared.
    true_size = len(entries[CONFIG_NAME]).to_bytes(4, "little")
    small = (200).to_bytes(4, "little")
    assert data.count(true_size) >= 2
    path.write_bytes(bytes(data).replace(true_size, small))
    refused(path)


def test_names_that_escape_are_never_extracted(saved, tmp_path):
    entries = members(saved)
    target = tmp_path / "work"
    target.mkdir()
    entries["../../escaped.txt"] = b"x"
    entries[str(tmp_path / "absolute.txt")] = b"x"
    path = write_zip(target / "paths.pnxmodel", entries)
    bundle = load_model(path)  # only the two fixed names are read, under fixed names
    assert bundle.architecture["backbone"] == "resnet18"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "absolute.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["paths.pnxmodel"]


@pytest.mark.parametrize("config, words", [
    (b"{not json", ["invalid config.json"]),
    (b"[" * 100000 + b"]" * 100000, ["invalid config.json"]),
    (json.dumps({"format": "napari-pneumoseg-model", "schema_version": 1, "architecture": "x" * 1000}).encode(),
     ["invalid config.json"]),
    (b"\xff\xfe\x00garbage", ["invalid config.json"]),
])
def test_malformed_configs_are_refused(saved, tmp_path, config, words):
    entries = members(saved)
    entries[CONFIG_NAME] = config
    refused(write_zip(tmp_path / "cfg.pnxmodel", entries), *words)


def test_weights_of_the_wrong_dtype_are_refused(saved, tmp_path):
    entries = members(saved)
    h5 = tmp_path / "w.h5"
    h5.write_bytes(entries[WEIGHTS_NAME])
    with h5py.File(h5, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        data = f[names[0]][...]
        del f[names[0]]
        f.create_dataset(names[0], data=data.astype("int32"))
    entries[WEIGHTS_NAME] = h5.read_bytes()
    refused(write_zip(tmp_path / "ints.pnxmodel", entries), "floating-point")


def test_weights_of_the_wrong_shape_are_refused(saved, tmp_path):
    entries = members(saved)
    h5 = tmp_path / "w.h5"
    h5.write_bytes(entries[WEIGHTS_NAME])
    with h5py.File(h5, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 4 else None)
        shape = f[names[0]].shape
        del f[names[0]]
        f.create_dataset(names[0], shape=(shape[0] + 1, *shape[1:]), dtype="float32")
    entries[WEIGHTS_NAME] = h5.read_bytes()
    refused(write_zip(tmp_path / "shape.pnxmodel", entries), "do not match")


@pytest.mark.parametrize("keep", [0.5, 0.95, 0.999])
def test_a_truncated_zip_is_refused(saved, tmp_path, keep):
    data = saved.read_bytes()
    cut = tmp_path / "cut.pnxmodel"
    cut.write_bytes(data[: int(len(data) * keep)])
    refused(cut)


def test_a_damaged_member_is_refused(saved, tmp_path):
    entries = members(saved)
    path = write_zip(tmp_path / "flipped.pnxmodel", entries)
    data = bytearray(path.read_bytes())
    for k in range(2000, len(data) // 2, 4099):  # inside the weights' compressed stream
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(path, max_mb=400)

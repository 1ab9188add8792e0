"""Per-user preferences: merged, saved atomically with the user's umask, never required."""

from __future__ import annotations

import json
import os
import stat

import pytest

from napari_pneumoseg import preferences
from napari_pneumoseg.preferences import load_preferences, update_preferences


@pytest.fixture
def prefs_file(tmp_path, monkeypatch):
    path = tmp_path / "config" / "napari-pneumoseg" / "preferences.json"
    monkeypatch.setattr(preferences, "preferences_path", lambda: path)
    return path


def test_missing_or_corrupt_file_means_no_preferences(prefs_file):
    assert load_preferences() == {}
    prefs_file.parent.mkdir(parents=True)
    prefs_file.write_text("{not json")
    assert load_preferences() == {}
    prefs_file.write_text("[1, 2]")
    assert load_preferences() == {}


def test_update_merges_and_creates_the_folder(prefs_file):
    assert update_preferences(last_model="a.pnxmodel") == {"last_model": "a.pnxmodel"}
    merged = update_preferences(last_trained_model="b.pnxmodel")
    assert merged == {"last_model": "a.pnxmodel", "last_trained_model": "b.pnxmodel"}
    assert json.loads(prefs_file.read_text()) == merged == load_preferences()
    assert [p.name for p in prefs_file.parent.iterdir()] == ["preferences.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_file_gets_the_umask_permissions(prefs_file, umask):
    old = os.umask(umask)
    try:
        update_preferences(last_model="a.pnxmodel")
        update_preferences(last_model="b.pnxmodel")  # replacing keeps the umask mode too
    finally:
        os.umask(old)
    assert stat.S_IMODE(prefs_file.stat().st_mode) == 0o666 & ~umask


def test_a_failed_save_keeps_the_old_preferences(prefs_file):
    update_preferences(last_model="a.pnxmodel")
    with pytest.raises(TypeError):
        update_preferences(last_model=object())
    assert load_preferences() == {"last_model": "a.pnxmodel"}
    assert [p.name for p in prefs_file.parent.iterdir()] == ["preferences.json"]

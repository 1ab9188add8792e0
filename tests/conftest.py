"""Test-wide set-up: keep Keras/napari/Qt state out of the user's home, find the shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports keras, napari or Qt: all their settings and caches go to a temp dir.
_STATE = Path(tempfile.mkdtemp(prefix="pneumoseg-tests-"))
for var in ("KERAS_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
    os.environ[var] = str(_STATE / var.lower())
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PNEUMOSEG_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real CT DICOM series (see shared/data/real/README.md)."""
    if not REAL.is_dir():
        pytest.fail(f"shared real data not found at {REAL}; set PNEUMOSEG_SHARED")
    return REAL


@pytest.fixture(scope="session")
def chest_dir(real_data) -> Path:
    return real_data / "chest_ct_tcia_A0001_5mm"


@pytest.fixture(scope="session")
def abdomen_dir(real_data) -> Path:
    return real_data / "abdomen_ct_jpeg2000_overlapping"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A small untrained model bundle (resnet18), built in a subprocess.

    Built outside the test process so GUI tests never import TensorFlow into
    the process that draws with OpenGL (they crash together on Mesa).
    """
    import subprocess
    import sys

    path = tmp_path_factory.mktemp("models") / "tiny.pnxmodel"
    code = (
        "from napari_pneumoseg.model import ModelBundle, save_model\n"
        f"save_model(ModelBundle.build('resnet18'), {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    return path

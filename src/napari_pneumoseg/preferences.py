"""Small per-user preferences (last model used, last model trained), kept as JSON.

Stored in the user's config folder (``platformdirs``), written atomically, and
never required: a missing or corrupt file means "no preference yet".
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def preferences_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-pneumoseg", appauthor=False)) / "preferences.json"


def load_preferences() -> dict[str, Any]:
    try:
        data = json.loads(preferences_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_preferences(**values: Any) -> dict[str, Any]:
    """Merge ``values`` into the stored preferences and save them atomically."""
    prefs = {**load_preferences(), **values}
    path = preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".preferences-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(prefs, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return prefs

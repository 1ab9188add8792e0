"""Small per-user preferences (last model used, last model trained), kept as JSON.

Stored in the user's config folder (``platformdirs``), written atomically
(:func:`~napari_pneumoseg.io.atomic.write_text_atomic`), and never required: a
missing or corrupt file means "no preference yet".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .io.atomic import write_text_atomic


def preferences_path() -> Path:
    """Where the preferences are stored.

    Returns
    -------
    pathlib.Path
        ``preferences.json`` in the user's config folder for napari-pneumoseg
        (e.g. ``~/.config/napari-pneumoseg/preferences.json`` on Linux).

    Examples
    --------
    >>> preferences_path().name
    'preferences.json'
    """
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-pneumoseg", appauthor=False)) / "preferences.json"


def load_preferences() -> dict[str, Any]:
    """The stored preferences; empty if there are none or the file is unreadable.

    Returns
    -------
    dict
        The preferences (JSON values), ``{}`` for a missing or corrupt file.

    Examples
    --------
    >>> prefs = load_preferences()
    >>> isinstance(prefs, dict)
    True
    """
    try:
        data = json.loads(preferences_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_preferences(**values: Any) -> dict[str, Any]:
    """Merge ``values`` into the stored preferences and save them atomically.

    The file gets the permissions of a new file under the user's umask, and a
    crash while saving leaves the previous preferences in place.

    Parameters
    ----------
    **values
        Preferences to set (JSON-serialisable values), e.g. ``last_model="m.pnxmodel"``.

    Returns
    -------
    dict
        All preferences after the update.

    Raises
    ------
    TypeError
        A value is not JSON-serialisable (nothing is written).
    OSError
        The config folder cannot be created or written.

    Examples
    --------
    >>> update_preferences(last_model="/data/models/lungs.pnxmodel")["last_model"]  # doctest: +SKIP
    '/data/models/lungs.pnxmodel'
    """
    prefs = {**load_preferences(), **values}
    text = json.dumps(prefs, indent=2)
    path = preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text, overwrite=True)
    return prefs

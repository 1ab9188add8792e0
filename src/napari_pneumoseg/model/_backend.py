"""The one place that imports TensorFlow, Keras and segmentation-models (lazily).

TensorFlow takes seconds to import, so nothing imports it at module level;
functions that need the network call :func:`keras_modules` instead.
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import lru_cache
from types import SimpleNamespace


@lru_cache(maxsize=None)
def keras_modules() -> SimpleNamespace:
    """Return ``SimpleNamespace(tf=..., keras=..., sm=...)``, importing them on first use.

    segmentation-models 1.0.1 reads ``SM_FRAMEWORK`` when imported and fails on
    Keras 3 unless it is ``tf.keras``, so that is set first. Its import banner
    ("Segmentation Models: using ...") is swallowed.
    """
    os.environ["SM_FRAMEWORK"] = "tf.keras"
    import keras
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm

        if sm.framework() != "tf.keras":  # imported earlier with another setting
            sm.set_framework("tf.keras")
    return SimpleNamespace(tf=tf, keras=keras, sm=sm)

"""The tissue classes of a phantom and the HU each tissue is painted with."""

from __future__ import annotations

#: Tissue labels of ``Phantom.labels`` (kept with ``keep_labels=True``).
LABELS = {
    "outside": 0, "table": 1, "soft": 2, "bone": 3, "mediastinum": 4,
    "right_lung": 5, "left_lung": 6, "pneumothorax": 7, "airway": 8, "abdomen": 9,
}

#: HU painted for each tissue (before blur and noise); the lung gets a per-patient offset and texture.
HU = {
    "air": -1000.0, "fat": -95.0, "skin": 30.0, "muscle": 45.0, "blood": 40.0,
    "liver": 58.0, "spleen": 42.0, "stomach": 28.0, "cortex": 850.0, "marrow": 240.0,
    "cartilage": 110.0, "disc": 85.0, "csf": 15.0, "lung": -870.0, "vessel": 40.0,
    "table_shell": 250.0, "table_core": -930.0,
}

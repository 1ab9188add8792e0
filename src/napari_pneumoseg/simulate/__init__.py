"""A pneumothorax of known volume added to a real chest CT.

No public pneumothorax CT comes with masks, but real chest CTs without one do.
:func:`simulate_pneumothorax` keeps a real patient's anatomy and adds pleural air:
the lungs are found from the CT's HU (per side, trachea and main bronchi
excluded), one or both retract towards the hilum as in a supine patient (air
anteriorly and at the apex first, a crescent that thins to nothing posteriorly),
and the air gets the scan's own noise. Every voxel outside the chosen pleural
cavity stays exactly as it was. Pure NumPy/SciPy; nothing here imports napari or Qt.

Public names
------------
simulate_pneumothorax
    Make a :class:`SimulatedCase` from a :class:`~napari_pneumoseg.CTVolume`.
SimulatedCase
    ``ct``, ``truth`` (uint8 mask), ``facts`` (JSON-ready) and ``as_json()``.
SIDES, SIZES
    The accepted ``side`` and ``size`` arguments.
TARGET_PCT, BAND_PCT
    The share of the hemithorax each size aims at, and the clinical band it lies in.

Modules
-------
``_frame``: the patient frame (superior, dependent, left) the work is done in;
``_lungs``: lungs, airway, pleural cavities and hila from HU; ``_collapse``: the
lung's retraction and the air it leaves; ``_appearance``: air noise measured
around the patient, pleural line, blur; ``_make``: the API and the facts.
"""

from ._make import BAND_PCT, SIDES, SIZES, TARGET_PCT, SimulatedCase, simulate_pneumothorax
from ._write import write_simulated_case

__all__ = ["simulate_pneumothorax", "SimulatedCase", "write_simulated_case", "SIDES", "SIZES", "TARGET_PCT",
           "BAND_PCT"]

"""Annotating: fill the slices between outlined ones, and count what a correction changed.

``interpolate_slices(mask, annotated_slices)`` is shape-based interpolation between
outlined slices; ``corrections(before, after)`` says how much a user added and removed.
"""

from .interpolate import Corrections, corrections, edited_slices, interpolate_slices

__all__ = ["interpolate_slices", "edited_slices", "corrections", "Corrections"]

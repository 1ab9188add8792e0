"""npe2 hooks for mask files: open NRRD / .seg.nrrd / NIfTI as Labels, save Labels as masks.

Opened masks get physical scale and translate (mm) so they overlay the CT:
if a CT layer in the current viewer has the same voxel grid, the mask is
reindexed onto that CT and takes its scale, translate and geometry;
otherwise it keeps its own geometry, with axes reordered and flipped to a
standard axial (z, y, x) order (as a head-first CT is shown). DICOM-SEG
files are DICOM and go through the CT reader hook (``reader.py``);
:func:`dicom_seg_layer_data` is here for it.

Saving uses the CT geometry kept in the layer's ``metadata["pneumoseg_ct"]``
(spacing, origin, direction, and for DICOM-SEG the source files), else the
layer's scale and translate with a standard axial direction. napari's save
dialog has already confirmed replacing a file, so writers overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from ..ct.volume import GEOMETRY_KEY
from ..io.grid import (
    STANDARD_AXIAL,
    Grid,
    MaskFile,
    MaskGeometryError,
    align_to,
    as_grid,
    closest_axial,
)
from ..io.masks import DEFAULT_COLOR, DEFAULT_NAME, NON_DICOM_SUFFIXES, load_mask, write_mask

PathOrPaths = Union[str, list[str]]

#: Files this reader opens (DICOM-SEG is left to the DICOM reader hook).
MASK_SUFFIXES = NON_DICOM_SUFFIXES


def get_mask_reader(path: PathOrPaths) -> Optional[Callable]:
    """The mask reader if every path is a NRRD or NIfTI file, else None."""
    paths = path if isinstance(path, list) else [path]
    if not paths:
        return None
    for p in paths:
        p = Path(p)
        if not (p.is_file() and p.name.lower().endswith(MASK_SUFFIXES)):
            return None
    return read_mask_layers


def read_mask_layers(path: PathOrPaths) -> list[tuple[Any, dict, str]]:
    """Each mask file as Labels layer data (one layer per segment layer of a .seg.nrrd)."""
    paths = path if isinstance(path, list) else [path]
    out = []
    for p in paths:
        out += mask_layer_data(load_mask(p), cts=_viewer_cts())
    return out


def dicom_seg_layer_data(path, ct=None) -> list[tuple[Any, dict, str]]:
    """A DICOM-SEG as Labels layer data (one layer per segment, value = segment number).

    Placed on ``ct``'s grid (a CTVolume or layer ``pneumoseg_ct`` dict), else on
    a fitting CT layer of the current viewer, else in the SEG's own geometry.
    For the CT reader hook, which receives DICOM-SEG files.
    """
    from ..io.dicom_seg import find_seg_file, load_dicom_seg, read_dicom_seg

    mf = load_dicom_seg(path)
    file = str(find_seg_file(path))
    for grid, meta in [_ct_entry(ct)] if ct is not None else _viewer_cts():
        try:
            layers = np.stack([read_dicom_seg(file, grid, segment=s.label) * s.label
                               for s in mf.segments])
        except MaskGeometryError:
            continue
        on_ct = MaskFile(layers.astype(mf.layers.dtype), grid.affine, mf.segments, file)
        return mask_layer_data(on_ct, cts=[(grid, meta)])
    return mask_layer_data(mf)


def mask_layer_data(mf: MaskFile, cts=()) -> list[tuple[Any, dict, str]]:
    """napari ``(data, kwargs, 'labels')`` tuples of a mask file, on the first CT grid that fits."""
    layers, grid, ct_meta = None, None, None
    for candidate, meta in cts:
        try:
            layers = np.stack([align_to(layer, mf.affine, candidate, source=mf.source,
                                        allow_subgrid=mf.allow_subgrid) for layer in mf.layers])
        except MaskGeometryError:
            continue
        grid, ct_meta = candidate, meta
        break
    if grid is None:
        layers, affine = closest_axial(mf.layers, mf.affine)
        layers = np.ascontiguousarray(layers)  # painting edits a plain array, not a flipped view
        grid = Grid.from_affine(affine, layers.shape[1:])
        ct_meta = grid.geometry()
    base = _stem(mf.source)
    file_info = {
        "path": mf.source,
        "shape": list(mf.shape),
        "affine_lps": np.asarray(mf.affine).tolist(),
        "segments": [{"name": s.name, "label": s.label, "layer": s.layer, "color": s.color}
                     for s in mf.segments],
    }
    out = []
    for i, data in enumerate(layers):
        segs = [s for s in mf.segments if s.layer == i]
        name = base if len(layers) == 1 else f"{base} layer {i}"
        kwargs: dict[str, Any] = {
            "name": name,
            "scale": tuple(grid.spacing),
            "translate": tuple(float(v) for v in grid.direction @ np.asarray(grid.origin)),
            "metadata": {GEOMETRY_KEY: ct_meta, "pneumoseg_mask": {**file_info, "layer": i}},
        }
        colors = {s.label: (*s.color, 1.0) for s in segs if s.color}
        if colors:
            # Labels painted later (not in the file) show in yellow rather than not at all.
            kwargs["colormap"] = {None: (1.0, 1.0, 0.0, 1.0), 0: (0.0, 0.0, 0.0, 0.0), **colors}
        if any(s.name for s in segs):
            kwargs["features"] = {"index": [s.label for s in segs],
                                  "name": [s.name or "" for s in segs]}
        out.append((data, kwargs, "labels"))
    return out


def _stem(source: str) -> str:
    name = Path(source).name
    for suffix in MASK_SUFFIXES + (".dcm",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _ct_entry(ct) -> tuple[Grid, dict]:
    if isinstance(ct, dict):
        return as_grid(ct), ct
    grid = as_grid(ct)
    return grid, {**grid.geometry(), **grid.metadata}


def _viewer_cts() -> list[tuple[Grid, dict]]:
    """CT grids of image layers in the current napari viewer (topmost first), if any."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:
        return []
    if viewer is None:
        return []
    found = []
    for layer in reversed(list(viewer.layers)):
        meta = getattr(layer, "metadata", {}).get(GEOMETRY_KEY)
        if isinstance(layer, napari.layers.Image) and isinstance(meta, dict):
            try:
                found.append((as_grid(meta), meta))
            except (ValueError, TypeError):
                continue
    return found


# --------------------------------------------------------------------------- write


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer as .seg.nrrd, .nrrd, .nii(.gz) or DICOM-SEG (.dcm)."""
    data = np.asarray(data)
    info = (meta.get("metadata") or {}).get("pneumoseg_mask") or {}
    name, color = DEFAULT_NAME, DEFAULT_COLOR
    segs = [s for s in info.get("segments", []) if s.get("layer", 0) == info.get("layer", 0)]
    if len(segs) == 1:
        name = segs[0].get("name") or name
        color = segs[0].get("color") or color
    try:
        grid = labels_grid(data, meta)
        write_mask(data, path, grid, name=name, color=color, overwrite=True)
    except ValueError as exc:
        # napari takes a ValueError from a writer for "no writer found" and drops the message.
        raise RuntimeError(f"Could not save {path}: {exc}") from exc
    return [str(path)]


def labels_grid(data: np.ndarray, meta: dict) -> Grid:
    """The voxel grid to save a Labels layer on: its CT's, else its scale and translate."""
    if data.ndim != 3:
        raise ValueError(f"only 3-D label layers can be saved as masks, got shape {data.shape}")
    ct = (meta.get("metadata") or {}).get(GEOMETRY_KEY)
    if isinstance(ct, dict) and {"spacing", "origin", "direction"} <= set(ct):
        grid = as_grid({**ct, "shape": ct.get("shape", data.shape)})
        if grid.shape != data.shape:
            raise ValueError(f"the layer's data {data.shape} no longer matches its CT grid "
                             f"{grid.shape}; cannot place it in the patient")
        return grid
    scale = np.asarray(meta["scale"] if meta.get("scale") is not None else (1.0,) * 3, float)
    translate = np.asarray(meta["translate"] if meta.get("translate") is not None else (0.0,) * 3,
                           float)
    if scale.shape != (3,) or np.any(scale <= 0):
        raise ValueError(f"the layer's scale {scale.tolist()} is not three positive spacings in mm")
    return Grid(data.shape, tuple(scale), tuple(STANDARD_AXIAL.T @ translate), STANDARD_AXIAL)

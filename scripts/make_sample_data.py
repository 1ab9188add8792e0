"""Regenerate the real-CT napari sample (src/napari_pneumoseg/data/) from the shared data.

Usage: python scripts/make_sample_data.py [--source DICOM_FOLDER] [--licence FILE] [--out FOLDER]

The source is TCIA Lung-PET-CT-Dx subject A0001 (CC BY 4.0), as in
shared/data/real/chest_ct_tcia_A0001_5mm. What is done to it, so the file stays small
(about 3.2 MB) and needs nothing but numpy to load:

1. crop every slice to the body's bounding box over all slices (the largest dense region
   of each slice, the table cut off by an opening), plus AIR_MARGIN_MM of air in front
   and at the sides (the simulator measures the scan's air noise 5-25 mm outside the
   body, in front and beside) and BACK_MARGIN_PX behind (the table), on even indices;
2. downsample in-plane by 2 with a 2 x 2 block mean (anti-aliased; 0.84 -> 1.68 mm), HU
   rounded to int16;
3. set the air farther than KEEP_MM from anything denser than -500 HU larger than
   KEEP_MIN_PX pixels (body, arms, straps) to -1000 HU: noise there does not compress and
   nothing reads it;
4. store HU and geometry (spacing, origin of the first voxel's centre, direction, series
   description, patient position) in a compressed .npz without pickles.

The licence file is copied beside it, and README.md is written with the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PNEUMOSEG_SHARED", REPO.parent / "shared")) / "data" / "real"
OUT = REPO / "src" / "napari_pneumoseg" / "data"
NAME = "chest_ct_tcia_A0001.npz"
LICENCE = "LICENSE-tcia-cc-by-4.0"
AIR_MARGIN_MM = 32.0   # air kept in front of and beside the body's bounding box
BACK_MARGIN_PX = 4     # behind it (source pixels): the table
FACTOR = 2             # in-plane downsampling
KEEP_MIN_PX = 50       # dense regions (downsampled pixels) whose surroundings are kept
KEEP_MM = 27.0         # air kept this close to them: the simulator's noise ring is 5-25 mm
OUTSIDE_HU = -1000


def body_box(hu: np.ndarray, pixel_mm: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the body over all slices, with a margin, on multiples of FACTOR."""
    from napari_pneumoseg.ct.air import TABLE_OPENING_MM, body_mask

    body = body_mask(hu, opening=max(1, int(round(TABLE_OPENING_MM / pixel_mm))))
    _, ys, xs = np.nonzero(body)
    ny, nx = hu.shape[1:]
    air = int(np.ceil(AIR_MARGIN_MM / pixel_mm))

    def span(lo, hi, n, before, after):
        lo = max(0, (lo - before) // FACTOR * FACTOR)
        hi = min(n // FACTOR * FACTOR, -(-(hi + 1 + after) // FACTOR) * FACTOR)
        return int(lo), int(hi)

    # Rows run anterior to posterior (the table is behind: little margin there).
    return (*span(ys.min(), ys.max(), ny, air, BACK_MARGIN_PX), *span(xs.min(), xs.max(), nx, air, air))


def make(source: Path, licence: Path, out: Path) -> Path:
    from napari_pneumoseg.ct import read_ct

    ct = read_ct(source)
    if ct.warnings:
        raise SystemExit(f"{source}: unexpected warnings: {ct.warnings}")
    y0, y1, x0, x1 = body_box(ct.hu, ct.spacing[1])
    crop = ct.hu[:, y0:y1, x0:x1].astype(np.float64)
    nz, ny, nx = crop.shape
    small = crop.reshape(nz, ny // FACTOR, FACTOR, nx // FACTOR, FACTOR).mean(axis=(2, 4))
    hu = np.clip(np.rint(small), -32768, 32767).astype(np.int16)
    dense = hu > -500
    keep = np.zeros_like(dense)
    keep_px = KEEP_MM / (ct.spacing[1] * FACTOR)
    for z in range(nz):
        labels, n = ndi.label(dense[z])
        sizes = ndi.sum(dense[z], labels, range(1, n + 1))
        big = ndi.binary_fill_holes(np.isin(labels, 1 + np.flatnonzero(sizes >= KEEP_MIN_PX)))
        keep[z] = ndi.distance_transform_edt(~big) <= keep_px
    hu[~keep] = OUTSIDE_HU
    # Pixel (j, i) of the result is the mean of source pixels FACTOR*j .. FACTOR*j+FACTOR-1:
    # its centre lies half a source pixel (times FACTOR - 1) in from the block's first pixel.
    half = (FACTOR - 1) / 2
    origin = ct.index_to_lps([0, y0 + half, x0 + half])
    spacing = (ct.spacing[0], ct.spacing[1] * FACTOR, ct.spacing[2] * FACTOR)
    meta = ct.metadata
    out.mkdir(parents=True, exist_ok=True)
    path = out / NAME
    np.savez_compressed(
        path, hu=hu, spacing=np.asarray(spacing, float), origin=np.asarray(origin, float),
        direction=np.asarray(ct.direction, float),
        series_description=np.str_(meta.get("series_description") or ""),
        patient_position=np.str_(meta.get("patient_position") or "HFS"),
        source=np.str_("TCIA Lung-PET-CT-Dx, subject A0001 (Lung_Dx-A0001), CC BY 4.0"),
        crop_yx=np.array([y0, y1, x0, x1]), factor=np.int64(FACTOR),
    )
    shutil.copyfile(licence, out / LICENCE)
    (out / "README.md").write_text(README.format(
        name=NAME, licence=LICENCE, nz=nz, shape=hu.shape, y0=y0, ylast=y1 - 1, x0=x0, xlast=x1 - 1,
        src_shape=ct.shape, src_px=ct.spacing[1], px=spacing[1], dz=spacing[0],
        mb=path.stat().st_size / 1e6, outside=OUTSIDE_HU, keep=KEEP_MIN_PX, keep_mm=KEEP_MM,
        air_mm=AIR_MARGIN_MM,
        desc=meta.get("series_description") or "", manufacturer=meta.get("manufacturer") or "?"),
        encoding="utf-8")
    return path


README = """# Real chest CT for the napari sample "Real chest CT with simulated pneumothorax"

`{name}` is a reduced copy of a public chest CT, made by `scripts/make_sample_data.py`.
The plugin adds a simulated pneumothorax to it when the sample is opened; the file itself
shows **no pneumothorax** (the patient has none).

## Source

- Collection: **Lung-PET-CT-Dx**, The Cancer Imaging Archive (TCIA).
- Subject: **A0001** (Patient ID `Lung_Dx-A0001`), a lung adenocarcinoma case; chest CT
  series "{desc}" ({manufacturer} Brilliance 16), {src_shape[0]} slices of
  {src_shape[1]} x {src_shape[2]} pixels, {src_px:.4f} mm pixels, {dz:g} mm slices every
  {dz:g} mm. De-identified by TCIA.
- Obtained as the copy committed in the public GitHub repository `huyenbui117/lung_CT`
  (see the project's `shared/data/real/README.md`).

## What was done to it

1. Cropped every slice to rows {y0} to {ylast} and columns {x0} to {xlast} of the original:
   the body's bounding box over all slices, plus {air_mm:g} mm of the air in front and
   at the sides (the simulator measures the scan's air noise there) and a few pixels
   behind (the table below is cut off). All {nz} slices are kept.
2. Downsampled in-plane by 2 with a 2 x 2 block mean (anti-aliased), to {px:.4f} mm
   pixels; HU rounded to 16-bit integers. Array shape (z, y, x) = {shape}.
3. Air farther than {keep_mm:g} mm from anything denser than -500 HU larger than {keep}
   pixels (the body, arms, straps) set to {outside} HU: the scanner's noise there does
   not compress. Nothing inside the body, nor the air within {keep_mm:g} mm of it, was
   changed other than by steps 1 and 2.
4. Stored with its geometry (`spacing` z, y, x in mm; `origin`, the LPS position of the
   first voxel's centre; `direction`; series description; patient position) in a
   compressed NumPy `.npz` without pickled objects (`np.load(path, allow_pickle=False)`).

The file is {mb:.2f} MB.

## Licence and attribution

The Lung-PET-CT-Dx collection is distributed under the Creative Commons Attribution 4.0
International License (CC BY 4.0, https://creativecommons.org/licenses/by/4.0/); the licence and
TCIA's data usage policy are in `{licence}` beside this file. This file is an
adaptation (cropped, downsampled, air outside the body replaced, as described above).

Attribution: *Lung-PET-CT-Dx collection, The Cancer Imaging Archive (TCIA), subject
A0001; cropped and downsampled by napari-pneumoseg.* As TCIA's policy asks,
acknowledge the specific dataset (Lung-PET-CT-Dx) and TCIA, the NIH-designated data
repository, in any presentation or publication that uses it, following the citation
guidelines on the "Citations & Data Usage Policy" tab of the collection's summary page
at TCIA (https://www.cancerimagingarchive.net/collections/). Do not use the data, alone
or with other information, to identify or contact the participant.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED / "chest_ct_tcia_A0001_5mm")
    parser.add_argument("--licence", type=Path, default=SHARED / LICENCE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    path = make(args.source, args.licence, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

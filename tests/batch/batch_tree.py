"""The batch tests' study tree: phantom studies in nested folders, one corrupt, and a check for partial files."""

from __future__ import annotations

import json
from pathlib import Path

#: Good studies in the tree, and where the corrupt one is.
N_GOOD = 4
CORRUPT = "site-b/2024/corrupt"


def write_tree(root: Path, seeds=range(20, 20 + N_GOOD), corrupt: bool = True) -> Path:
    """A PACS-like tree: nested folders, phantom studies (24 slices of 128 x 128), one truncated series."""
    from napari_pneumoseg import make_phantom, write_phantom_case

    sides = ["left", "right", "both"]
    for k, seed in enumerate(seeds):
        where = root / ("site-a" if k % 2 else "site-b/2023") / f"patient{seed}"
        write_phantom_case(make_phantom(seed=seed, side=sides[k % 3], n_slices=24, shape_yx=(128, 128)), where)
    if corrupt:  # headers intact, pixel data cut short: listed as a series, refused by the reader
        bad = write_phantom_case(make_phantom(seed=99, n_slices=24, shape_yx=(128, 128)), root / CORRUPT)
        for f in sorted((bad / "ct").iterdir()):
            data = f.read_bytes()
            f.write_bytes(data[: len(data) - 20000])
    return root


def assert_no_partial_files(out: Path) -> None:
    """Nothing hidden (temporary) anywhere under ``out``, every series folder whole."""
    leftovers = [p for p in out.rglob(".*")]
    assert leftovers == []
    for result in out.rglob("result.json"):
        rec = json.loads(result.read_text())
        assert (result.parent / Path(rec["mask"]).name).is_file()
    for folder in out.glob("*/*"):
        assert (folder / "result.json").is_file(), folder

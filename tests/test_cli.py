"""The command line: segment writes a mask in the requested format; errors are one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import make_phantom, read_ct, read_mask
from napari_pneumoseg.cli import main
from napari_pneumoseg.phantom import write_phantom_case


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "case"
    write_phantom_case(make_phantom(seed=3, n_slices=8, shape_yx=(64, 64)), folder)
    return folder


@pytest.mark.parametrize("suffix", [".seg.nrrd", ".nii.gz", ".dcm"])
def test_segment_writes_a_mask_on_the_ct_grid(phantom_case, tiny_model_path, tmp_path, capsys,
                                              suffix):
    out = tmp_path / f"mask{suffix}"
    assert main(["segment", str(phantom_case / "ct"), "--model", str(tiny_model_path),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "slices" in printed and "mL" in printed
    ct = read_ct(phantom_case / "ct")
    mask = read_mask(out, like=ct)
    assert mask.shape == ct.shape and mask.dtype == np.uint8
    # An existing file is not replaced without --force.
    assert main(["segment", str(phantom_case / "ct"), "--model", str(tiny_model_path),
                 "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_bad_suffix_and_missing_ct_are_one_line_errors(tmp_path, tiny_model_path, capsys):
    assert main(["segment", str(tmp_path), "--model", str(tiny_model_path),
                 "--out", str(tmp_path / "m.png")]) == 2
    assert "unknown mask file type" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "Traceback" not in err

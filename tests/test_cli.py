"""The command line: segment writes a mask in the requested format; simulate and make-phantoms
write datasets that load_cases reads; errors are one clear line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from napari_pneumoseg import find_pleural_air, make_phantom, measure, read_ct, read_mask
from napari_pneumoseg.cli import main
from napari_pneumoseg.phantom import write_phantom_case
from napari_pneumoseg.training import load_cases


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


# ------------------------------------------------------------------------ segment --method pleural-air

@pytest.fixture(scope="module")
def pleural_case(tmp_path_factory):
    """A phantom with a moderate left pneumothorax, large enough for find_pleural_air to find it."""
    folder = tmp_path_factory.mktemp("cli-pleural") / "case"
    write_phantom_case(make_phantom(seed=0, side="left", n_slices=24, shape_yx=(128, 128)), folder)
    return folder


def test_segment_pleural_air_needs_no_model_and_writes_the_cores_mask(pleural_case, tmp_path, capsys):
    out = tmp_path / "air.seg.nrrd"
    assert main(["segment", str(pleural_case / "ct"), "--method", "pleural-air", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    ct = read_ct(pleural_case / "ct")
    found = find_pleural_air(ct)
    mask = read_mask(out, like=ct)
    assert mask.shape == ct.shape and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, found.mask)
    assert f"wrote {out}: {int(found.mask.sum())} voxels" in printed.out
    assert f"left {found.volume_ml['left']:.1f} mL" in printed.out and "pleural air" in printed.out
    for warning in found.warnings:
        assert f"warning: {warning}" in printed.err
    # The network's options are ignored, and said to be; an existing file is not replaced.
    assert main(["segment", str(pleural_case / "ct"), "--method", "pleural-air", "--out", str(out),
                 "--model", "m.pnxmodel", "--threshold", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--model, --threshold only apply to --method network" in err and "exists" in err


def test_segment_pleural_air_does_not_import_tensorflow(pleural_case, tmp_path):
    out = tmp_path / "air.nii.gz"
    code = ("import sys\nfrom napari_pneumoseg.cli import main\n"
            f"rc = main(['segment', {str(pleural_case / 'ct')!r}, '--method', 'pleural-air', "
            f"'--out', {str(out)!r}])\n"
            "print(rc, any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "0 False", run.stdout + run.stderr
    assert out.is_file()


@pytest.mark.parametrize("method", [[], ["--method", "network"]])
def test_segment_with_the_network_and_no_model_is_a_clear_error(tmp_path, capsys, method):
    out = tmp_path / "mask.seg.nrrd"
    assert main(["segment", str(tmp_path), "--out", str(out), *method]) == 2
    err = capsys.readouterr().err
    assert "--model is required" in err and "--method pleural-air" in err and "Traceback" not in err
    assert not out.exists()


def test_info_prints_the_pleural_air_per_side(pleural_case, chest_part, capsys):
    assert main(["info", str(pleural_case / "ct")]) == 0
    printed = capsys.readouterr().out
    found = find_pleural_air(read_ct(pleural_case / "ct"))
    (line,) = [x for x in printed.splitlines() if x.strip().startswith("pleural air (no model)")]
    kept = sum(p["kept"] and p["side"] == "left" for p in found.pockets)
    assert f"left {found.volume_ml['left']:.1f} mL in {kept} pocket" in line
    assert f"total {found.volume_ml['total']:.1f} mL" in line and "right" in line
    for warning in found.warnings:
        assert f"pleural air warning: {warning}" in printed
    # A real chest CT (no pneumothorax): the line is there too.
    assert main(["info", str(chest_part)]) == 0
    assert "pleural air (no model): left" in capsys.readouterr().out


# ------------------------------------------------------------------- simulate, make-phantoms --real

@pytest.fixture(scope="module")
def chest_part(chest_dir, tmp_path_factory):
    """16 slices of the real chest CT (mid-chest, both lungs), its files copied as they are.

    A third of the series keeps each simulation about a second.
    """
    files = read_ct(chest_dir).metadata["files"][16:32]  # array order: foot to head
    folder = tmp_path_factory.mktemp("real") / "chest_A0001_part"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder)
    return folder


def test_simulate_writes_series_truth_and_facts_that_load_cases_reads(chest_part, tmp_path, capsys):
    out = tmp_path / "data" / "sim-1"
    assert main(["simulate", str(chest_part), str(out), "--side", "right", "--size", "large",
                 "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mL" in printed and "%" in printed and "rim depth" in printed
    assert sorted(p.name for p in out.iterdir()) == ["ct", "facts.json", "truth.seg.nrrd"]

    source, ct = read_ct(chest_part), read_ct(out / "ct")
    assert ct.shape == source.shape and ct.spacing == source.spacing and ct.origin == source.origin
    first = pydicom.dcmread(next((out / "ct").iterdir()), stop_before_pixels=True)
    assert "SIMULATED" in first.SeriesDescription and first.ImageType[0] == "DERIVED"
    assert first.PatientID == "Lung_Dx-A0001"
    assert first.StudyInstanceUID == source.metadata["study_instance_uid"]
    assert first.SeriesInstanceUID != source.metadata["series_instance_uid"]

    truth = read_mask(out / "truth.seg.nrrd", like=ct)
    facts = json.loads((out / "facts.json").read_text())
    assert truth.any() and facts["parameters"]["side"] == "right"
    vol = facts["volume_ml"]
    assert vol["total"] == pytest.approx(truth.sum() * ct.voxel_volume_ml, rel=1e-6, abs=0.05)
    assert vol["left"] == 0 and vol["right"] == pytest.approx(vol["total"])
    m = measure(truth, ct=ct)  # sides by the body's midline, not by pleural cavity: nearly the same
    assert m.volume_ml == pytest.approx(vol["total"], rel=1e-6) and m.right_ml > 0.9 * vol["right"]
    assert f"{vol['right']:.1f} mL" in printed and f"{facts['pct_hemithorax']['right']:.1f} %" in printed
    # The air is in the written HU, where the truth says.
    assert np.median(ct.hu[truth > 0]) < -900

    # The output folder is a patient folder of a dataset; facts.json beside the series is skipped.
    (case,) = load_cases(out.parent)
    assert case.name == "sim-1" and case.hu.shape == source.shape
    np.testing.assert_array_equal(case.mask, truth)


def test_simulate_refuses_to_replace_output_without_force(chest_part, tmp_path, capsys):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["simulate", str(chest_part), str(out), "--size", "small"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert main(["simulate", str(chest_part), str(out), "--size", "small", "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ct", "facts.json", "truth.seg.nrrd"]
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]  # no temporary leftovers
    assert main(["simulate", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_make_phantoms_with_real_cts_makes_a_mixed_dataset(chest_part, tmp_path, capsys):
    root = tmp_path / "dataset"
    assert main(["make-phantoms", str(root), "--n", "2", "--slices", "8", "--size", "64",
                 "--real", str(chest_part), "--real-per-ct", "2", "--seed", "4"]) == 0
    assert "2 simulated real cases" in capsys.readouterr().out
    names = sorted(p.name for p in root.iterdir())
    real = [f"real-{chest_part.name}-1", f"real-{chest_part.name}-2"]
    assert names == ["patient001", "patient002", *real]
    facts = [json.loads((root / n / "facts.json").read_text())["parameters"] for n in real]
    assert [(f["side"], f["size"], f["seed"]) for f in facts] == [("left", "small", 4), ("right", "moderate", 5)]
    cases = load_cases(root)
    assert [c.name for c in cases] == names
    assert all(c.mask.any() for c in cases)
    assert cases[-1].hu.shape == read_ct(chest_part).shape and cases[0].hu.shape == (8, 64, 64)
    # Again without --force: refused before any work, nothing changed.
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert main(["make-phantoms", str(root), "--n", "0", "--real", str(chest_part),
                 "--real-per-ct", "2"]) == 2
    assert "--force" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_add_case_then_fine_tune_from_a_model(phantom_case, tiny_model_path, tmp_path, capsys):
    """``add-case`` writes the layout ``train`` reads; ``train --init`` fine-tunes and records the parent."""
    from napari_pneumoseg.model import load_model

    dataset = tmp_path / "ds"
    args = ["add-case", str(dataset), str(phantom_case / "ct"), str(phantom_case / "truth.nrrd")]
    assert main(args + ["--patient", "p1", "--note", "corrected by hand"]) == 0
    assert "added" in capsys.readouterr().out
    assert (dataset / "p1" / "truth.seg.nrrd").is_file()
    assert main(args + ["--patient", "p1"]) == 2 and "exists" in capsys.readouterr().err
    out = tmp_path / "tuned.pnxmodel"
    assert main(["train", str(dataset), "--out", str(out), "--init", str(tiny_model_path), "--epochs", "1",
                 "--patch-size", "32", "--steps-per-epoch", "1", "--batch-size", "2"]) == 0
    assert load_model(out).provenance["parent_model"]["path"] == str(tiny_model_path.resolve())

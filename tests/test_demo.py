"""The end-to-end demo's quick path: same steps as the README's first command, tiny settings."""

from __future__ import annotations

import csv

from napari_pneumoseg.cli import main


def test_quick_demo_writes_every_result_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Held-out phantom: Dice" in printed and "Pneumothorax volume: true" in printed
    assert "Real chest CT with a simulated pneumothorax" in printed
    for name in ("model.pnxmodel", "heldout_mask.nrrd", "measurements.csv",
                 "training_curves.png", "heldout_figure.png", "real_heldout_figure.png"):
        assert (out / name).is_file(), name
    phantom, real = list(csv.DictReader(open(out / "measurements.csv")))
    for row in (phantom, real):
        assert float(row["truth_volume_ml"]) > 0
        assert 0.0 <= float(row["dice"]) <= 1.0
    assert "real chest CT" in real["case"]
    # the dataset it trained on mixes phantoms and simulated real cases
    assert (out / "dataset" / "real001" / "truth.seg.nrrd").is_file()
    # A second run does not overwrite without --force.
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "already has demo results" in capsys.readouterr().err

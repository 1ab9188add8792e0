"""A model's Table 2 is what Segment + Measure give on the same slices (issue 13, part 1).

Train a small network briefly, then segment each test patient exactly as the
Segment widget and the CLI do (the saved model file, whole slices) and measure
it against its truth: the pooled Dice and the TP/FP/FN counts must equal the
Table 2 row that training stored in the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_pneumoseg import CTVolume, load_model, measure, segment
from napari_pneumoseg.training import train


def _cases(n=6, z=5, seed=0):
    """Synthetic chests of odd sizes (not multiples of 32, so padding matters)."""
    rng = np.random.default_rng(seed)
    cases = []
    for c in range(n):
        ny, nx = 70 + 3 * c, 90 - 2 * c
        hu = np.full((z, ny, nx), 40.0, np.float32)  # soft tissue
        hu[:, 10:ny - 10, 8:nx // 2 - 4] = -850  # right lung
        hu[:, 10:ny - 10, nx // 2 + 4:nx - 8] = -850  # left lung
        mask = np.zeros((z, ny, nx), np.uint8)
        mask[:, 10:16 + c, 8:nx // 2 - 4] = 1  # anterior pleural air, right
        hu[mask == 1] = -1000
        hu += rng.normal(0, 15, hu.shape).astype(np.float32)
        cases.append((CTVolume(hu, spacing=(2.5, 1.4, 1.4)), mask))
    return cases


@pytest.mark.parametrize(("preprocessing", "epochs"), [(None, 8), ({"method": "minmax"}, 2)])
def test_table_2_equals_segment_and_measure_on_the_test_patients(tmp_path, preprocessing, epochs):
    cases = _cases()
    out = tmp_path / "m.pnxmodel"
    # Whole slices and BatchNorm momentum 0.9: this learns in seconds (test Dice about 0.65 here).
    result = train(cases, out, epochs=epochs, batch_size=4, backbone="resnet18", learning_rate=1e-3,
                   bn_momentum=0.9, preprocessing=preprocessing, seed=1)
    assert result.model_path == out
    test_cases = result.split["cases"]["test"]
    assert len(test_cases) == 2  # 6 patients: 4 train+validation, 2 test

    model = load_model(out)  # what a user opens in Segment
    tp = fp = fn = 0
    for c in test_cases:
        ct, truth = cases[c]
        m = measure(segment(ct, model, crop_chest=False, skip_slices=False).mask, ct=ct, truth=truth)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    row = result.table["test"]
    assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
    assert tp + fn > 0  # the test set has pneumothorax, so the Dice is not trivially defined
    if preprocessing is None:  # the longer training found some of it: the Dice is not trivially 0
        assert tp > 0
    dice = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    assert row["dice"] == pytest.approx(dice, abs=1e-6)
    assert model.provenance["metrics"]["test"]["dice"] == pytest.approx(row["dice"], abs=1e-12)

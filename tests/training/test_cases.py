"""Training cases: the CT / ground-truth pairing rule (pure, used by the Train widget)."""

from __future__ import annotations

import pytest

from napari_pneumoseg.training.cases import pair_with_truth

A, B = (4, 8, 8), (5, 8, 8)


def test_named_truth_wins_over_shape():
    labels = [("other", A), ("ct1 truth", A), ("ct2 truth", B)]
    assert pair_with_truth([("ct1", A), ("ct2", B)], labels) == [1, 2]


def test_the_only_mask_of_its_shape_is_taken_when_none_is_named():
    assert pair_with_truth([("ct", B)], [("x", A), ("y", B)]) == [1]


def test_no_mask_or_several_of_the_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="no ground-truth mask for 'ct': name one 'ct truth' "):
        pair_with_truth([("ct", A)], [("x", B)])
    with pytest.raises(ValueError, match=r"\(2 masks have its shape\)"):
        pair_with_truth([("ct", A)], [("x", A), ("y", A)])


def test_named_truth_of_another_shape_is_refused():
    with pytest.raises(ValueError, match=r"'ct truth' has shape \(5, 8, 8\) but 'ct' has \(4, 8, 8\)"):
        pair_with_truth([("ct", A)], [("ct truth", B)])

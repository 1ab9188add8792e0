"""Splits: by patient never shares a patient; by slice warns; slabs for fewer than 3 patients."""

from __future__ import annotations

import pytest

from napari_pneumoseg.training import split_cases


@pytest.mark.parametrize("n_cases", [3, 5, 20])
def test_patient_split_never_shares_a_patient(n_cases):
    sizes = [10 + k for k in range(n_cases)]
    s = split_cases(sizes, "patient", seed=1)
    cases = {name: {c for c, _ in items} for name, items in s.sets().items()}
    assert cases["train"] and cases["validation"] and cases["test"]
    assert not (cases["train"] & cases["validation"]) and not (cases["train"] & cases["test"])
    assert not (cases["validation"] & cases["test"])
    assert sum(len(v) for v in s.sets().values()) == sum(sizes)  # every slice used once
    # Whole patients: every slice of a chosen patient is in its set.
    for items in s.sets().values():
        for c in {c for c, _ in items}:
            assert sorted(k for cc, k in items if cc == c) == list(range(sizes[c]))


def test_sizes_follow_the_papers_two_80_20_splits():
    from napari_pneumoseg.training.split import _counts

    assert _counts(3737) == (2391, 598, 748)  # the paper's slice counts


def test_twenty_patients_split_64_16_20():
    s = split_cases([5] * 20, "patient", seed=0)
    assert {k: len(v) for k, v in s.by_case.items()} == {"train": 12, "validation": 4, "test": 4}


def test_seeded_and_varies_with_seed():
    a = split_cases([5] * 10, "patient", seed=0).by_case
    assert a == split_cases([5] * 10, "patient", seed=0).by_case
    assert any(split_cases([5] * 10, "patient", seed=s).by_case != a for s in range(1, 5))


def test_slice_split_reproduces_the_paper_and_warns():
    with pytest.warns(UserWarning, match="optimistic"):
        s = split_cases([50, 50], "slice", seed=43)
    assert (len(s.train), len(s.validation), len(s.test)) == (64, 16, 20)
    train_cases = {c for c, _ in s.train}
    test_cases = {c for c, _ in s.test}
    assert train_cases & test_cases  # the flaw it reproduces: patients shared


def test_fewer_than_three_patients_use_contiguous_slabs():
    s = split_cases([25, 10], "patient", seed=0)
    assert s.mode == "slab" and "contiguous" in s.note
    for c, n in enumerate([25, 10]):
        tr = [k for cc, k in s.train if cc == c]
        va = [k for cc, k in s.validation if cc == c]
        te = [k for cc, k in s.test if cc == c]
        assert max(tr) < min(va) <= max(va) < min(te)
        assert len(tr) + len(va) + len(te) == n


def test_bad_mode():
    with pytest.raises(ValueError, match="'patient' or 'slice'"):
        split_cases([3, 3, 3], "random")


"""Train/validation/test splits: by patient (honest) or by slice (the paper's, optimistic)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

SLICE_SPLIT_WARNING = (
    "split='slice' puts neighbouring, nearly identical slices of one patient in both the "
    "training and the test set (as the paper did), so its test scores are optimistic; use "
    "split='patient' for an honest estimate."
)


@dataclass
class Split:
    """A train/validation/test split: for each set, its (case index, slice index) pairs.

    Made by :func:`split_cases`.

    Parameters
    ----------
    train, validation, test : list of tuple of (int, int)
        ``(case index, slice index)`` pairs, sorted.
    mode : str
        How it was made: ``"patient"``, ``"slab"`` (fewer than 3 patients) or
        ``"slice"``.
    by_case : dict, optional
        For ``patient``: the case indices of each set.
    note : str, default ""
        Why the split's scores may be optimistic (``slab``, ``slice``).

    Examples
    --------
    >>> split = split_cases([10, 10, 10, 10, 10], seed=0)
    >>> split.mode, split.describe()["slices"]
    ('patient', {'train': 30, 'validation': 10, 'test': 10})
    """

    train: list[tuple[int, int]]
    validation: list[tuple[int, int]]
    test: list[tuple[int, int]]
    mode: str
    by_case: dict[str, list[int]] = field(default_factory=dict)
    note: str = ""

    def sets(self) -> dict[str, list[tuple[int, int]]]:
        """The three sets by name: ``{"train": ..., "validation": ..., "test": ...}``.

        Examples
        --------
        >>> split = split_cases([3, 3, 3, 3, 3])
        >>> {name: len(pairs) for name, pairs in split.sets().items()}
        {'train': 9, 'validation': 3, 'test': 3}
        """
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def describe(self) -> dict:
        """A JSON-ready summary for a model's provenance: ``mode``, slice counts per set, ``cases``, ``note``.

        Examples
        --------
        >>> summary = split_cases([10, 10]).describe()
        >>> summary["mode"], summary["slices"]
        ('slab', {'train': 12, 'validation': 4, 'test': 4})
        """
        return {"mode": self.mode, "slices": {k: len(v) for k, v in self.sets().items()},
                "cases": self.by_case, "note": self.note}


def _counts(n: int) -> tuple[int, int, int]:
    """Train/validation/test sizes for ``n`` items, as the paper's two 80/20 splits.

    scikit-learn's ``train_test_split(test_size=0.2)`` takes ``ceil(0.2 n)`` for
    test, then ``ceil(0.2 * rest)`` for validation: 3737 slices give the
    paper's 2391/598/748.
    """
    if n < 3:
        raise ValueError(f"cannot split {n} items into train/validation/test")
    n_test = int(np.ceil(0.2 * n))
    n_val = int(np.ceil(0.2 * (n - n_test)))
    return n - n_test - n_val, n_val, n_test


def split_cases(n_slices: list[int], mode: str = "patient", seed: int = 0) -> Split:
    """Split cases, given by their slice counts, into train/validation/test 64/16/20, seeded.

    The proportions are the paper's two successive 80/20 splits, rounded as
    scikit-learn's ``train_test_split(test_size=0.2)`` rounds them (test
    ``ceil(0.2 n)``, then validation ``ceil(0.2 * rest)``).

    - ``patient``: whole patients per set, so no patient is in two sets. With
      fewer than 3 patients, each patient is cut into contiguous slabs
      (mode ``slab``: train at the bottom, then validation, test at the top,
      in the same proportions), the closest honest split possible.
    - ``slice``: the paper's split over all slices; warns why it is
      optimistic (:data:`SLICE_SPLIT_WARNING`).

    Parameters
    ----------
    n_slices : list of int
        Number of slices of each case.
    mode : {"patient", "slice"}, default "patient"
        What is kept together.
    seed : int, default 0
        Seed of the random order (the same seed gives the same split).

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        ``mode`` is neither; or there are fewer than 3 items to split (slices
        in ``slice`` mode, or slices of one patient in ``slab`` mode).

    Warns
    -----
    UserWarning
        With ``mode="slice"``.

    Examples
    --------
    >>> split = split_cases([40] * 10, seed=1)
    >>> {name: len(cases) for name, cases in split.by_case.items()}
    {'train': 6, 'validation': 2, 'test': 2}
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     paper = split_cases([3737], mode="slice")
    >>> paper.describe()["slices"]  # the paper's 3737 slices
    {'train': 2391, 'validation': 598, 'test': 748}
    >>> split_cases([30, 30]).mode
    'slab'
    """
    rng = np.random.default_rng(seed)
    all_slices = [(c, k) for c, n in enumerate(n_slices) for k in range(n)]
    if mode == "slice":
        warnings.warn(SLICE_SPLIT_WARNING, stacklevel=2)
        order = rng.permutation(len(all_slices))
        n_train, n_val, _ = _counts(len(all_slices))
        pick = lambda idx: sorted(all_slices[i] for i in idx)  # noqa: E731
        return Split(pick(order[:n_train]), pick(order[n_train:n_train + n_val]),
                     pick(order[n_train + n_val:]), "slice", note=SLICE_SPLIT_WARNING)
    if mode != "patient":
        raise ValueError(f"split must be 'patient' or 'slice', got {mode!r}")
    if len(n_slices) >= 3:
        order = [int(i) for i in rng.permutation(len(n_slices))]
        n_train, n_val, _ = _counts(len(n_slices))
        groups = {"train": order[:n_train], "validation": order[n_train:n_train + n_val],
                  "test": order[n_train + n_val:]}
        sets = {k: [(c, s) for c in sorted(v) for s in range(n_slices[c])] for k, v in groups.items()}
        return Split(sets["train"], sets["validation"], sets["test"], "patient",
                     by_case={k: sorted(v) for k, v in groups.items()})
    # Fewer than 3 patients: contiguous slabs within each patient.
    sets = {"train": [], "validation": [], "test": []}
    for c, n in enumerate(n_slices):
        n_train, n_val, n_test = _counts(n)
        bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val),
                  "test": (n_train + n_val, n)}
        for key, (a, b) in bounds.items():
            sets[key] += [(c, s) for s in range(a, b)]
    note = (f"only {len(n_slices)} patient(s): split into contiguous slabs of slices "
            "(train at the bottom, then validation, test at the top); neighbouring slabs "
            "still touch, so scores are somewhat optimistic")
    return Split(sets["train"], sets["validation"], sets["test"], "slab", note=note)

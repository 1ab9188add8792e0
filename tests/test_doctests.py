"""The examples in the core's docstrings are true: every module outside ``_napari`` is doctested.

Examples that need TensorFlow, a model file or a display are marked ``+SKIP`` in place.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import napari_pneumoseg

MODULES = sorted(info.name for info in pkgutil.walk_packages(napari_pneumoseg.__path__, "napari_pneumoseg.")
                 if not info.name.startswith("napari_pneumoseg._napari"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_are_really_there():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES
                   for t in finder.find(importlib.import_module(name)))
    assert examples >= 100, examples

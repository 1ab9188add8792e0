"""Fixtures of the batch tests: the study tree and a shared 2-worker LocalCluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from batch_tree import write_tree


@pytest.fixture(scope="session")
def tree_template(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tree") / "export")


@pytest.fixture
def tree(tree_template, tmp_path) -> Path:
    """A fresh copy of the 5-study tree (modification times kept, so fingerprints match the template's)."""
    return Path(shutil.copytree(tree_template, tmp_path / "export"))


@pytest.fixture(scope="module")
def client():
    """A Client of a 2-worker LocalCluster made as batch.run makes its own (spawn, one thread each)."""
    from distributed import Client

    from napari_pneumoseg.batch import local_cluster

    cluster = local_cluster(2)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()

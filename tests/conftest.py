from __future__ import annotations

import os

import pytest
import torch

# Keep unit tests light on the 2-core CI machine and deterministic.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def shared_hugadb_archive():
    """Path of the real HuGaDB archive under $METAGAIT_DATA, or None."""
    root = os.environ.get("METAGAIT_DATA")
    if not root:
        return None
    path = os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")
    return path if os.path.isfile(path) else None

"""Shared fixtures: small real data sets and tasks that train in a second or two."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

import babysit as bs

# One MNIST-1D cache for the whole session (subprocesses inherit it), never the user's own cache.
os.environ.setdefault("BABYSIT_CACHE", tempfile.mkdtemp(prefix="babysit-test-cache-"))


@pytest.fixture(autouse=True)
def _threads():
    # One thread: deterministic and fair on a shared 2-core machine.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def spiral():
    return bs.data.load("spiral", seed=0)


@pytest.fixture(scope="session")
def spiral_task(spiral):
    return bs.Task(build="mlp", data=spiral, loss="softmax")

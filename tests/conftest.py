"""Shared fixtures: the device list every op test runs on, and seeding."""
import pytest
import torch

import fastconv  # noqa: F401  (registers the ops)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU on this machine"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    # A fresh, printed seed per test: failures are reproducible from the log.
    seed = hash(request.node.nodeid) % (2**31)
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield

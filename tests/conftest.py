"""Shared fixtures: the device list every op test runs on, and seeding.

Devices: "cpu"; "emulated_cuda-forward" and "emulated_cuda-random", the CUDA kernels run by
the CPU emulator (fastconv._simt, shared/SIMT.md) under two schedules: the fixture yields
"cpu" as the tensor device while fastconv.testing.emulate_cuda() is active for the whole test,
so fastconv ops on CPU tensors (and their backward passes) run the emulated CUDA kernels;
and "cuda" on a machine with a GPU. The random schedule's seed is fresh per test and printed
(set SIMT_SEED to reproduce a failure).
"""
import os
import random
import zlib

import pytest
import torch

import fastconv  # noqa: F401  (registers the ops)
from fastconv.testing import emulate_cuda, simt_available

_NO_SIMT = pytest.mark.skipif(not simt_available(),
                              reason="fastconv._simt (emulated CUDA) is not built: no CUDA "
                                     "toolkit headers were found at build time")
EMULATED_SCHEDULES = ["forward", "random"]
DEVICES = ["cpu"] + [pytest.param(f"emulated_cuda-{s}", marks=_NO_SIMT)
                     for s in EMULATED_SCHEDULES] + [
    pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no GPU on this machine"))]


@pytest.fixture(params=DEVICES)
def device(request):
    param = request.param
    if not param.startswith("emulated_cuda"):
        yield param
        return
    schedule = param.split("-", 1)[1]
    seed = 0
    if schedule == "random":
        seed = int(os.environ.get("SIMT_SEED", random.SystemRandom().randrange(2**31)))
    print(f"emulated CUDA: schedule={schedule} seed={seed} (reproduce: SIMT_SEED={seed})")
    request.node.user_properties.append(("simt_seed", seed))
    with emulate_cuda(schedule, seed=seed, strict=True) as mode:
        yield "cpu"
    request.node.user_properties.append(("simt_redirected", mode.redirected))
    # Every fastconv CUDA kernel must run under the emulator: a CPU fallback would pass the
    # test without exercising any CUDA code.
    assert not mode.not_emulated, (f"no emulated CUDA kernel for {sorted(mode.not_emulated)}; "
                                   "the CPU kernels ran instead")


@pytest.fixture(autouse=True)
def _seed(request):
    # A seed per test, derived from its id (crc32, not hash(): str hashes are randomized per
    # process), so a failure reproduces on rerun; recorded with the test's properties.
    seed = zlib.crc32(request.node.nodeid.encode()) % (2**31)
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield

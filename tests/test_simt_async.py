"""The emulator's cp.async pipeline primitives (csrc/simt/async_copy.h) through
csrc/simt/test_kernels_async.cpp: a double-buffered pipeline gives exact answers under every
schedule, reads before the wait see poison, and pairing mistakes are reported."""
import pytest
import torch

from fastconv.testing import emulate_cuda, simt_available

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

ops = torch.ops.fastconv_simt
THREADS, STAGES = 64, 5


def expected(src, threads, stages, zfill=False):
    x = src[:stages * threads * 4].reshape(stages, threads, 4).double()
    if zfill:
        x[..., 2:] = 0  # the last 8 of each 16 bytes are zero-filled
    return x.roll(-1, dims=1).sum(dim=(0, 2)).float()


@pytest.mark.parametrize("order, seed", [("forward", 0), ("reverse", 0), ("random", 5)])
@pytest.mark.parametrize("mode", [0, 8], ids=["pipeline", "zfill"])
def test_double_buffered_pipeline_is_exact(order, seed, mode):
    src = torch.randint(-100, 100, (STAGES * THREADS * 4,), generator=torch.Generator().manual_seed(1)).float()
    with emulate_cuda(order, seed=seed):
        out = ops._test_async_copy(src, THREADS, STAGES, mode)
    assert torch.equal(out, expected(src, THREADS, STAGES, zfill=mode == 8))


def test_reading_before_the_wait_sees_poison():
    # Each thread reads its neighbour's copy after a barrier but before the neighbour's wait:
    # every read that comes before the owner's wait sees the 0xFF poison (NaN). Which reads do
    # depends on the schedule (forward: all but the last thread's; reverse: the last thread's).
    src = torch.ones(STAGES * THREADS * 4)
    with emulate_cuda("forward"):
        out = ops._test_async_copy(src, THREADS, STAGES, 1)
    assert torch.isnan(out[:-1]).all() and out[-1] == 4 * STAGES
    with emulate_cuda("reverse"):
        out = ops._test_async_copy(src, THREADS, STAGES, 1)
    assert torch.isnan(out[-1]) and (out[:-1] == 4 * STAGES).all()


@pytest.mark.parametrize("mode, message", [
    (2, r"cp\.async: __pipeline_wait_prior at .*test_kernels_async\.cpp:\d+: 1 copies issued "
        r"since the last __pipeline_commit .* belong to no group"),
    (3, r"cp\.async: __pipeline_commit at .*: 9 committed groups outstanding \(more than 8\)"),
    (4, r"cp\.async: thread exits with 1 copies never committed \(first issued at "
        r".*test_kernels_async\.cpp:\d+\)"),
    (5, r"cp\.async: thread exits with 1 committed copies never waited for"),
    (6, r"__pipeline_memcpy_async at .*: expected both pointers aligned to the size \(16 bytes\)"),
    (7, r"__pipeline_memcpy_async at .*: expected a size of 4, 8 or 16 bytes, got 12"),
])
def test_async_copy_misuse_is_reported(mode, message):
    src = torch.zeros(10 * THREADS * 4)
    with emulate_cuda("random", seed=2):
        with pytest.raises(RuntimeError, match=r"failed in block \(0,0,0\) thread .*" + message):
            ops._test_async_copy(src, THREADS, 10, mode)


def test_pairing_problems_are_warnings_without_strict(capfd):
    src = torch.zeros(STAGES * THREADS * 4)
    with emulate_cuda(strict=False):
        warnings = ops._stats()[4]
        out = ops._test_async_copy(src, THREADS, STAGES, 5)  # exits with unwaited copies
        assert ops._stats()[4] == warnings + THREADS
    assert (out == -1).all()  # the kernel returned before writing
    assert "committed copies never waited for" in capfd.readouterr().err

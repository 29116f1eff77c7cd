"""Every max-pool CUDA kernel under the emulator's schedule matrix (shared/SIMT.md 7):
thread orders {forward, reverse, random(1), random(2)} x block orders {forward, reverse} must give
bit-identical results, gradients included, equal to the CPU kernels. A difference between
schedules is a race (two threads or blocks writing one element, a read of memory another
thread writes in the same launch); a difference from the CPU is a wrong result."""
import itertools

import pytest
import torch

import fastconv.nn.functional as F
from fastconv.testing import emulate_cuda, simt_available

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

THREAD_ORDERS = [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]
BLOCK_ORDERS = ["forward", "reverse"]

# (name, input shape, dtype, memory format): one small shape per kernel variant, each launch
# spanning several 256-thread blocks so that the block order matters.
CASES = [
    ("nchw", (2, 8, 20, 17), torch.float32, torch.contiguous_format),
    ("nhwc-vector", (2, 8, 20, 17), torch.float32, torch.channels_last),   # 4 channels/thread
    ("nhwc-scalar", (2, 6, 20, 17), torch.float32, torch.channels_last),   # c % 4 != 0
    ("nhwc-vector-half", (2, 8, 20, 17), torch.float16, torch.channels_last),
    ("nchw-double", (1, 5, 21, 19), torch.float64, torch.contiguous_format),
]
GEOMETRY = dict(kernel_size=3, stride=2, padding=1)  # overlapping windows: shared inputs


def run_all(x, grad_out, grad_unpool):
    """Forward, backward, unpool and unpool backward: every kernel of the family."""
    xr = x.detach().requires_grad_()
    out, idx = F.max_pool2d(xr, return_indices=True, ceil_mode=True, **GEOMETRY)
    out.backward(grad_out)
    pooled = out.detach().requires_grad_()
    unpooled = F.max_unpool2d(pooled, idx, output_size=x.shape[-2:], **GEOMETRY)
    unpooled.backward(grad_unpool)
    return {"output": out.detach(), "indices": idx, "grad_input": xr.grad,
            "unpooled": unpooled.detach(), "grad_pooled": pooled.grad}


@pytest.mark.parametrize("name, shape, dtype, memory_format", CASES, ids=[c[0] for c in CASES])
def test_schedule_matrix_is_bit_identical_and_matches_cpu(name, shape, dtype, memory_format):
    x = torch.randn(shape).round(decimals=1).to(dtype).contiguous(memory_format=memory_format)
    out_shape = F.max_pool2d(x, ceil_mode=True, **GEOMETRY).shape
    grad_out = torch.randn(out_shape).to(dtype).contiguous(memory_format=memory_format)
    grad_unpool = torch.randn(shape).to(dtype).contiguous(memory_format=memory_format)

    reference = run_all(x, grad_out, grad_unpool)  # the CPU kernels
    first = None
    for (order, seed), block_order in itertools.product(THREAD_ORDERS, BLOCK_ORDERS):
        with emulate_cuda(order, seed=seed, block_order=block_order) as mode:
            launches = torch.ops.fastconv_simt._stats()[0]
            results = run_all(x, grad_out, grad_unpool)
            # forward, backward, fill + scatter, gather: five launches, all emulated
            assert torch.ops.fastconv_simt._stats()[0] - launches == 5
            assert mode.redirected == 4
        policy = f"{order}({seed}) x blocks {block_order}"
        for key, value in results.items():
            assert value.stride() == reference[key].stride(), (key, policy)
            if first is not None:
                assert torch.equal(value, first[key]), f"{key} differs under {policy}: a race"
            if dtype == torch.float16 and key == "grad_input":
                # fp32 accumulation rounded once (CUDA) vs PyTorch's per-add rounding (CPU)
                torch.testing.assert_close(value, reference[key], rtol=1e-2, atol=1e-2)
            else:
                assert torch.equal(value, reference[key]), f"{key} differs from CPU: {policy}"
        first = first or results


# ---- the CUDA contracts that differ from the CPU's (csrc/fastconv.cpp) -------------------------
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_backward_ignores_indices_outside_their_window(memory_format):
    # The CUDA backward is a gather over each input's windows: an index that no window of its
    # output can produce contributes nothing (the CPU raises IndexError instead).
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=memory_format)
    out, idx = F.max_pool2d_with_indices(x, 2)
    bad = idx.clone()
    bad[0, 1, 0, 0] = 36   # outside the plane
    bad[0, 2, 1, 1] = 0    # inside the plane, outside the window of output (1, 1)
    grad = torch.randn_like(out)
    args = ([1, 4, 6, 6], [2, 2], [2, 2], [0, 0], [1, 1], False)
    expected = torch.ops.fastconv._max_pool2d_backward(grad, idx, *args)
    expected[0, 1].view(-1)[idx[0, 1, 0, 0]] = 0
    expected[0, 2].view(-1)[idx[0, 2, 1, 1]] = 0
    with emulate_cuda("random", seed=5):
        got = torch.ops.fastconv._max_pool2d_backward(grad, bad, *args)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("op", ["max_unpool2d", "_max_unpool2d_backward"])
def test_unpool_reports_the_first_bad_index_whatever_the_schedule(op, memory_format):
    # The kernels record the smallest logical position of a bad index with atomicMin; the
    # launcher raises the CPU's IndexError with the value found there.
    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=memory_format)
    idx = torch.zeros(2, 3, 4, 4, dtype=torch.long).contiguous(memory_format=memory_format)
    idx[1, 2, 3, 3] = -3
    idx[1, 0, 2, 1] = 99   # first in (n, c, h, w) order
    idx[0, 2, 0, 0] = 64 if memory_format == torch.channels_last else 0
    first = 64 if memory_format == torch.channels_last else 99
    for order, seed in THREAD_ORDERS:
        with emulate_cuda(order, seed=seed, block_order="reverse"):
            with pytest.raises(IndexError, match=rf"expected indices in \[0, 64\), got {first}$"):
                if op == "max_unpool2d":
                    torch.ops.fastconv.max_unpool2d(x, idx, [8, 8])
                else:
                    torch.ops.fastconv._max_unpool2d_backward(torch.randn(2, 3, 8, 8), idx)

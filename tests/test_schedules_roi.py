"""Every ROI CUDA kernel under the emulator's schedule matrix (shared/SIMT.md 7): thread orders
{forward, reverse, random(1), random(2)} x block orders {forward, reverse} must give
bit-identical results, gradients included (the backward passes are gathers without atomics),
and agree with the CPU kernels. A difference between schedules is a race."""
import itertools

import pytest
import torch

from fastconv.ops import roi_align, roi_pool
from fastconv.testing import emulate_cuda, simt_available
from roi_testing import edge_case_boxes

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

THREAD_ORDERS = [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]
BLOCK_ORDERS = ["forward", "reverse"]
# (name, input shape, dtype, memory format): each launch spans several 256-thread blocks
CASES = [
    ("nchw", (3, 4, 9, 10), torch.float32, torch.contiguous_format),
    ("nhwc", (3, 4, 9, 10), torch.float32, torch.channels_last),
    ("nhwc-half", (3, 4, 9, 10), torch.float16, torch.channels_last),
    ("nchw-double", (2, 3, 8, 7), torch.float64, torch.contiguous_format),
]


def run_all(x, rois):
    """Forward and backward of both ops (validation, forward, gather: six launches)."""
    xa, xp = x.detach().requires_grad_(), x.detach().requires_grad_()
    aligned = roi_align(xa, rois, (3, 2), 0.5, -1, True)
    aligned.backward(torch.linspace(-1, 1, aligned.numel()).reshape(aligned.shape).to(x.dtype))
    pooled, argmax = torch.ops.fastconv.roi_pool(xp, rois, 0.5, 2, 3)
    pooled.backward(torch.linspace(-1, 1, pooled.numel()).reshape(pooled.shape).to(x.dtype))
    return {"roi_align": aligned.detach(), "roi_align_grad": xa.grad, "roi_pool": pooled.detach(),
            "argmax": argmax, "roi_pool_grad": xp.grad}


@pytest.mark.parametrize("name, shape, dtype, memory_format", CASES, ids=[c[0] for c in CASES])
def test_schedule_matrix_is_bit_identical_and_matches_cpu(name, shape, dtype, memory_format):
    x = torch.randn(shape).to(dtype).contiguous(memory_format=memory_format)
    rois = edge_case_boxes(shape[0], shape[2], shape[3], 0.5, empty_image=1).to(dtype)
    reference = run_all(x, rois)  # the CPU kernels
    first = None
    for (order, seed), block_order in itertools.product(THREAD_ORDERS, BLOCK_ORDERS):
        with emulate_cuda(order, seed=seed, block_order=block_order) as mode:
            results = run_all(x, rois)
            assert mode.redirected == 4 and not mode.not_emulated
        policy = f"{order}({seed}) x blocks {block_order}"
        for key, value in results.items():
            assert value.stride() == reference[key].stride(), (key, policy)
            if first is not None:
                assert torch.equal(value, first[key]), f"{key} differs under {policy}: a race"
            if key == "roi_align_grad":
                # gather (per pixel) vs scatter (per sample) order of the same sums
                tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else \
                    dict(rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(value, reference[key], **tol)
            elif dtype == torch.float16 and key in ("roi_align", "roi_pool_grad"):
                # one rounding of a float sum (CUDA) vs the CPU's float sums: equal up to the
                # last fp16 place
                torch.testing.assert_close(value, reference[key], rtol=1e-3, atol=1e-3)
            else:
                assert torch.equal(value, reference[key]), f"{key} differs from CPU: {policy}"
        first = first or results

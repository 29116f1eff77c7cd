"""Every convolution CUDA kernel variant under the emulator's schedule matrix (shared/SIMT.md 7):
thread orders {forward, reverse, random(1), random(2)} x block orders {forward, reverse} must give
bit-identical forward, input-gradient and weight-gradient results. A difference between
schedules is a race: a panel read before the barrier that publishes it, a buffer overwritten
while another warp still multiplies it, two blocks writing one output or one partial. Each
launch spans several blocks so that the block order matters; correctness against PyTorch is
tests/test_conv2d_cuda.py's job (the first schedule is checked loosely here too)."""
import itertools

import pytest
import torch

from fastconv.testing import emulate_cuda, simt_available
from test_conv2d_cuda import (CL, NCHW, make_inputs, plan_options, reference, run_passes,
                              _have_wmma)

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

THREAD_ORDERS = [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]
BLOCK_ORDERS = ["forward", "reverse"]

# (id, (N, C, H, W), (K, R, S), stride, padding, groups, dtype, memory format, plan options,
#  expected forward plan)
CASES = [
    ("simt-small-nchw", (2, 4, 9, 9), (36, 3, 3), 1, 1, 1, torch.float32, NCHW, {},
     "fwd:simt-small"),
    ("simt-large-v4-cl-split", (2, 8, 9, 9), (68, 3, 3), 2, 1, 1, torch.float32, CL,
     dict(tile=1, splits=2), "fwd:simt-large-v4"),
    ("simt-small-v2-fp64-groups", (2, 4, 8, 8), (8, 3, 3), 1, 1, 2, torch.float64, CL, {},
     "fwd:simt-small-v2"),
    ("depthwise-cl", (2, 8, 9, 9), (16, 3, 3), 1, 1, 8, torch.float32, CL, {}, "fwd:depthwise"),
    ("wmma-fp16-v8-cl-split", (2, 8, 9, 9), (72, 3, 3), 1, 1, 1, torch.float16, CL,
     dict(splits=2), "fwd:wmma-v8"),
    ("wmma-tf32-nchw", (2, 4, 9, 9), (8, 3, 3), 1, 1, 1, torch.float32, NCHW, dict(tf32=True),
     "fwd:wmma"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_schedule_matrix_is_bit_identical(case):
    _, shape, kshape, stride, padding, groups, dtype, fmt, options, fwd_plan = case
    if fwd_plan.startswith("fwd:wmma") and not _have_wmma():
        pytest.fail("the emulated build has no nvcuda::wmma (csrc/simt/mma.h)")
    x, w, b = make_inputs(shape, kshape, groups, dtype, fmt)
    args = ([stride] * 2, [padding] * 2, [1, 1], groups)
    first = gy = None
    for (order, seed), block_order in itertools.product(THREAD_ORDERS, BLOCK_ORDERS):
        with emulate_cuda(order, seed=seed, block_order=block_order), plan_options(**options):
            launches = torch.ops.fastconv_simt._stats()[0]
            out, dx, dw, gy, plans = run_passes(x, w, b, *args, gy=gy)
            assert plans[0] == fwd_plan
            assert torch.ops.fastconv_simt._stats()[0] - launches == 4  # + the split reduction
        results = {"output": out, "grad_input": dx, "grad_weight": dw}
        policy = f"{order}({seed}) x blocks {block_order}"
        if first is None:
            first = results
            loose = 1e-2 if dtype == torch.float16 or options.get("tf32") else 1e-4
            for value, expected in zip(results.values(), reference(x, w, b, gy, *args)):
                torch.testing.assert_close(value.double(), expected, atol=loose, rtol=loose)
        for key, value in results.items():
            assert torch.equal(value, first[key]), f"{key} differs under {policy}: a race"

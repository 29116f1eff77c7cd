"""Every BatchNorm CUDA kernel under the emulator's schedule matrix (shared/SIMT.md 7): thread
orders x block orders must give bit-identical results (a difference is a race), close to the
CPU kernels (same formulas, different summation order)."""
import itertools

import pytest
import torch

import fastconv.nn.functional as F
from fastconv.testing import emulate_cuda, simt_available

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

THREAD_ORDERS = [("forward", 0), ("reverse", 0), ("random", 1)]
BLOCK_ORDERS = ["forward", "reverse"]

# (name, shape, dtype, memory format): each reduction variant; planar with two chunks per
# channel (the grid-level merge), rows with several chunks and a partial channel group.
CASES = [
    ("planar-2-chunks", (2, 2, 64, 64), torch.float32, torch.contiguous_format),
    ("rows", (2, 40, 20, 17), torch.float32, torch.channels_last),
    ("rows-2d", (300, 7), torch.float64, torch.contiguous_format),
    ("planar-half", (2, 3, 10, 9), torch.float16, torch.contiguous_format),
]


def run_all(x, residual, grad, rm, rv):
    """Training forward + backward of the fused add+relu (stats, coefficients, apply, reduce,
    backward apply), and the eval forward + backward: every kernel of the family."""
    xr, rr = x.detach().requires_grad_(), residual.detach().requires_grad_()
    pdt = torch.float64 if x.dtype == torch.float64 else torch.float32  # affine: compute dtype
    w = torch.linspace(0.5, 1.5, x.shape[1], dtype=pdt).requires_grad_()
    b = torch.linspace(-0.3, 0.3, x.shape[1], dtype=pdt).requires_grad_()
    rm, rv = rm.clone(), rv.clone()
    y = F.batch_norm_add_relu(xr, rr, rm, rv, w, b, training=True)
    y.backward(grad)
    out = {"y": y.detach(), "gx": xr.grad, "gr": rr.grad, "gw": w.grad, "gb": b.grad,
           "rm": rm, "rv": rv}
    xe = x.detach().requires_grad_()
    ye = F.batch_norm_relu(xe, rm, rv, w.detach(), b.detach(), training=False)
    ye.backward(grad)
    out.update(y_eval=ye.detach(), gx_eval=xe.grad)
    return out


@pytest.mark.parametrize("name, shape, dtype, memory_format", CASES, ids=[c[0] for c in CASES])
def test_schedule_matrix_is_bit_identical_and_matches_cpu(name, shape, dtype, memory_format):
    def make():
        t = torch.randn(shape).to(dtype)
        return t.contiguous(memory_format=memory_format) if t.dim() == 4 else t
    x, residual, grad = make(), make(), make()
    rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
    reference = run_all(x, residual, grad, rm, rv)  # the CPU kernels
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else {}
    first = None
    for (order, seed), block_order in itertools.product(THREAD_ORDERS, BLOCK_ORDERS):
        with emulate_cuda(order, seed=seed, block_order=block_order) as mode:
            launches = torch.ops.fastconv_simt._stats()[0]
            results = run_all(x, residual, grad, rm, rv)
            assert torch.ops.fastconv_simt._stats()[0] - launches >= 10
            # 4 op calls: training forward, its backward, eval forward, its backward
            assert mode.redirected >= 4 and not mode.not_emulated
        policy = f"{order}({seed}) x blocks {block_order}"
        for key, value in results.items():
            if first is not None:
                assert torch.equal(value, first[key]), f"{key} differs under {policy}: a race"
            torch.testing.assert_close(value, reference[key], **tol,
                                       msg=lambda m: f"{key} vs CPU under {policy}: {m}")
            assert value.stride() == reference[key].stride(), key
        first = first or results

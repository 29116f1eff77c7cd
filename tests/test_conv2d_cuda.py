"""The CUDA convolution kernels (csrc/cuda/kernels/conv2d_*.cuh), run by the emulator through
torch.ops.fastconv_simt, against PyTorch in fp64 (F.conv2d, torch.nn.grad.conv2d_input /
conv2d_weight) over shapes that make the launch plan (csrc/cuda/launch/conv2d.h) pick every
variant: SIMT large/small tiles, scalar and channels_last vector panels, the weight gradient's
split, the depthwise kernels and the tensor-core (wmma) kernels in fp16, bf16 and TF32. Each
case asserts the plan that ran (_conv2d_last_plan), so a plan change cannot silently leave a
variant untested. Schedules: tests/test_schedules_conv.py."""
import contextlib

import pytest
import torch
import torch.nn.functional as TF

from fastconv.testing import emulate_cuda, simt_available

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

CL = torch.channels_last
NCHW = torch.contiguous_format


def simt():
    return torch.ops.fastconv_simt


@contextlib.contextmanager
def plan_options(tile=0, splits=0, scalar=0, tf32=False):
    """Forces the launch plan's choices (and TF32, as torch.backends.cudnn.allow_tf32 does)."""
    previous_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    simt()._conv2d_plan_options(tile, splits, scalar)
    try:
        yield
    finally:
        simt()._conv2d_plan_options(0, 0, 0)
        torch.backends.cudnn.allow_tf32 = previous_tf32


# atol = rtol per dtype, against fp64 on the same (rounded) inputs. fp32/fp64: summation order
# only. fp16/bf16: the output's final rounding (fp32 accumulation). TF32: inputs rounded to
# 10 mantissa bits (relative ~2^-10 per product) over reductions of up to ~150 terms of
# magnitude ~1, random signs: a few 1e-3 typical, so 3e-2 leaves room without hiding a wrong tap.
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2,
       "tf32": 3e-2}


def run_passes(x, w, b, stride, padding, dilation, groups, gy=None):
    """Forward, input gradient and weight gradient on the emulated kernels, with their plans."""
    out = simt().conv2d(x, w, b, stride, padding, dilation, groups)
    plans = [simt()._conv2d_last_plan()]
    if gy is None:
        gy = torch.randn(out.shape).to(x.dtype).contiguous(memory_format=_format(x))
    dx = simt()._conv2d_input_grad(gy, w, list(x.shape), stride, padding, dilation, groups)
    plans.append(simt()._conv2d_last_plan())
    dw = simt()._conv2d_weight_grad(gy, x, list(w.shape), stride, padding, dilation, groups)
    plans.append(simt()._conv2d_last_plan())
    return out, dx, dw, gy, plans


def reference(x, w, b, gy, stride, padding, dilation, groups):
    xd, wd, gd = x.double(), w.double(), gy.double()
    bd = b.double() if b is not None else None
    out = TF.conv2d(xd, wd, bd, stride, padding, dilation, groups)
    dx = torch.nn.grad.conv2d_input(x.shape, wd, gd, stride, padding, dilation, groups)
    dw = torch.nn.grad.conv2d_weight(xd, w.shape, gd, stride, padding, dilation, groups)
    return out, dx, dw


def _format(t):
    return CL if t.dim() == 4 and t.is_contiguous(memory_format=CL) and not t.is_contiguous() \
        else NCHW


# (id, (N, C, H, W), (K, R, S), stride, padding, dilation, groups, dtype, memory format,
#  plan options, expected plans of (fwd, dgrad, wgrad))
CASES = [
    ("simt-small-nchw", (2, 5, 9, 8), (6, 3, 3), 1, 1, 1, 1, torch.float32, NCHW, {},
     ("fwd:simt-small", "dgrad:simt-small", "wgrad:simt-small splits=")),
    ("simt-large-nchw-stride2", (2, 6, 11, 10), (70, 3, 3), 2, 1, 1, 1, torch.float32, NCHW,
     dict(tile=1), ("fwd:simt-large", "dgrad:simt-large", "wgrad:simt-large splits=")),
    ("simt-small-v4-cl", (2, 8, 7, 9), (12, 3, 3), 1, 1, 1, 1, torch.float32, CL, {},
     ("fwd:simt-small-v4", "dgrad:simt-small-v4", "wgrad:simt-small-v4 splits=")),
    ("simt-large-v4-cl-groups", (1, 16, 8, 8), (72, 3, 3), 1, 2, 2, 2, torch.float32, CL,
     dict(tile=1), ("fwd:simt-large-v4", "dgrad:simt-large-v4", "wgrad:simt-large-v4 splits=")),
    ("simt-scalar-cl-c3", (2, 3, 13, 13), (8, 7, 7), 2, 3, 1, 1, torch.float32, CL, {},
     ("fwd:simt-small", "dgrad:simt-small", "wgrad:simt-small splits=")),
    ("simt-forced-scalar-cl", (2, 8, 6, 6), (8, 1, 1), 1, 0, 1, 1, torch.float32, CL,
     dict(scalar=1), ("fwd:simt-small", "dgrad:simt-small", "wgrad:simt-small splits=")),
    ("wgrad-split3", (3, 4, 10, 10), (8, 3, 3), 1, 1, 1, 1, torch.float32, NCHW,
     dict(splits=3), ("fwd:simt-small", "dgrad:simt-small", "wgrad:simt-small splits=3")),
    ("wgrad-split-auto", (4, 4, 16, 16), (4, 3, 3), 1, 1, 1, 1, torch.float32, CL, {},
     ("fwd:simt-small-v4", "dgrad:simt-small-v4", "wgrad:simt-small-v4 splits=>1")),
    ("fp64-nchw-pad-gt-half", (2, 4, 6, 7), (5, 3, 2), 1, (3, 2), 1, 1, torch.float64, NCHW, {},
     ("fwd:simt-small", "dgrad:simt-small", "wgrad:simt-small splits=")),
    ("fp64-v2-cl-dilated", (2, 4, 9, 9), (6, 3, 3), 2, 2, 2, 1, torch.float64, CL, {},
     ("fwd:simt-small-v2", "dgrad:simt-small-v2", "wgrad:simt-small-v2 splits=")),
    ("depthwise-nchw", (2, 6, 9, 8), (12, 3, 3), 2, 1, 1, 6, torch.float32, NCHW, {},
     ("fwd:depthwise", "dgrad:depthwise", "wgrad:simt-small splits=")),
    ("depthwise-cl-dilated", (2, 8, 9, 9), (8, 5, 5), 1, 4, 2, 8, torch.float32, CL, {},
     ("fwd:depthwise", "dgrad:depthwise", "wgrad:simt-small splits=")),
    ("depthwise-fp64", (1, 4, 7, 6), (4, 3, 3), 1, 1, 1, 4, torch.float64, NCHW, {},
     ("fwd:depthwise", "dgrad:depthwise", "wgrad:simt-small splits=")),
]

WMMA_CASES = [
    ("wmma-fp16-v8-cl", (2, 8, 7, 7), (16, 3, 3), 1, 1, 1, 1, torch.float16, CL, {},
     ("fwd:wmma-v8", "dgrad:wmma-v8", "wgrad:wmma-v8 splits=")),
    ("wmma-fp16-nchw", (2, 5, 7, 7), (6, 3, 3), 2, 1, 1, 1, torch.float16, NCHW, {},
     ("fwd:wmma", "dgrad:wmma", "wgrad:wmma splits=")),
    ("wmma-bf16-v8-cl-groups", (1, 16, 6, 6), (16, 3, 3), 1, 1, 1, 2, torch.bfloat16, CL, {},
     ("fwd:wmma-v8", "dgrad:wmma-v8", "wgrad:wmma-v8 splits=")),
    ("wmma-bf16-scalar-cl", (2, 6, 6, 5), (10, 3, 3), 1, 1, 1, 1, torch.bfloat16, CL, {},
     ("fwd:wmma", "dgrad:wmma", "wgrad:wmma splits=")),
    ("wmma-tf32-v4-cl", (2, 8, 6, 6), (8, 3, 3), 1, 1, 1, 1, torch.float32, CL, dict(tf32=True),
     ("fwd:wmma-v4", "dgrad:wmma-v4", "wgrad:wmma-v4 splits=")),
    ("wmma-tf32-nchw-split", (2, 3, 9, 9), (5, 3, 3), 1, 1, 1, 1, torch.float32, NCHW,
     dict(tf32=True, splits=2), ("fwd:wmma", "dgrad:wmma", "wgrad:wmma splits=2")),
    ("depthwise-fp16-cl", (2, 8, 7, 7), (16, 3, 3), 1, 1, 1, 8, torch.float16, CL, {},
     ("fwd:depthwise", "dgrad:depthwise", "wgrad:wmma splits=")),  # C/g = 1: scalar
]


def make_inputs(shape, kshape, groups, dtype, memory_format, bias=True):
    n, c, h, w = shape
    k, r, s = kshape
    x = torch.randn(shape).to(dtype).contiguous(memory_format=memory_format)
    wt = (torch.randn(k, c // groups, r, s) / (c // groups * r * s) ** 0.5).to(dtype)
    wt = wt.contiguous(memory_format=memory_format)
    b = torch.randn(k).to(dtype) if bias else None
    return x, wt, b


def check_plans(got, expected):
    """Plans as describe() in cuda/launch/conv2d.h prints them. A weight-gradient plan lists
    its split count: expected "splits=N" must match exactly, "splits=>1" means any split,
    a bare "splits=" any count (the plan sizes it from the device)."""
    for g, e in zip(got, expected):
        g_variant, _, g_splits = g.partition(" splits=")
        e_variant, _, e_splits = e.partition(" splits=")
        assert g_variant == e_variant, (g, e)
        if e_splits == ">1":
            assert int(g_splits) > 1, (g, e)
        elif e_splits:
            assert g_splits == e_splits, (g, e)


def check_case(shape, kshape, stride, padding, dilation, groups, dtype, memory_format, options,
               plans, schedule="random", seed=7):
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    x, w, b = make_inputs(shape, kshape, groups, dtype, memory_format)
    with emulate_cuda(schedule, seed=seed), plan_options(**options):
        out, dx, dw, gy, got_plans = run_passes(x, w, b, stride, padding, dilation, groups)
    check_plans(got_plans, plans)
    ref = reference(x, w, b, gy, stride, padding, dilation, groups)
    tol = TOL["tf32" if options.get("tf32") else dtype]
    for name, value, expected in zip(("output", "grad_input", "grad_weight"), (out, dx, dw), ref):
        assert value.dtype == dtype and value.shape == expected.shape, name
        torch.testing.assert_close(value.double(), expected, atol=tol, rtol=tol, msg=name)
    # activations keep the memory format, and the weight gradient takes it (as PyTorch's)
    assert out.is_contiguous(memory_format=memory_format)
    assert dx.is_contiguous(memory_format=memory_format)
    assert dw.is_contiguous(memory_format=memory_format)
    return out, dx, dw


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_simt_and_depthwise_variants_match_pytorch(case):
    check_case(*case[1:])


def _have_wmma():
    # the emulator's nvcuda::wmma (csrc/simt/mma.h) is in this build
    try:
        with emulate_cuda():
            simt().conv2d(torch.ones(1, 1, 1, 1, dtype=torch.half),
                          torch.ones(1, 1, 1, 1, dtype=torch.half), None, [1, 1], [0, 0],
                          [1, 1], 1)
        return True
    except RuntimeError as e:
        if "no kernel for plan" in str(e):
            return False
        raise


@pytest.mark.parametrize("case", WMMA_CASES, ids=[c[0] for c in WMMA_CASES])
def test_tensor_core_variants_match_pytorch(case):
    if not _have_wmma():
        pytest.fail("the emulated build has no nvcuda::wmma (csrc/simt/mma.h)")
    check_case(*case[1:])


def test_fp32_runs_tf32_only_when_pytorch_allows_it():
    x, w, _ = make_inputs((1, 4, 5, 5), (4, 3, 3), 1, torch.float32, CL)
    for allow, plan in ((False, "fwd:simt-small-v4"), (True, "fwd:wmma-v4")):
        with emulate_cuda(), plan_options(tf32=allow):
            simt().conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
            assert simt()._conv2d_last_plan() == plan


@pytest.mark.parametrize("memory_format", [NCHW, CL], ids=["nchw", "cl"])
def test_empty_batch_unbatched_and_non_contiguous(memory_format):
    args = ([1, 1], [1, 1], [1, 1], 1)
    w = torch.randn(6, 4, 3, 3).contiguous(memory_format=memory_format)
    with emulate_cuda("random", seed=3), plan_options():  # fp32 without TF32
        # empty batch: empty activations, a zero weight gradient
        x0 = torch.randn(0, 4, 5, 5).contiguous(memory_format=memory_format)
        out0 = simt().conv2d(x0, w, None, *args)
        assert out0.shape == (0, 6, 5, 5)
        gy0 = torch.randn(0, 6, 5, 5)
        assert simt()._conv2d_input_grad(gy0, w, [0, 4, 5, 5], *args).shape == (0, 4, 5, 5)
        assert torch.equal(simt()._conv2d_weight_grad(gy0, x0, [6, 4, 3, 3], *args),
                           torch.zeros(6, 4, 3, 3))
        # unbatched (C, H, W) and a non-contiguous view
        x3 = torch.randn(4, 7, 6)
        out3 = simt().conv2d(x3, w, None, *args)
        xs = torch.randn(2, 8, 7, 12)[:, ::2, :, ::2]
        outs = simt().conv2d(xs, w, None, *args)
    torch.testing.assert_close(out3.double(), TF.conv2d(x3.double(), w.double(), None, 1, 1),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs.double(), TF.conv2d(xs.double(), w.double(), None, 1, 1),
                               atol=1e-4, rtol=1e-4)


def test_bad_input_raises_the_shared_error():
    with emulate_cuda():
        with pytest.raises(RuntimeError, match=r"fastconv::conv2d: expected input channels "
                                               r"divisible by groups"):
            simt().conv2d(torch.randn(1, 5, 4, 4), torch.randn(4, 2, 3, 3), None, [1, 1],
                          [1, 1], [1, 1], 2)

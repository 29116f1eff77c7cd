"""The stride-2 Winograd CPU convolution (csrc/cpu/conv2d_fast_winograd.cpp with the F2s2 and
F2s2T transforms of conv2d_fast_winograd_avx2.cpp, and the weight gradient of
conv2d_fast_winograd_wgrad.cpp with TrStride2: 3x3 stride-2 layers; the forward pass in 2 x 2
output tiles from 5 x 5 input patches, the input gradient in 4 x 4 tiles of the input from 3 x 3
grad_output patches, the weight gradient over 2 x 2 grad_output tiles, all 25 products per tile
instead of 36; the weight gradient in fp32 and fp64, with gradcheck), forced with
FASTCONV_CPU_WINOGRAD so small shapes reach it: against PyTorch in fp64 within the rounding
bound of a direct sum over shapes that hit every tail (odd and even sizes, patches past the
image, padding 0..3 and unequal, odd and even (the input gradient's two tile phases), channel
counts not a multiple of the SIMD width or register block, the weights-stationary loop order,
batch 0/1/3), NCHW and channels_last, non-contiguous tensors and channels_last weights (the
same bits); that the path ran (per-process counters), that unequal strides (and for the input
gradient, paddings of unequal parity) never take it, and that the default heuristic takes it
for ResNet-50's res4a_branch2b and not for 7 x 7 outputs (res5a_branch2b); bit-identical
results at 1 and 3 threads; the accuracy next to the other kernels'.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import (assert_wgrad_within_tile_bound, assert_within_tile_bound, described_case_ids, pair,
                          reference, results_at_thread_counts)
from conv_helpers import gemm_width  # noqa: F401  (fixture: native and, on AVX-512, AVX2 kernels)
from fastconv.nn import functional as FF

ops = torch.ops.fastconv

pytestmark = pytest.mark.skipif(ops._conv2d_cpu_fast_info()[0] == "generic",
                                reason="no AVX2: the Winograd kernels need the SIMD kernels")

# (n, c, h, w, k, padding, what it reaches)
CASES = [
    (1, 5, 9, 10, 7, 1, "odd C and K, 5x5 output, even input width"),
    (3, 16, 7, 7, 16, 1, "batch 3, 4x4 output"),
    (2, 17, 11, 6, 33, 0, "padding 0, C tail, K past two register blocks"),
    (1, 9, 6, 13, 20, 2, "padding 2"),
    (1, 12, 9, 10, 24, (2, 0), "unequal padding of equal parity"),
    (1, 6, 10, 9, 10, 3, "padding 3"),
    (1, 3, 3, 3, 5, 1, "2x2 output from a 3x3 image"),
    (1, 8, 3, 3, 8, 0, "1x1 output"),
    (2, 40, 9, 8, 72, 1, "several channel blocks"),
    (2, 256, 10, 12, 260, 1, "256 channels in and out (weights-stationary loop order, K tail)"),
    (0, 8, 6, 6, 16, 1, "empty batch"),
]
IDS = described_case_ids(CASES)


def _calls():
    return ops._conv2d_cpu_winograd_info()


def _conv(x, weight, bias, padding, stride=(2, 2)):
    return ops.conv2d(x, weight, bias, list(stride), list(pair(padding)), [1, 1], 1)


def _input_grad(grad_out, weight, x_shape, padding, stride=(2, 2)):
    return ops._conv2d_input_grad(grad_out, weight, list(x_shape), list(stride), list(pair(padding)), [1, 1], 1)


def _check(out, x, weight, bias, padding, what):
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, 2, pair(padding)), x, weight, bias)
    terms = weight[0].numel() + (bias is not None)
    assert_within_tile_bound(out, exact, mag, terms, what, tile=2)


def _weight_grad(grad_out, x, k, padding):
    return ops._conv2d_weight_grad(grad_out, x, [k, x.shape[1], 3, 3], [2, 2], list(pair(padding)), [1, 1], 1)


# The weight gradient's bound (conv_helpers): a 2 x 2 tile's 5 x 5 input patch pairs offsets -2
# .. 4 with each grad_output pixel; 8 extra roundings for the transforms, which only add
# (measured up to 2 eps x magnitude).
def _check_weight_grad(got, x, grad_out, padding, what="weight gradient"):
    assert_wgrad_within_tile_bound(got, x, grad_out, padding, 2, (-2, 4), 8, what)


def _check_input_grad(grad_in, grad_out, weight, x_shape, padding):
    exact, mag = reference(lambda g_, w_: torch.nn.grad.conv2d_input(x_shape, w_, g_, 2, pair(padding)),
                           grad_out, weight)
    terms = weight.shape[0] * 9
    assert_within_tile_bound(grad_in, exact, mag, terms, "input gradient", tile=4)


@pytest.mark.parametrize("mode", ["2", "4"])  # either value forces the one stride-2 variant
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stride2_matches_torch(case, channels_last, mode, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", mode)
    n, c, h, w, k, padding, _ = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
    weight, bias = torch.randn(k, c, 3, 3), torch.randn(k)
    before = _calls()
    out = _conv(x, weight, bias, padding)
    assert _calls()[0] - before[0] == (1 if n > 0 else 0)
    _check(out, x, weight, bias, padding, "forward")
    if n > 0 and out.shape[2] * out.shape[3] > 1:  # (empty or 1x1 results: the format is ambiguous)
        assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stride2_input_grad_matches_torch(case, channels_last, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    n, c, h, w, k, padding, _ = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    weight = torch.randn(k, c, 3, 3)
    p, q = (h + 2 * pair(padding)[0] - 3) // 2 + 1, (w + 2 * pair(padding)[1] - 3) // 2 + 1
    grad_out = torch.randn(n, k, p, q).contiguous(memory_format=fmt)
    before = _calls()
    grad_in = _input_grad(grad_out, weight, (n, c, h, w), padding)
    assert _calls()[1] - before[1] == (1 if n > 0 else 0)
    _check_input_grad(grad_in, grad_out, weight, (n, c, h, w), padding)
    if n > 0 and p * q > 1:  # (a 1x1 grad_output is in both formats)
        assert grad_in.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stride2_weight_grad_matches_torch(case, channels_last, dtype, gemm_width, monkeypatch):
    # gemm_width: the AVX-512 kernels (6 x 64 and 6 x 32 register tiles, by the column count)
    # and the AVX2 ones (6 x 16).
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    monkeypatch.setenv("FASTCONV_CPU_WGRAD_IM2COL", "0")  # (it takes few-pixel fp32 layers first)
    n, c, h, w, k, padding, _ = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=fmt)
    p, q = (h + 2 * pair(padding)[0] - 3) // 2 + 1, (w + 2 * pair(padding)[1] - 3) // 2 + 1
    grad_out = torch.randn(n, k, p, q, dtype=dtype).contiguous(memory_format=fmt)
    before = ops._conv2d_cpu_winograd_wgrad_info()
    got = _weight_grad(grad_out, x, k, padding)
    assert ops._conv2d_cpu_winograd_wgrad_info() - before == (1 if n > 0 else 0)
    _check_weight_grad(got, x, grad_out, padding)


def test_weight_grad_gradcheck_fp64(monkeypatch):
    # fp64 through autograd with every stride-2 pass forced onto Winograd where it exists (the
    # forward and input gradient are fp32-only and run the generic kernels here).
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    before = ops._conv2d_cpu_winograd_wgrad_info()
    assert torch.autograd.gradcheck(lambda a, b: FF.conv2d(a, b, None, stride=2, padding=1), (x, weight))
    assert ops._conv2d_cpu_winograd_wgrad_info() > before


def test_non_contiguous_tensors_and_weight_layouts_give_the_same_bits(monkeypatch):
    # Any strides: a column-strided input, a permuted weight, a channels_last one (gathered by
    # register transposes); the same filter values, so the same bits.
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    x = torch.randn(2, 140, 9, 22)[:, :, :, ::2]  # every other column: (2, 140, 9, 11)
    weight = torch.randn(3, 3, 140, 20).permute(3, 2, 0, 1)  # (20, 140, 3, 3), not contiguous
    results = []
    for w in (weight, weight.contiguous(), weight.contiguous(memory_format=torch.channels_last)):
        before = _calls()
        results.append(_conv(x, w, None, 1))
        assert _calls()[0] == before[0] + 1
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    _check(results[0], x, weight, None, 1, "forward")


def test_unequal_strides_and_paddings_of_unequal_parity_take_other_paths(monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    x, weight = torch.randn(1, 16, 9, 9), torch.randn(16, 16, 3, 3)
    before = _calls()
    for stride in ((2, 1), (1, 2)):
        out = _conv(x, weight, None, 1, stride)
        torch.testing.assert_close(out, F.conv2d(x, weight, None, stride, 1), rtol=1e-4, atol=1e-4)
        grad_in = _input_grad(torch.randn_like(out), weight, x.shape, 1, stride)
        assert grad_in.shape == x.shape
    assert _calls() == before
    # The input gradient's tiles start at the padding's parity, the same in both directions.
    grad_out = torch.randn(1, 16, 5, 6)
    grad_in = _input_grad(grad_out, weight, x.shape, (1, 2))
    assert _calls() == before
    _check_input_grad(grad_in, grad_out, weight, x.shape, (1, 2))


def test_autograd_through_the_public_function(monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    x = torch.randn(2, 16, 10, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(24, 16, 3, 3, requires_grad=True)
    before = _calls()
    out = FF.conv2d(x, weight, None, stride=2, padding=1)
    assert _calls()[0] == before[0] + 1
    _check(out, x, weight, None, 1, "forward")
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    assert _calls()[1] == before[1] + 1
    _check_input_grad(x.grad, grad_out, weight, x.shape, 1)
    xd, wd = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    F.conv2d(xd, wd, None, 2, 1).backward(grad_out.double())
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight.grad.double(), wd.grad, rtol=1e-4, atol=1e-4)


def test_off_with_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "0")
    x, weight = torch.randn(1, 64, 16, 16), torch.randn(64, 64, 3, 3)
    before = _calls()
    out = _conv(x, weight, None, 1)
    assert _calls() == before
    _check(out, x, weight, None, 1, "forward")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", [CASES[8], CASES[9]], ids=[IDS[8], IDS[9]])
def test_results_do_not_depend_on_thread_count(case, channels_last, monkeypatch):
    # Few tiles: the work is split over output channels too, differently per thread count.
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "2")
    n, c, h, w, k, padding, _ = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
    weight, bias = torch.randn(k, c, 3, 3), torch.randn(k)
    grad_out = torch.randn_like(_conv(x, weight, bias, padding))
    results = results_at_thread_counts(lambda: (_conv(x, weight, bias, padding),
                                                _input_grad(grad_out, weight, x.shape, padding),
                                                _weight_grad(grad_out, x, k, padding)), counts=(1, 3))
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[1]))


def test_heuristic(monkeypatch):
    # Taken where the tiles cost at most 3/4 of the direct products (even output sizes: 25/36),
    # with 32+ channels in and out, and for the input gradient at most 128 output channels
    # (there the strided implicit GEMM is faster); not for 7 x 7 outputs (forward: 16 tiles, 400
    # products per channel pair against 441) or few channels.
    monkeypatch.delenv("FASTCONV_CPU_WINOGRAD", raising=False)
    before = _calls()
    x, weight = torch.randn(1, 256, 28, 28), torch.randn(256, 256, 3, 3)  # res4a_branch2b
    out = _conv(x, weight, None, 1)
    assert _calls() == (before[0] + 1, before[1])
    _check(out, x, weight, None, 1, "forward")
    _input_grad(out, weight, x.shape, 1)
    assert _calls() == (before[0] + 1, before[1])
    x, weight = torch.randn(1, 128, 56, 56), torch.randn(128, 128, 3, 3)  # res3a_branch2b
    out = _conv(x, weight, None, 1)
    grad_in = _input_grad(out, weight, x.shape, 1)
    assert _calls() == (before[0] + 2, before[1] + 1)
    _check_input_grad(grad_in, out, weight, x.shape, 1)
    for c, size in ((64, 14), (16, 28)):  # 7 x 7 outputs; few channels
        x, weight = torch.randn(1, c, size, size), torch.randn(c, c, 3, 3)
        _input_grad(_conv(x, weight, None, 1), weight, x.shape, 1)
    assert _calls() == (before[0] + 2, before[1] + 1)
    x, weight = torch.randn(1, 32, 28, 28), torch.randn(32, 32, 3, 3)
    _input_grad(_conv(x, weight, None, 1), weight, x.shape, 1)
    assert _calls() == (before[0] + 3, before[1] + 2)


def test_weight_grad_heuristic(monkeypatch):
    # The weight gradient: where the tiles cost at most 3/4 of the direct products and one side
    # has at most 64 channels (with more, the direct kernel measured faster).
    monkeypatch.delenv("FASTCONV_CPU_WINOGRAD", raising=False)
    monkeypatch.delenv("FASTCONV_CPU_WGRAD_IM2COL", raising=False)
    before = ops._conv2d_cpu_winograd_wgrad_info()
    for c, k, size, taken in ((64, 128, 28, True), (128, 128, 28, False), (64, 64, 14, False), (16, 64, 28, False)):
        x, grad_out = torch.randn(1, c, size, size), torch.randn(1, k, size // 2, size // 2)
        got = _weight_grad(grad_out, x, k, 1)
        assert ops._conv2d_cpu_winograd_wgrad_info() - before == int(taken), (c, k, size)
        before += int(taken)
        _check_weight_grad(got, x, grad_out, 1)


# Max |error| / (eps * rms(exact result)) on this problem (unit normals, C = K = 128, 3x3 stride
# 2, 12 x 12 <-> 6 x 6), measured: forward: direct kernel 33 (NCHW) and implicit GEMM 10
# (channels_last), the stride-2 Winograd 22 in both (its transforms only add and subtract, and
# each GEMM sums C = 128 products instead of 9 C); PyTorch / oneDNN 11 and 36. Input gradient:
# the other kernels 28, Winograd 27, PyTorch 23 (both formats). Weight gradient (C = K = 64, 2 x
# 24 x 24 input): direct kernel 19, Winograd 16, PyTorch 19. The bounds allow about 3x the measured
# values (the error of a random problem varies with the seed).
ACCURACY_BOUNDS = {("forward", "0"): 120.0, ("forward", "2"): 60.0,
                   ("input_grad", "0"): 120.0, ("input_grad", "2"): 80.0,
                   ("weight_grad", "0"): 60.0, ("weight_grad", "2"): 50.0}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("mode", ["0", "2"], ids=["other_kernels", "winograd"])
@pytest.mark.parametrize("which", ["forward", "input_grad", "weight_grad"])
def test_accuracy_against_fp64(which, mode, channels_last, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", mode)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, weight = torch.randn(2, 128, 12, 12).contiguous(memory_format=fmt), torch.randn(128, 128, 3, 3)
    grad_out = torch.randn(2, 128, 6, 6).contiguous(memory_format=fmt)
    if which == "weight_grad":
        x, grad_out = torch.randn(2, 64, 24, 24).contiguous(memory_format=fmt), torch.randn(2, 64, 12, 12)
        grad_out = grad_out.contiguous(memory_format=fmt)
    before = (*_calls(), ops._conv2d_cpu_winograd_wgrad_info())
    if which == "forward":
        got, exact = _conv(x, weight, None, 1), F.conv2d(x.double(), weight.double(), None, 2, 1)
    elif which == "input_grad":
        got = _input_grad(grad_out, weight, x.shape, 1)
        exact = torch.nn.grad.conv2d_input(x.shape, weight.double(), grad_out.double(), 2, 1)
    else:
        got = _weight_grad(grad_out, x, 64, 1)
        exact = torch.nn.grad.conv2d_weight(x.double(), got.shape, grad_out.double(), 2, 1)
    ran = [a - b for a, b in zip((*_calls(), ops._conv2d_cpu_winograd_wgrad_info()), before)]
    on = int(mode != "0")
    assert ran == {"forward": [on, 0, 0], "input_grad": [0, on, 0], "weight_grad": [0, 0, on]}[which]
    scale = torch.finfo(torch.float32).eps * exact.pow(2).mean().sqrt().item()
    err = ((got.double() - exact).abs().max() / scale).item()
    assert err <= ACCURACY_BOUNDS[which, mode], f"max error {err:.1f} eps * rms"

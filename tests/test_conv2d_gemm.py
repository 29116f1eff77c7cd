"""The 1x1-convolution GEMM of the fast fp32 CPU kernels (csrc/cpu/conv2d_fast_gemm*.cpp): the
three passes, NCHW and channels_last, against PyTorch in fp64 within the rounding bound, over
shapes of every class: ResNet-50's 1x1 layers (batch 1-2, images shrunk where needed), tails of
M, N and K that are not multiples of the 6 x 16, 6 x 32 or 6 x 64 register tile (AVX2, AVX-512: all
three run on an AVX-512 machine, each on every shape), reductions shorter and longer
than one K block (256 steps) and weight-gradient blocks that span images or are summed in
reduction slices (FASTCONV_CPU_GEMM_SLICES=0: without), stride 2 (NCHW
forward read in place by the packing, or gathered; gathered weight gradient, scattered input
gradient), NCHW images folded into the GEMM's columns or staged through NHWC copies, 1x1 images, C tiles split among
threads, non-contiguous inputs and weights with any strides; that the GEMM path ran (a
per-process counter), FASTCONV_CPU_GEMM=0 turns it off and =all on for every forward; the
channels_last weight gradient with X read in place (AVX-512) equal to the packed one; and
bit-identical results at 1, 2 and 3 threads.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import assert_within_rounding, gemm_tile, reference  # noqa: F401

ops = torch.ops.fastconv

pytestmark = [pytest.mark.usefixtures("gemm_tile"),
              pytest.mark.skipif(ops._conv2d_cpu_fast_info()[0] == "generic",
                                 reason="no AVX2: the GEMM needs the SIMD kernels")]



@pytest.fixture(autouse=True)
def no_dot_product_forward(monkeypatch):
    # Some channels_last forwards here (2048 -> 512 at 7x7) have the few pixels and many
    # weights for which the dot-product kernel runs ahead of the GEMM; these tests are the
    # GEMM's (the other kernel has its own, tests/test_conv2d_dot.py).
    monkeypatch.setenv("FASTCONV_CPU_DOT", "0")


# (n, c, h, w, k, stride, what it reaches)
CASES = [
    (2, 64, 14, 14, 256, 1, "res2a_branch1 shrunk: 64 -> 256"),
    (1, 256, 12, 12, 64, 1, "res2b_branch2a shrunk: 256 -> 64, one K block"),
    (2, 128, 10, 10, 512, 1, "res3a_branch2c shrunk: 128 -> 512"),
    (1, 512, 14, 14, 1024, 2, "res4a_branch1: stride 2, two K blocks"),
    (2, 256, 14, 14, 512, 2, "res3a_branch1 shrunk: stride 2"),
    (2, 1024, 7, 7, 256, 1, "res4b_branch2a at 7x7: K blocks of 256, 49-pixel rows"),
    (1, 2048, 7, 7, 512, 1, "res5b_branch2a: 8 K blocks"),
    (2, 13, 5, 7, 19, 1, "M, N, K tails everywhere"),
    (1, 300, 3, 5, 23, 1, "K = 300: two blocks of 150"),
    (2, 600, 9, 9, 40, 1, "K = 600: three blocks of 200"),
    (3, 7, 1, 1, 5, 1, "1x1 images"),
    (1, 1, 4, 4, 1, 1, "one channel in and out"),
    (2, 20, 9, 11, 30, (2, 3), "stride (2, 3), odd image"),
    (3, 16, 20, 20, 24, 1, "weight gradient: K blocks span images (3 x 400 = 1200 steps)"),
    (1, 64, 40, 40, 96, 1, "C split into several thread tiles"),
    (2, 32, 16, 16, 24, 2, "NCHW stride 2 read in place: panels across output rows (q = 8)"),
    (2, 16, 30, 30, 8, 2, "NCHW stride 2 in place, q = 15: panels split mid-row"),
    (1, 20, 9, 11, 30, (2, 3), "stride (2, 3) in place, one image"),
    (3, 24, 9, 9, 40, 1, "NCHW images folded into the columns: P = 81, panels across images"),
    (16, 16, 24, 24, 24, 1, "weight gradient in reduction slices: 9216 steps, 4-8 slices by tile"),
]
IDS = [c[-1].split(":")[0].replace(" ", "_").replace(",", "") for c in CASES]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _passes(x, weight, bias, grad_out, stride):
    """The three passes through the fastconv ops."""
    args = (stride, (0, 0), (1, 1), 1)
    out = ops.conv2d(x, weight, bias, *args)
    grad_in = ops._conv2d_input_grad(grad_out, weight, list(x.shape), *args)
    grad_w = ops._conv2d_weight_grad(grad_out, x, list(weight.shape), *args)
    return out, grad_in, grad_w


def _inputs(case, fmt, seed=0):
    n, c, h, w, k, stride, _ = case
    stride = _pair(stride)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=fmt)
    weight = torch.randn(k, c, 1, 1, generator=gen)
    bias = torch.randn(k, generator=gen)
    p, q = (h - 1) // stride[0] + 1, (w - 1) // stride[1] + 1
    grad_out = torch.randn(n, k, p, q, generator=gen).contiguous(memory_format=fmt)
    return x, weight, bias, grad_out, stride


def _check(x, weight, bias, grad_out, stride, fmt):
    n, c = x.shape[:2]
    k = weight.shape[0]
    before = ops._conv2d_cpu_gemm_info()
    out, grad_in, grad_w = _passes(x, weight, bias, grad_out, stride)
    after = ops._conv2d_cpu_gemm_info()
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1], "the GEMM path did not run"
    assert out.is_contiguous(memory_format=fmt) and grad_in.is_contiguous(memory_format=fmt)
    args = (stride, 0, 1, 1)
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *args), x, weight, bias)
    assert_within_rounding(out, exact, mag, c + 1, "forward")
    exact, mag = reference(lambda w_, g_: torch.nn.grad.conv2d_input(x.shape, w_, g_, *args), weight, grad_out)
    assert_within_rounding(grad_in, exact, mag, k, "input gradient")
    exact, mag = reference(lambda x_, g_: torch.nn.grad.conv2d_weight(x_, weight.shape, g_, *args), x, grad_out)
    assert_within_rounding(grad_w, exact, mag, n * grad_out.shape[2] * grad_out.shape[3], "weight gradient")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gemm_matches_torch(case, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    _check(*_inputs(case, fmt), fmt)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bias_free_and_empty_batch(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, weight, _, grad_out, stride = _inputs((2, 20, 6, 5, 36, 1, ""), fmt)
    _check(x, weight, None, grad_out, stride, fmt)
    out, grad_in, grad_w = _passes(x[:0], weight, None, grad_out[:0], stride)
    assert out.shape == (0, 36, 6, 5) and grad_in.shape == (0, 20, 6, 5)
    assert torch.equal(grad_w, torch.zeros(36, 20, 1, 1))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_weights_with_any_strides(channels_last):
    # The packing reads the weight through its strides: a transposed weight (unit stride
    # along K) and every other element of a wider one must give the contiguous weight's bits.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, weight, bias, grad_out, stride = _inputs((2, 40, 8, 9, 52, 1, ""), fmt)
    transposed = weight.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    wide = torch.zeros(52, 80, 1, 1)
    wide[:, ::2] = weight
    strided = wide[:, ::2]
    want = _passes(x, weight, bias, grad_out, stride)
    for odd in (transposed, strided):
        assert not odd.is_contiguous() and torch.equal(odd, weight)
        got = _passes(x, odd, bias, grad_out, stride)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    _check(x, strided, bias, grad_out, stride, fmt)


def test_noncontiguous_inputs():
    # Neither NCHW nor channels_last: every other column of wider tensors.
    x_wide = torch.randn(2, 24, 7, 18)
    g_wide = torch.randn(2, 40, 7, 18)
    x, grad_out = x_wide[..., ::2], g_wide[..., ::2]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(40, 24, 1, 1), torch.randn(40)
    got = _passes(x, weight, bias, grad_out, (1, 1))
    want = _passes(x.contiguous(), weight, bias, grad_out.contiguous(), (1, 1))
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    _check(x.contiguous(), weight, bias, grad_out.contiguous(), (1, 1), torch.contiguous_format)


def _wide_tile():
    """Whether the GEMM runs the 6 x 32 AVX-512 tile here (not AVX2's 6 x 16)."""
    return (torch.ops.fastconv._conv2d_cpu_fast_info()[0] == "avx512"
            and os.environ.get("FASTCONV_CPU_KERNELS") != "avx2")


def _widest_tile(k):
    """Whether the GEMM runs the 6 x 64 AVX-512 tile for k output channels (gemm::kernels_for_columns)."""
    forced = os.environ.get("FASTCONV_CPU_GEMM_NR")
    return _wide_tile() and forced != "32" and (forced == "64" or k % 64 == 0 or k % 64 > 32)


@pytest.mark.parametrize("channels,k", [(8, 16), (80, 16), (80, 64)])
def test_large_channels_last_forward_takes_the_direct_kernel_or_the_gemm(channels, k):
    # measured (csrc/cpu/conv2d_fast_gemm_conv.cpp, forward_applies): a channels_last forward on a
    # 56 x 56 map runs the direct kernel, except with at most 64 channels on the 32-wide tile
    # or at stride 1 on the 64-wide one; the gradients and NCHW always take the GEMM
    x = torch.randn(1, channels, 56, 56).contiguous(memory_format=torch.channels_last)
    weight, grad_out = torch.randn(k, channels, 1, 1), torch.randn(1, k, 56, 56)
    before = ops._conv2d_cpu_gemm_info()
    out, _, _ = _passes(x, weight, None, grad_out.contiguous(memory_format=torch.channels_last), (1, 1))
    _passes(x.contiguous(), weight, None, grad_out, (1, 1))
    after = ops._conv2d_cpu_gemm_info()
    forward_gemm = int((_wide_tile() and channels <= 64) or _widest_tile(k))
    assert [a - b for a, b in zip(after, before)] == [1 + forward_gemm, 2, 2]
    exact, mag = reference(lambda x_, w_: F.conv2d(x_, w_), x, weight)
    assert_within_rounding(out, exact, mag, channels, "forward")


def test_gemm_everywhere_switch(monkeypatch):
    # FASTCONV_CPU_GEMM=all (for measuring) sends that channels_last forward to the GEMM too
    x = torch.randn(1, 80, 56, 56).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(16, 80, 1, 1), torch.randn(16)
    monkeypatch.setenv("FASTCONV_CPU_GEMM", "all")
    before = ops._conv2d_cpu_gemm_info()
    out = ops.conv2d(x, weight, bias, (1, 1), (0, 0), (1, 1), 1)
    after = ops._conv2d_cpu_gemm_info()
    assert [a - b for a, b in zip(after, before)] == [1, 0, 0]
    assert out.is_contiguous(memory_format=torch.channels_last)
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_), x, weight, bias)
    assert_within_rounding(out, exact, mag, 81, "forward")


def test_gemm_off_switch(monkeypatch):
    x, weight, bias, grad_out, stride = _inputs((1, 16, 6, 6, 24, 1, ""), torch.contiguous_format)
    monkeypatch.setenv("FASTCONV_CPU_GEMM", "0")
    before = ops._conv2d_cpu_gemm_info()
    out, grad_in, grad_w = _passes(x, weight, bias, grad_out, stride)
    assert ops._conv2d_cpu_gemm_info() == before
    # the direct kernels give all three passes within the same rounding bounds as the GEMM
    args = (stride, 0, 1, 1)
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *args), x, weight, bias)
    assert_within_rounding(out, exact, mag, x.shape[1] + 1, "forward")
    exact, mag = reference(lambda w_, g_: torch.nn.grad.conv2d_input(x.shape, w_, g_, *args), weight, grad_out)
    assert_within_rounding(grad_in, exact, mag, weight.shape[0], "input gradient")
    exact, mag = reference(lambda x_, g_: torch.nn.grad.conv2d_weight(x_, weight.shape, g_, *args), x, grad_out)
    assert_within_rounding(grad_w, exact, mag, x.shape[0] * 36, "weight gradient")


# Channels_last weight gradients whose X has at least as many channels as dY: with the AVX-512
# tile the micro-kernel reads X in place (FASTCONV_CPU_GEMM_B_ROWS=0 packs it, as the AVX2 tile
# always does): the same products summed in the same order, so the bits must agree.
B_ROWS = [i for i, c in enumerate(CASES) if c[1] >= c[4]]


@pytest.mark.parametrize("case", [CASES[i] for i in B_ROWS], ids=[IDS[i] for i in B_ROWS])
def test_weight_gradient_reading_x_in_place_is_the_packed_one(case, monkeypatch):
    x, weight, _, grad_out, stride = _inputs(case, torch.channels_last)
    args = (stride, (0, 0), (1, 1), 1)
    in_place = ops._conv2d_weight_grad(grad_out, x, list(weight.shape), *args)
    monkeypatch.setenv("FASTCONV_CPU_GEMM_B_ROWS", "0")
    packed = ops._conv2d_weight_grad(grad_out, x, list(weight.shape), *args)
    assert torch.equal(in_place, packed)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_weight_gradient_without_reduction_slices(channels_last, monkeypatch):
    # the slices change the order of the sum, not the bound
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    monkeypatch.setenv("FASTCONV_CPU_GEMM_SLICES", "0")
    _check(*_inputs(CASES[19], fmt), fmt)


def _staged_through_nhwc(case):
    """Whether an NCHW forward runs as a channels_last GEMM on NHWC copies (gemm_conv.cpp,
    nchw_via_nhwc): a batch of images of < 128 output pixels (< 256 with stride), not a
    multiple of 64; the input gradient too at stride 1."""
    n, c, h, w, k, stride, _ = case
    sh, sw = _pair(stride)
    P = ((h - 1) // sh + 1) * ((w - 1) // sw + 1)
    strided = (sh, sw) != (1, 1)
    return n > 1 and P % 64 != 0 and P < (256 if strided else 128) and c > 1 and h * w > 1


STAGED = [i for i, c in enumerate(CASES) if _staged_through_nhwc(c)]


@pytest.mark.parametrize("case", [CASES[i] for i in STAGED], ids=[IDS[i] for i in STAGED])
def test_short_nchw_images_through_nhwc_copies(case, monkeypatch):
    # Staged, the NCHW passes are the channels_last GEMM's on the same numbers: the same bits.
    # FASTCONV_CPU_GEMM_NHWC=0 keeps the NCHW GEMM (images folded into the columns), which
    # must stay within the rounding bound too.
    x, weight, bias, grad_out, stride = _inputs(case, torch.contiguous_format)
    staged = _passes(x, weight, bias, grad_out, stride)
    cl = torch.channels_last
    in_cl = _passes(x.contiguous(memory_format=cl), weight, bias, grad_out.contiguous(memory_format=cl), stride)
    assert staged[0].is_contiguous() and torch.equal(staged[0], in_cl[0])
    if _pair(stride) == (1, 1):
        assert staged[1].is_contiguous() and torch.equal(staged[1], in_cl[1])
    monkeypatch.setenv("FASTCONV_CPU_GEMM_NHWC", "0")
    _check(x, weight, bias, grad_out, stride, torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 3, 8, 13, 14, 15, 18, 19)],
                         ids=[IDS[i] for i in (0, 3, 8, 13, 14, 15, 18, 19)])
def test_results_do_not_depend_on_thread_count(case, channels_last):
    # The thread tiles change with the thread count; the summation order must not.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    inputs = _inputs(case, fmt)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(_passes(*inputs))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)

"""The implicit-GEMM forward convolution of the fast fp32 CPU kernels
(csrc/cpu/conv2d_fast_im2col*.cpp): NCHW and channels_last against PyTorch in fp64 within the
rounding bound, over first layers with C = 3 and C = 1, 5x5 and 5x20 kernels, stride 2, 3 and 4,
dilation (with and without unit column dilation, which decides how channels_last panels are
read), padding larger than half the kernel, tails of K (not a multiple of 16 or 6), of the
pixels and of the reduction blocks (384 steps; 192 on the 6 x 64 tile, and each AVX-512 tile runs
every case), several runs of pixel panels per thread
(channels_last work items), channels_last blocks that are part padding (read
from a copy; the others in place), batch 1 and more, with and without bias;
that the path ran (a per-process counter) under FASTCONV_CPU_IM2COL=1 and not under =0, where
the direct kernel gives the same values within the same bound; NCHW layers routed through the
channels_last form (FASTCONV_CPU_IM2COL_NHWC) give that form's bits; non-contiguous inputs and
weights; bit-identical results at 1, 2 and 3 threads.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import (FORMAT_IDS, FORMATS, assert_within_rounding, described_case_ids,  # noqa: F401
                          gemm_tile, pair, reference, results_at_thread_counts)

ops = torch.ops.fastconv

pytestmark = [pytest.mark.usefixtures("gemm_tile"),
              pytest.mark.skipif(ops._conv2d_cpu_fast_info()[0] == "generic",
                                 reason="no AVX2: the implicit GEMM needs the SIMD kernels")]

# (n, c, h, w, k, (r, s), stride, padding, dilation, what it reaches)
CASES = [
    (1, 3, 23, 21, 16, (7, 7), 2, 3, 1, "C=3 7x7 stride 2 stem"),
    (1, 1, 20, 45, 10, (5, 20), 2, 0, 1, "C=1 5x20 stride 2 (DeepSpeech)"),
    (2, 7, 13, 30, 9, (5, 10), 2, (1, 3), 1, "5x10 stride 2, padded"),
    (1, 32, 11, 11, 20, (5, 5), 1, 2, 1, "5x5 pad 2: 800 steps in 3 blocks"),
    (2, 20, 9, 9, 19, (3, 3), 2, 1, 1, "3x3 stride 2"),
    (1, 5, 17, 19, 7, (3, 3), 4, 1, 1, "stride 4"),
    (2, 6, 10, 11, 13, (3, 3), (3, 1), 2, 2, "dilation 2, row stride 3"),
    (1, 4, 6, 7, 5, (3, 3), 1, 3, 1, "padding 3 > half the kernel"),
    (2, 3, 9, 8, 17, (2, 4), (2, 1), (1, 2), (1, 2), "column dilation 2: no row fold"),
    (1, 300, 5, 6, 33, (1, 3), 1, (0, 1), 1, "1x3 kernel, 900 steps in 3 blocks, C not a multiple of 8"),
    (3, 16, 7, 7, 40, (3, 3), 1, 1, 1, "7x7 images, batch 3: 147 pixels"),
    (1, 2, 5, 5, 3, (5, 5), 1, 0, 1, "one output pixel"),
    (2, 64, 8, 8, 96, (3, 5), 1, (1, 2), 1, "3x5 kernel, 64 -> 96 channels"),
    (2, 200, 7, 9, 24, (3, 3), 2, 1, 1, "C=200 stride 2: blocks of 300 steps, part padding at both edges"),
    (2, 24, 30, 30, 40, (3, 3), 2, 1, 1, "450 pixels: 75 panels in runs of 12-16 per thread count"),
]
IDS = described_case_ids(CASES)


def _inputs(case, fmt, seed=0):
    n, c, h, w, k, (r, s), stride, padding, dilation, _ = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=fmt)
    weight = torch.randn(k, c, r, s, generator=gen)
    bias = torch.randn(k, generator=gen)
    return x, weight, bias, (pair(stride), pair(padding), pair(dilation))


def _conv(x, weight, bias, args):
    stride, padding, dilation = args
    return ops.conv2d(x, weight, bias, list(stride), list(padding), list(dilation), 1)


def _check(x, weight, bias, args, fmt, want_im2col=True):
    before = ops._conv2d_cpu_im2col_info()
    out = _conv(x, weight, bias, args)
    ran = ops._conv2d_cpu_im2col_info() - before
    assert ran == (1 if want_im2col else 0), "the implicit GEMM ran" if ran else "it did not run"
    # the output's format is PyTorch's (a one-channel channels_last input gives an NCHW result)
    assert out.is_contiguous(memory_format=fmt) == F.conv2d(x, weight, bias, *args).is_contiguous(memory_format=fmt)
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *args), x, weight, bias)
    terms = weight[0].numel() + (bias is not None)
    assert_within_rounding(out, exact, mag, terms, "forward")
    return out


@pytest.fixture
def im2col_on(monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_IM2COL", "1")
    # NCHW cases test the NCHW form; test_nchw_via_nhwc the route through the channels_last one
    monkeypatch.setenv("FASTCONV_CPU_IM2COL_NHWC", "0")


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2col_matches_torch(case, fmt, im2col_on):
    x, weight, bias, args = _inputs(case, fmt)
    _check(x, weight, bias, args, fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[10]], ids=[IDS[0], IDS[3], IDS[10]])
def test_without_bias(case, fmt, im2col_on):
    x, weight, _, args = _inputs(case, fmt, seed=1)
    _check(x, weight, None, args, fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_empty_batch(fmt, im2col_on):
    x, weight, bias, args = _inputs(CASES[4], fmt)
    out = _conv(x[:0], weight, bias, args)
    assert out.shape == (0, 19, 5, 5)


def test_noncontiguous_input_and_weight(im2col_on):
    # Neither NCHW nor channels_last (every other column of a wider tensor), and a weight read
    # through its strides: the same bits as the contiguous tensors.
    x_wide = torch.randn(2, 6, 11, 24)
    x = x_wide[..., ::2]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    weight = torch.randn(3, 3, 6, 13).permute(3, 2, 0, 1)  # (13, 6, 3, 3), unit stride along k
    assert not weight.is_contiguous()
    bias = torch.randn(13)
    args = ((2, 1), (1, 1), (1, 1))
    got = _conv(x, weight, bias, args)
    want = _check(x.contiguous(), weight.contiguous(), bias, args, torch.contiguous_format)
    assert torch.equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[10]],
                         ids=[IDS[0], IDS[1], IDS[3], IDS[10]])
def test_off_switch_gives_the_direct_kernel(case, fmt, monkeypatch):
    # FASTCONV_CPU_IM2COL=0: the direct kernel runs instead, within the same rounding bound,
    # and both agree to that bound (they sum in different orders, so not bit for bit).
    x, weight, bias, args = _inputs(case, fmt, seed=2)
    monkeypatch.setenv("FASTCONV_CPU_IM2COL", "0")
    off = _check(x, weight, bias, args, fmt, want_im2col=False)
    monkeypatch.setenv("FASTCONV_CPU_IM2COL", "1")
    on = _check(x, weight, bias, args, fmt)
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *args), x, weight, bias)
    terms = weight[0].numel() + 1
    assert_within_rounding(on, off.double(), mag, 2 * terms, "on vs off")


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[10], CASES[12], CASES[13], CASES[14]],
                         ids=[IDS[0], IDS[3], IDS[10], IDS[12], IDS[13], IDS[14]])
def test_results_do_not_depend_on_thread_count(case, fmt, im2col_on):
    # The work tiles change with the thread count; the summation order must not.
    x, weight, bias, args = _inputs(case, fmt, seed=3)
    results = results_at_thread_counts(lambda: _conv(x, weight, bias, args))
    for other in results[1:]:
        assert torch.equal(results[0], other)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_nchw_via_nhwc(case, im2col_on, monkeypatch):
    # FASTCONV_CPU_IM2COL_NHWC=1: an NCHW layer runs the channels_last form on transposed
    # copies of its input and result: within the rounding bound, NCHW out, and the same bits as
    # the channels_last input gives (the same kernel calls; the transposes only move values).
    monkeypatch.setenv("FASTCONV_CPU_IM2COL_NHWC", "1")
    x, weight, bias, args = _inputs(case, torch.contiguous_format, seed=4)
    before = ops._conv2d_cpu_im2col_nhwc_info()
    got = _check(x, weight, bias, args, torch.contiguous_format)
    assert ops._conv2d_cpu_im2col_nhwc_info() == before + 1, "the route through NHWC did not run"
    assert got.is_contiguous()
    want = _conv(x.contiguous(memory_format=torch.channels_last), weight, bias, args)
    assert torch.equal(got, want)
    if case is CASES[14]:  # the route at several thread counts: the same bits
        for other in results_at_thread_counts(lambda: _conv(x, weight, bias, args)):
            assert torch.equal(other, got)


def test_nchw_via_nhwc_off_switch(monkeypatch, im2col_on):
    # FASTCONV_CPU_IM2COL_NHWC=0: the NCHW form (the route's counter stays)
    x, weight, bias, args = _inputs(CASES[13], torch.contiguous_format, seed=5)
    before = ops._conv2d_cpu_im2col_nhwc_info()
    _check(x, weight, bias, args, torch.contiguous_format)
    assert ops._conv2d_cpu_im2col_nhwc_info() == before


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_default_choice(fmt, monkeypatch):
    # Unset, the switch sends channels_last strided layers with >= 64 channels in and out here
    # (measured faster, csrc/cpu/conv2d_fast_im2col.cpp: forward_applies), and 5x5 ones at
    # stride 1 where the 6 x 64 tile runs, and the others to the direct kernel.
    monkeypatch.delenv("FASTCONV_CPU_IM2COL", raising=False)
    monkeypatch.delenv("FASTCONV_CPU_IM2COL_NHWC", raising=False)
    strided = (1, 64, 9, 9, 64, (3, 3), 2, 1, 1, "")
    x, weight, bias, args = _inputs(strided, fmt)
    _check(x, weight, bias, args, fmt, want_im2col=fmt == torch.channels_last)
    # NCHW too with more than one image and fewer than 256 output pixels (via NHWC copies);
    # 17 x 17 = 289 output pixels are too many (odd sizes: not Winograd either)
    x, weight, bias, args = _inputs((2, 64, 9, 9, 64, (3, 3), 2, 1, 1, ""), fmt)
    _check(x, weight, bias, args, fmt, want_im2col=True)
    x, weight, bias, args = _inputs((2, 64, 33, 33, 64, (3, 3), 2, 1, 1, ""), fmt)
    _check(x, weight, bias, args, fmt, want_im2col=fmt == torch.channels_last)
    # 5x5 stride 1 with >= 64 channels in and out: only on the 6 x 64 AVX-512 tile
    wide = ops._conv2d_cpu_fast_info()[0] == "avx512" and os.environ.get("FASTCONV_CPU_KERNELS") != "avx2" \
        and os.environ.get("FASTCONV_CPU_GEMM_NR") != "32"
    x, weight, bias, args = _inputs((1, 64, 9, 9, 64, (5, 5), 1, 2, 1, ""), fmt)
    _check(x, weight, bias, args, fmt, want_im2col=fmt == torch.channels_last and wide)
    for case in (CASES[0], CASES[3]):  # C = 3; stride 1
        x, weight, bias, args = _inputs(case, fmt)
        _check(x, weight, bias, args, fmt, want_im2col=False)

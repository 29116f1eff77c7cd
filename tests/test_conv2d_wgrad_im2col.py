"""The weight gradient as an explicit-im2col GEMM (csrc/cpu/conv2d_fast_wgrad_im2col.cpp): NCHW
and channels_last against PyTorch in fp64 within the rounding bound, under FASTCONV_CPU_WGRAD_IM2COL=1
over a 3x3 layer with few pixels (res5b shrunk), a C = 3 7x7 stride-2 stem, DCGAN's 4x4 stride 2,
dilation, non-square kernels and strides, stride larger than the kernel, tails of K and of the
columns, reductions of several K blocks and of reduction slices, images taken in chunks (each
chunk's GEMM adding to dW, also through reduction slices; FASTCONV_CPU_WGRAD_IM2COL_FLOATS caps
the chunk), each on both AVX-512
tiles; that the path ran (a per-process counter) and not under =0; which layers take it by
default; bit-identical results at 1, 2 and 3 threads.
"""
import os

import pytest
import torch

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import (FORMAT_IDS, FORMATS, assert_within_rounding, described_case_ids,  # noqa: F401
                          gemm_tile, pair, reference, results_at_thread_counts, weight_grad_format)

ops = torch.ops.fastconv

pytestmark = [pytest.mark.usefixtures("gemm_tile"),
              pytest.mark.skipif(ops._conv2d_cpu_fast_info()[0] == "generic",
                                 reason="no AVX2: the GEMM needs the SIMD kernels")]

# (n, c, h, w, k, (r, s), stride, padding, dilation, what it reaches)
CASES = [
    (1, 128, 7, 7, 64, (3, 3), 1, 1, 1, "res5b shrunk: 49 pixels, 1152 columns"),
    (2, 3, 19, 17, 16, (7, 7), 2, 3, 1, "C=3 7x7 stride 2 stem: 147 columns"),
    (2, 64, 8, 8, 40, (4, 4), 2, 1, 1, "DCGAN 4x4 stride 2 (a transposed layer's weight gradient)"),
    (2, 6, 10, 11, 13, (3, 3), (3, 1), 2, 2, "dilation 2, row stride 3"),
    (2, 5, 9, 8, 7, (2, 4), (2, 1), (1, 2), (1, 2), "non-square kernel, stride and dilation"),
    (2, 4, 11, 10, 5, (2, 2), 4, 0, 1, "stride 4 > kernel: skipped pixels"),
    (3, 20, 9, 9, 7, (3, 3), 1, 1, 1, "243 steps: two K blocks, tails of K and the columns"),
    (1, 4, 6, 7, 5, (3, 3), 1, 3, 1, "padding 3 > half the kernel"),
    (16, 8, 12, 12, 16, (3, 3), 1, 1, 1, "2304 steps, a small dW: reduction slices"),
]
IDS = described_case_ids(CASES)


def _inputs(case, fmt, seed=0):
    n, c, h, w, k, (r, s), stride, padding, dilation, _ = case
    args = (pair(stride), pair(padding), pair(dilation))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=fmt)
    weight = torch.randn(k, c, r, s, generator=gen)
    out = torch.nn.functional.conv2d(x, weight, None, *args)
    grad_out = torch.randn(out.shape, generator=gen).contiguous(memory_format=fmt)
    return x, weight, grad_out, args


def _wgrad(x, weight, grad_out, args):
    stride, padding, dilation = args
    return ops._conv2d_weight_grad(grad_out, x, list(weight.shape), list(stride), list(padding),
                                   list(dilation), 1)


def _check(x, weight, grad_out, args, want_im2col=True):
    before = ops._conv2d_cpu_wgrad_im2col_info()
    got = _wgrad(x, weight, grad_out, args)
    ran = ops._conv2d_cpu_wgrad_im2col_info() - before
    assert ran == (1 if want_im2col else 0), "the im2col GEMM ran" if ran else "it did not run"
    exact, mag = reference(
        lambda x_, g_: torch.nn.grad.conv2d_weight(x_, weight.shape, g_, *args), x, grad_out)
    terms = grad_out.shape[0] * grad_out.shape[2] * grad_out.shape[3]  # products per weight
    assert_within_rounding(got, exact, mag, terms, "weight gradient")
    # channels_last activations: the columns in (r, s, c) order write a channels_last dW
    assert got.is_contiguous(memory_format=weight_grad_format(x, grad_out))
    return got


@pytest.fixture
def im2col_on(monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WGRAD_IM2COL", "1")


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case, fmt, im2col_on):
    _check(*_inputs(case, fmt))


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[6]], ids=[IDS[0], IDS[1], IDS[6]])
def test_images_in_chunks(case, fmt, im2col_on, monkeypatch):
    # A cap of one or two images' columns: the later chunks add to dW (Problem::accumulate).
    x, weight, grad_out, args = _inputs(case, fmt, seed=1)
    x, grad_out = torch.cat([x] * 3), torch.cat([grad_out] * 3)  # 3-9 images
    x, grad_out = x.contiguous(memory_format=fmt), grad_out.contiguous(memory_format=fmt)
    per_image = weight[0].numel() * grad_out.shape[2] * grad_out.shape[3]
    whole = _check(x, weight, grad_out, args)
    for images in (1, 2):
        monkeypatch.setenv("FASTCONV_CPU_WGRAD_IM2COL_FLOATS", str(images * per_image))
        chunked = _check(x, weight, grad_out, args)
        if images == 1:  # one image's steps per block: other block ends than unchunked
            assert not torch.equal(chunked, whole)  # (so the chunks did run)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_chunks_summed_in_reduction_slices(fmt, im2col_on, monkeypatch):
    # 64 images of 144 pixels in chunks of 32 (4608 steps each: 18 or 36 K blocks, so 2 or 4
    # reduction slices per chunk on every tile), the second chunk's slices adding to the first
    # chunk's dW.
    x, weight, grad_out, args = _inputs(CASES[8], fmt, seed=4)
    x, grad_out = torch.cat([x, -x, 0.5 * x, x.flip(3)]), torch.cat([grad_out, grad_out.flip(2)] * 2)
    x, grad_out = x.contiguous(memory_format=fmt), grad_out.contiguous(memory_format=fmt)
    monkeypatch.setenv("FASTCONV_CPU_WGRAD_IM2COL_FLOATS", str(32 * weight[0].numel() * 144))
    _check(x, weight, grad_out, args)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_off_switch(fmt, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_WGRAD_IM2COL", "0")
    _check(*_inputs(CASES[0], fmt), want_im2col=False)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_default_choice(fmt, monkeypatch):
    # Unset: images of <= 64 output pixels with >= 1024 weights per output channel (measured
    # faster there, csrc/cpu/conv2d_fast_wgrad_im2col.cpp: weight_grad_applies); where the
    # Winograd weight gradient runs (3x3 stride 1: on AVX-512 at any size, on AVX2 from 32 tiles
    # of 2x2), only with fewer than 48 tiles and more than 256 x 256 channels. Not a stem (147
    # weights per channel) nor a 3x3 layer on 10x10 images.
    monkeypatch.delenv("FASTCONV_CPU_WGRAD_IM2COL", raising=False)
    monkeypatch.delenv("FASTCONV_CPU_WINOGRAD", raising=False)
    winograd_anywhere = ops._conv2d_cpu_fast_info()[0] == "avx512" and os.environ.get("FASTCONV_CPU_KERNELS") != "avx2"
    _check(*_inputs(CASES[2], fmt))  # 4x4 stride 2
    _check(*_inputs((1, 512, 3, 3, 160, (3, 3), 1, 1, 1, ""), fmt))  # 4 tiles, 512 x 160 channels
    _check(*_inputs(CASES[0], fmt), want_im2col=not winograd_anywhere)  # 16 tiles, 128 x 64
    _check(*_inputs((4, 512, 3, 3, 160, (3, 3), 1, 1, 1, ""), fmt))  # 16 tiles on AVX2 too
    _check(*_inputs((12, 512, 3, 3, 160, (3, 3), 1, 1, 1, ""), fmt), want_im2col=False)  # 48 tiles
    _check(*_inputs(CASES[1], fmt), want_im2col=False)
    _check(*_inputs((1, 128, 10, 10, 16, (3, 3), 2, 1, 1, ""), fmt), want_im2col=True)  # 25 pixels
    _check(*_inputs((1, 128, 10, 10, 16, (3, 3), 1, 1, 1, ""), fmt), want_im2col=False)  # 100 pixels


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[8]], ids=[IDS[0], IDS[6], IDS[8]])
def test_results_do_not_depend_on_thread_count(case, fmt, im2col_on):
    x, weight, grad_out, args = _inputs(case, fmt, seed=3)
    results = results_at_thread_counts(lambda: _wgrad(x, weight, grad_out, args))
    for other in results[1:]:
        assert torch.equal(results[0], other)

"""The dot-product forward convolution of the fast fp32 CPU kernels (csrc/cpu/conv2d_fast_dot.cpp),
on the running CPU's tiles and, on an AVX-512 machine, on the AVX2 ones too (4 pixels x 6
channels and 3 pixels x 4 channels): channels_last activations and weight against PyTorch in
fp64 within the rounding bound, over tails of the output channels (1-5 past a multiple of 6,
1-3 past a multiple of 4) and of the pixels, 1x1 (ahead of the 1x1 GEMM), 3x3 and non-square
kernels, stride, row and column dilation, padding larger than half the kernel, weight rows
further apart than R S C, batches, with and without bias; that the path ran (a per-process
counter) under FASTCONV_CPU_DOT=1, by default only where it is meant to (at most 128 pixels, at
least 1024 weights per output channel), never for cases it has no kernel for (a weight whose
(r, s, c) are not one run, channels not a multiple of the vector width, groups), and not
under =0, where another kernel gives the same values within the same bound; bit-identical
results at 1, 2 and 3 threads; NCHW 1x1 layers giving the channels_last result's bits.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import (assert_within_rounding, described_case_ids, pair, reference, results_at_thread_counts,
                          run_counting, simd_kernels)  # noqa: F401  (simd_kernels: a fixture)

ops = torch.ops.fastconv
CL = torch.channels_last

# every test runs on each ISA's tiles, with Winograd off (simd_kernels)
pytestmark = pytest.mark.usefixtures("simd_kernels")

# (n, c, h, w, k, (r, s), stride, padding, dilation, what it reaches)
CASES = [
    (1, 64, 7, 7, 20, (3, 3), 1, 1, 1, "7x7 image: 49 pixels (4-pixel tiles + 1), 20 channels (6-channel tiles + 2)"),
    (2, 32, 6, 5, 13, (3, 3), 2, 1, 1, "stride 2, batch 2: tiles across images; 13 channels (4-channel tiles + 1)"),
    (1, 16, 9, 8, 7, (2, 3), (1, 2), (2, 1), (2, 1), "non-square kernel, stride, row dilation 2"),
    (1, 48, 5, 5, 6, (3, 3), 1, 3, 1, "padding 3 > half the kernel"),
    (3, 16, 4, 4, 9, (1, 1), 1, 1, 1, "1x1 kernel, padded"),
    (2, 32, 5, 5, 8, (1, 1), 2, 0, 1, "1x1 stride 2 (ahead of the 1x1 GEMM)"),
    (1, 32, 3, 3, 1, (3, 3), 1, 0, 1, "one output pixel, one output channel"),
    (1, 16, 8, 9, 10, (3, 3), 1, (1, 2), (1, 2), "column dilation 2; channel tails of 4 and 2"),
    (2, 32, 6, 6, 11, (2, 2), 1, 0, (2, 3), "dilation (2, 3); channel tails of 5 and 3"),
]
IDS = described_case_ids(CASES)


def _inputs(case, seed=0):
    n, c, h, w, k, (r, s), stride, padding, dilation, _ = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=CL)
    weight = torch.randn(k, c, r, s, generator=gen).contiguous(memory_format=CL)
    bias = torch.randn(k, generator=gen)
    return x, weight, bias, (pair(stride), pair(padding), pair(dilation))


def _conv(x, weight, bias, args, groups=1):
    stride, padding, dilation = args
    return ops.conv2d(x, weight, bias, list(stride), list(padding), list(dilation), groups)


def _ran(fn):
    return run_counting(ops._conv2d_cpu_dot_info, fn)


def _check(x, weight, bias, args, want_dot=True):
    out, ran = _ran(lambda: _conv(x, weight, bias, args))
    assert ran == (1 if want_dot else 0), "the dot-product kernel ran" if ran else "it did not run"
    assert out.is_contiguous(memory_format=CL)
    exact, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *args), x, weight, bias)
    assert_within_rounding(out, exact, mag, weight[0].numel() + (bias is not None), "forward")
    return out


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dot_matches_torch(case, with_bias, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    x, weight, bias, args = _inputs(case)
    _check(x, weight, bias if with_bias else None, args)


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=[IDS[0], IDS[1]])
def test_off_switch_gives_another_kernel(case, monkeypatch):
    # FASTCONV_CPU_DOT=0: another kernel runs, within the same bound; the two agree to twice it
    # (they sum in different orders, so not bit for bit)
    x, weight, bias, args = _inputs(case, seed=1)
    monkeypatch.setenv("FASTCONV_CPU_DOT", "0")
    off = _check(x, weight, bias, args, want_dot=False)
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    on = _check(x, weight, bias, args)
    _, mag = reference(lambda x_, w_, b_: F.conv2d(x_, w_, b_, *args), x, weight, bias)
    assert_within_rounding(on, off.double(), mag, 2 * (weight[0].numel() + 1), "on vs off")


def test_default_choice(monkeypatch):
    # taken by default for few pixels (<= 128) and many weights per output channel (>= 1024),
    # as ResNet-50's res5b_branch2b at batch 1; not with more pixels or fewer weights
    monkeypatch.delenv("FASTCONV_CPU_DOT", raising=False)
    few = (1, 128, 7, 7, 16, (3, 3), 1, 1, 1, "")             # 49 pixels, 1152 weights per channel
    at_most = (2, 128, 8, 8, 16, (3, 3), 1, 1, 1, "")          # 128 pixels
    many_pixels = (2, 128, 8, 9, 16, (3, 3), 1, 1, 1, "")      # 144 pixels
    few_weights = (1, 96, 7, 7, 16, (3, 3), 1, 1, 1, "")       # 864 weights per channel
    _check(*_inputs(few), want_dot=True)
    _check(*_inputs(at_most), want_dot=True)
    _check(*_inputs(many_pixels), want_dot=False)
    _check(*_inputs(few_weights), want_dot=False)
    _check(*_inputs((1, 1024, 3, 3, 8, (1, 1), 1, 0, 1, "")), want_dot=True)  # 1x1: before the GEMM


def test_cases_without_a_kernel_go_elsewhere(monkeypatch):
    # forced on, still not taken where the kernel cannot read the operands as they are
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    x, weight, bias, args = _inputs(CASES[0])
    _check(x, weight.contiguous(), bias, args, want_dot=False)  # NCHW weight
    out, ran = _ran(lambda: _conv(x.contiguous(), weight.contiguous(), bias, args))  # all NCHW
    assert ran == 0 and out.is_contiguous()
    x20, w20, b20, args20 = _inputs((1, 20, 7, 7, 8, (3, 3), 1, 1, 1, ""))
    _check(x20, w20, b20, args20, want_dot=False)  # 20 channels: not a multiple of 8 or 16
    wide = torch.randn(20, 80, 3, 3).contiguous(memory_format=CL)[:, :64]  # channels 80 apart
    assert wide.stride(1) == 1 and wide.stride(3) == 80
    _check(x, wide, bias, args, want_dot=False)
    grouped = weight[:, :32].contiguous(memory_format=CL)
    out, ran = _ran(lambda: _conv(x, grouped, bias, args, groups=2))
    assert ran == 0
    torch.testing.assert_close(out, F.conv2d(x, grouped, bias, *args, groups=2), rtol=1e-4, atol=1e-4)


def test_nchw_1x1_gives_the_channels_last_bits(monkeypatch):
    # NCHW activations with a 1x1 weight (one run per output channel as it is): the input staged
    # as NHWC, the same sums stored a plane per channel
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    for case in (CASES[4], CASES[5]):  # padded 1x1, and 1x1 stride 2
        x, weight, bias, args = _inputs(case, seed=3)
        weight = weight.contiguous()
        nchw, ran = _ran(lambda: _conv(x.contiguous(), weight, bias, args))
        assert ran == 1 and nchw.is_contiguous()
        cl = _check(x, weight, bias, args)
        assert torch.equal(nchw, cl)


def test_weight_rows_further_apart(monkeypatch):
    # every other output channel of a channels_last weight: its rows 2 R S C floats apart,
    # read in place
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    x, weight, bias, args = _inputs(CASES[0])
    sparse = torch.randn(40, 64, 3, 3).contiguous(memory_format=CL)[::2]
    assert sparse.stride(0) == 2 * 64 * 9 and sparse.stride(1) == 1
    _check(x, sparse, bias, args)


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=[IDS[0], IDS[1]])
def test_results_do_not_depend_on_thread_count(case, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    x, weight, bias, args = _inputs(case, seed=2)
    one, two, three = results_at_thread_counts(lambda: _conv(x, weight, bias, args))
    assert torch.equal(one, two) and torch.equal(one, three)


def test_channel_steps_of_the_vector_width(simd_kernels, monkeypatch):
    # 24 channels: three steps of the AVX2 tiles' 8, not whole steps of the AVX-512 ones' 16
    monkeypatch.setenv("FASTCONV_CPU_DOT", "1")
    _check(*_inputs((1, 24, 7, 7, 9, (3, 3), 1, 1, 1, "")), want_dot=simd_kernels == "avx2")

"""The input gradient that reads a channels_last weight in place (csrc/cpu/conv2d_fast_dgrad_inplace.cpp):
against PyTorch in fp64 within the rounding bound, on the running CPU's kernels and on the AVX2
ones (their register blocks differ: 32 or 16 channels), over reductions in one and in several
chunks of output channels (the later chunks adding to the partial sums in the result), 3x3,
non-square and 1 x S kernels, padding from 0 to R - 1, batches, weight rows further apart than
R S C, rows of one tile (read the weight in place at every step) and of several (the first
tile's copy of the weights read by the others, a one-pixel tile after it); that the path ran
(a per-process counter) under FASTCONV_CPU_DGRAD_INPLACE=1, by default only where it is meant
to (at most 128 input pixels, at least 1024 weights per input channel),
never for cases it has no kernel for (stride, dilation, padding >= the kernel, channels not a
multiple of the block, an NCHW weight), and not under =0, where the direct kernel gives the
same values within the same bound; bit-identical results at 1, 2 and 3 threads.
"""
import pytest
import torch

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import (assert_within_rounding, described_case_ids, pair, reference, results_at_thread_counts,
                          run_counting, simd_kernels)  # noqa: F401  (simd_kernels: a fixture)

ops = torch.ops.fastconv
CL = torch.channels_last

# (n, c, h, w, k, (r, s), padding, what it reaches)
CASES = [
    (1, 64, 7, 7, 20, (3, 3), 1, "7x7 image, 49 pixels: one chunk of 20 output channels"),
    (1, 512, 4, 4, 130, (3, 3), 1, "512 channels: chunks of 56 + 56 + 18 output channels"),
    (2, 32, 5, 6, 40, (2, 3), (1, 2), "non-square kernel, batch 2: tiles across images"),
    (1, 64, 6, 5, 24, (1, 3), (0, 1), "1 x 3 kernel"),
    (1, 32, 6, 6, 9, (3, 3), 0, "no padding"),
    (1, 32, 2, 3, 20, (3, 3), 1, "6 pixels: one tile, every step reading the weight itself"),
]
IDS = described_case_ids(CASES)


def _inputs(case, seed=0):
    n, c, h, w, k, (r, s), padding, _ = case
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, c, r, s, generator=gen).contiguous(memory_format=CL)
    padding = pair(padding)
    p, q = h + 2 * padding[0] - r + 1, w + 2 * padding[1] - s + 1
    grad_out = torch.randn(n, k, p, q, generator=gen).contiguous(memory_format=CL)
    return grad_out, weight, (n, c, h, w), padding


def _input_grad(grad_out, weight, size, padding, stride=(1, 1), dilation=(1, 1)):
    return ops._conv2d_input_grad(grad_out, weight, list(size), list(stride), list(padding), list(dilation), 1)


def _ran(fn):
    return run_counting(ops._conv2d_cpu_dgrad_inplace_info, fn)


def _check(grad_out, weight, size, padding, want=True):
    got, ran = _ran(lambda: _input_grad(grad_out, weight, size, padding))
    assert ran == (1 if want else 0), "the in-place-weight path ran" if ran else "it did not run"
    assert got.is_contiguous(memory_format=CL)
    exact, mag = reference(lambda g_, w_: torch.nn.grad.conv2d_input(size, w_, g_, 1, padding), grad_out, weight)
    terms = weight.shape[0] * weight.shape[2] * weight.shape[3]
    assert_within_rounding(got, exact, mag, terms, "input gradient")
    return got


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case, simd_kernels, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_DGRAD_INPLACE", "1")
    _check(*_inputs(case))


def test_weight_rows_further_apart(simd_kernels, monkeypatch):
    # every other output channel of a channels_last weight: rows 2 R S C floats apart, read in place
    monkeypatch.setenv("FASTCONV_CPU_DGRAD_INPLACE", "1")
    grad_out, _, size, padding = _inputs(CASES[0])
    sparse = torch.randn(40, 64, 3, 3).contiguous(memory_format=CL)[::2]
    assert sparse.stride(0) == 2 * 64 * 9 and sparse.stride(1) == 1
    _check(grad_out, sparse, size, padding)


def test_off_switch_gives_the_direct_kernel(simd_kernels, monkeypatch):
    # the two sum in different orders: each within the bound, and within twice it of each other
    grad_out, weight, size, padding = _inputs(CASES[1], seed=1)
    monkeypatch.setenv("FASTCONV_CPU_DGRAD_INPLACE", "0")
    off = _check(grad_out, weight, size, padding, want=False)
    monkeypatch.setenv("FASTCONV_CPU_DGRAD_INPLACE", "1")
    on = _check(grad_out, weight, size, padding)
    _, mag = reference(lambda g_, w_: torch.nn.grad.conv2d_input(size, w_, g_, 1, padding), grad_out, weight)
    assert_within_rounding(on, off.double(), mag, 2 * weight.shape[0] * 9, "on vs off")


def test_default_choice(simd_kernels, monkeypatch):
    monkeypatch.delenv("FASTCONV_CPU_DGRAD_INPLACE", raising=False)
    _check(*_inputs((1, 64, 7, 7, 128, (3, 3), 1, "")), want=True)    # 49 pixels, 1152 weights per channel
    _check(*_inputs((2, 64, 8, 8, 128, (3, 3), 1, "")), want=True)    # 128 pixels
    _check(*_inputs((2, 64, 8, 9, 128, (3, 3), 1, "")), want=False)   # 144 pixels
    _check(*_inputs((1, 64, 7, 7, 96, (3, 3), 1, "")), want=False)    # 864 weights per channel


def test_cases_without_a_kernel_go_elsewhere(simd_kernels, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_DGRAD_INPLACE", "1")
    grad_out, weight, size, padding = _inputs(CASES[0])
    _check(grad_out, weight.contiguous(), size, padding, want=False)      # NCHW weight
    _check(*_inputs((1, 40, 7, 7, 20, (3, 3), 1, "")), want=False)        # 40 channels: not whole blocks
    _check(*_inputs((1, 64, 5, 5, 20, (3, 3), 3, "")), want=False)        # padding 3 >= the kernel
    for stride, dilation, size2 in (((2, 2), (1, 1), (1, 64, 13, 13)), ((1, 1), (2, 2), (1, 64, 9, 9))):
        got, ran = _ran(lambda: _input_grad(grad_out, weight, size2, padding, stride, dilation))
        want = torch.nn.grad.conv2d_input(size2, weight, grad_out, stride, padding, dilation)
        assert ran == 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_thread_count(simd_kernels, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_DGRAD_INPLACE", "1")
    grad_out, weight, size, padding = _inputs(CASES[1], seed=2)
    one, two, three = results_at_thread_counts(lambda: _input_grad(grad_out, weight, size, padding))
    assert torch.equal(one, two) and torch.equal(one, three)

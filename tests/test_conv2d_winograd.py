"""The Winograd CPU convolution (csrc/cpu/conv2d_fast_winograd.cpp): forward pass and input
gradient of 3x3 stride-1 layers, F(2x2,3x3) and F(4x4,3x3) (forced with FASTCONV_CPU_WINOGRAD
so small shapes reach both), against PyTorch in fp64 over shapes that hit every tail (output
sizes not a multiple of the tile, channel counts not a multiple of the SIMD width or of the
register block, batch 0/1/3, padding 0..3 (the input gradient then pads with 2 - pad, down to
-1), NCHW and channels_last, non-contiguous inputs); that the Winograd path ran (a per-process
counter) and is off with FASTCONV_CPU_WINOGRAD=0; bit-identical results at any thread count;
and the accuracy of each variant next to the direct kernel's. The weight gradient's shape table
and thread-count test run on the AVX-512 kernels and, on an AVX-512 machine, the AVX2 ones.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)
from conv_helpers import assert_wgrad_within_tile_bound, assert_within_tile_bound
from conv_helpers import gemm_width  # noqa: F401  (fixture: native and, on AVX-512, AVX2 kernels)
from fastconv.nn import functional as FF

ops = torch.ops.fastconv

pytestmark = pytest.mark.skipif(ops._conv2d_cpu_fast_info()[0] == "generic",
                                reason="no AVX2: the Winograd kernels need the SIMD kernels")

# (n, c, h, w, k, padding, what it reaches)
CASES = [
    (1, 5, 9, 10, 7, 1, "odd C and K, sizes not a multiple of 2 or 4"),
    (3, 16, 7, 7, 16, 1, "batch 3, 7x7"),
    (2, 17, 11, 6, 33, 0, "padding 0, C tail, K past two register blocks"),
    (1, 9, 5, 13, 20, 2, "padding 2: input gradient without padding"),
    (1, 8, 6, 5, 8, 3, "padding 3: input gradient with padding -1"),
    (1, 3, 3, 3, 5, 0, "1x1 output"),
    (2, 40, 9, 8, 72, 1, "several channel blocks"),
    (2, 256, 5, 6, 260, 1, "256 channels in and out: weights-stationary loop order, K tail"),
    (0, 8, 6, 6, 16, 1, "empty batch"),
]
IDS = [c[-1].replace(" ", "_").replace(",", "").replace(":", "") for c in CASES]


@pytest.fixture
def winograd(monkeypatch):
    """Sets FASTCONV_CPU_WINOGRAD for the test (read by the kernels on every call)."""
    def set_mode(mode):
        monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", str(mode))
    return set_mode


def _calls():
    return ops._conv2d_cpu_winograd_info()


def _fp64_refs(x, weight, bias, grad_out, padding):
    out = F.conv2d(x.double(), weight.double(), bias.double(), 1, padding)
    grad_in = torch.nn.grad.conv2d_input(x.shape, weight.double(), grad_out.double(), 1, padding)
    # The magnitudes: the same sums over absolute values (every term's size).
    out_mag = F.conv2d(x.double().abs(), weight.double().abs(), bias.double().abs(), 1, padding)
    grad_in_mag = torch.nn.grad.conv2d_input(x.shape, weight.double().abs(), grad_out.double().abs(),
                                             1, padding)
    return (out, out_mag), (grad_in, grad_in_mag)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_winograd_matches_torch(case, channels_last, tile, winograd):
    winograd(tile)
    n, c, h, w, k, padding, _ = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
    weight, bias = torch.randn(k, c, 3, 3), torch.randn(k)
    p, q = h + 2 * padding - 2, w + 2 * padding - 2
    grad_out = torch.randn(n, k, p, q).contiguous(memory_format=fmt)
    before = _calls()
    out = ops.conv2d(x, weight, bias, (1, 1), (padding,) * 2, (1, 1), 1)
    grad_in = ops._conv2d_input_grad(grad_out, weight, list(x.shape), (1, 1), (padding,) * 2, (1, 1), 1)
    after = _calls()
    assert (after[0] - before[0], after[1] - before[1]) == ((1, 1) if n > 0 else (0, 0))
    (ref, ref_mag), (ref_gi, ref_gi_mag) = _fp64_refs(x, weight, bias, grad_out, padding)
    assert_within_tile_bound(out, ref, ref_mag, c * 9 + 1, "forward", tile)
    assert_within_tile_bound(grad_in, ref_gi, ref_gi_mag, k * 9, "input gradient", tile)
    if n > 0 and p * q > 1:  # (empty or 1x1 results: the memory format is ambiguous)
        assert out.is_contiguous(memory_format=fmt) and grad_in.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("weight_layout", ["permuted", "channels_last"])
@pytest.mark.parametrize("tile", [2, 4])
def test_non_contiguous_inputs_and_no_bias(tile, weight_layout, winograd):
    # The fast kernels take the weight with any strides (no copy on the direct path), so the
    # Winograd entry must handle a non-contiguous weight too, e.g. a channels_last one.
    winograd(tile)
    x = torch.randn(2, 12, 9, 22)[:, :, :, ::2]  # every other column
    weight = torch.randn(3, 3, 12, 10).permute(3, 2, 0, 1)  # (10, 12, 3, 3), not contiguous
    if weight_layout == "channels_last":
        weight = weight.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 10, 11, 9).transpose(2, 3)  # (2, 10, 9, 11), not contiguous
    before = _calls()
    out = ops.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    grad_in = ops._conv2d_input_grad(grad_out, weight, list(x.shape), (1, 1), (1, 1), (1, 1), 1)
    assert _calls()[0] == before[0] + 1 and _calls()[1] == before[1] + 1
    (ref, ref_mag), (ref_gi, ref_gi_mag) = _fp64_refs(x, weight, torch.zeros(10), grad_out, 1)
    assert_within_tile_bound(out, ref, ref_mag, 12 * 9, "forward", tile)
    assert_within_tile_bound(grad_in, ref_gi, ref_gi_mag, 10 * 9, "input gradient", tile)


@pytest.mark.parametrize("tile", [2, 4])
def test_weight_layout_gives_the_same_bits(tile, winograd):
    # channels_last weights are gathered by register transposes in the forward pass (input
    # channels contiguous) and read in place in the input gradient (there the transform's
    # output channels are contiguous), other layouts element by element: the same filter
    # values, so the same bits. C = 140: a run of 128 input channels and a tail of 12 (other
    # layouts: runs of 32), and in the input gradient a partial block of 12 output channels;
    # K = 20: a partial block of output channels.
    winograd(tile)
    x = torch.randn(2, 140, 9, 8).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(20, 140, 3, 3), torch.randn(20)
    grad_out = torch.randn(2, 20, 9, 8).contiguous(memory_format=torch.channels_last)
    results = []
    for w in (weight, weight.contiguous(memory_format=torch.channels_last)):
        before = _calls()
        out = ops.conv2d(x, w, bias, (1, 1), (1, 1), (1, 1), 1)
        grad_in = ops._conv2d_input_grad(grad_out, w, list(x.shape), (1, 1), (1, 1), (1, 1), 1)
        assert _calls()[0] == before[0] + 1 and _calls()[1] == before[1] + 1
        results.append((out, grad_in))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    (ref, ref_mag), _ = _fp64_refs(x, weight, bias, grad_out, 1)
    assert_within_tile_bound(results[1][0], ref, ref_mag, 140 * 9 + 1, "forward", tile)


@pytest.mark.parametrize("tile", [2, 4])
def test_autograd_through_the_public_function(tile, winograd):
    winograd(tile)
    x = torch.randn(2, 16, 10, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(24, 16, 3, 3, requires_grad=True)
    grad_out = torch.randn(2, 24, 10, 9)
    before = _calls()
    FF.conv2d(x, weight, None, padding=1).backward(grad_out)
    assert _calls()[0] == before[0] + 1 and _calls()[1] == before[1] + 1
    (_, _), (ref_gi, ref_gi_mag) = _fp64_refs(x, weight, torch.zeros(24), grad_out, 1)
    assert_within_tile_bound(x.grad, ref_gi, ref_gi_mag, 24 * 9, "input gradient", tile)
    ref_gw = torch.nn.grad.conv2d_weight(x.detach().double(), weight.shape, grad_out.double(), 1, 1)
    ref_gw_mag = torch.nn.grad.conv2d_weight(x.detach().double().abs(), weight.shape, grad_out.double().abs(), 1, 1)
    assert_within_tile_bound(weight.grad, ref_gw, ref_gw_mag, 2 * 10 * 9, "weight gradient")


def test_off_with_environment_variable(winograd):
    winograd(0)
    x, weight = torch.randn(1, 32, 12, 12), torch.randn(32, 32, 3, 3)
    before = _calls()
    out = ops.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    ops._conv2d_input_grad(out, weight, list(x.shape), (1, 1), (1, 1), (1, 1), 1)
    assert _calls() == before
    torch.testing.assert_close(out, F.conv2d(x, weight, None, 1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", ["2", "4", "auto"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_results_do_not_depend_on_thread_count(tile, channels_last, winograd):
    # Few tiles (so the work is split over output channels too, differently per thread count).
    winograd(tile)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(1, 64, 9, 9).contiguous(memory_format=fmt)
    weight, bias = torch.randn(96, 64, 3, 3), torch.randn(96)
    grad_out = torch.randn(1, 96, 9, 9).contiguous(memory_format=fmt)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            results.append((ops.conv2d(x, weight, bias, (1, 1), (1, 1), (1, 1), 1),
                            ops._conv2d_input_grad(grad_out, weight, [1, 64, 9, 9], (1, 1), (1, 1), (1, 1), 1)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_heuristic_picks_winograd_for_resnet_layers(monkeypatch):
    monkeypatch.delenv("FASTCONV_CPU_WINOGRAD", raising=False)
    before = _calls()
    x, weight = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)  # ResNet-50 res2a_branch2b
    out = ops.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    assert _calls()[0] == before[0] + 1
    (ref, ref_mag), _ = _fp64_refs(x, weight, torch.zeros(64), out, 1)
    assert_within_tile_bound(out, ref, ref_mag, 64 * 9, "forward", tile=4)
    # A first layer (3 input channels) stays on the direct kernel.
    ops.conv2d(torch.randn(1, 3, 16, 16), torch.randn(16, 3, 3, 3), None, (1, 1), (1, 1), (1, 1), 1)
    assert _calls()[0] == before[0] + 1
    # Many channels, few tiles: F(2x2) where its products and filter transform cost less than
    # the direct kernel (res4b_branch2b at batch 1: 49 tiles), not where they do not
    # (res5b_branch2b at batch 3: 48 tiles over 7 x 7 outputs, a quarter of them padding).
    same = ((1, 1), (1, 1), (1, 1), 1)
    ops.conv2d(torch.randn(1, 256, 14, 14), torch.randn(256, 256, 3, 3), None, *same)
    assert _calls()[0] == before[0] + 2
    ops.conv2d(torch.randn(3, 512, 7, 7), torch.randn(512, 512, 3, 3), None, *same)
    assert _calls()[0] == before[0] + 2


# Max |error| / (eps * rms(exact output)) on this problem (unit normals, C = K = 128, 3x3),
# measured: direct kernel 40, F(2x2,3x3) 17, F(4x4,3x3) 423 (PyTorch's oneDNN: 44). F(2x2) is as
# accurate as the direct sum (its transforms only add and halve; each GEMM sums C = 128
# products instead of 9 C); F(4x4)'s transforms scale by up to 8 and 1/24 and mix signs, ~10x
# the direct error (rms error ~4x), still within the worst-case bound of a direct fp32 sum
# (test_winograd_matches_torch). The bounds allow about 3x the measured values (the error of
# a random problem varies with the seed).
ACCURACY_BOUNDS = {"0": 120.0, "2": 60.0, "4": 1300.0}


@pytest.mark.parametrize("mode", ["0", "2", "4"], ids=["direct", "F2x2", "F4x4"])
def test_accuracy_against_fp64(mode, winograd):
    winograd(mode)
    torch.manual_seed(0)
    x, weight = torch.randn(2, 128, 12, 12), torch.randn(128, 128, 3, 3)
    before = _calls()
    out = ops.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    assert (_calls()[0] > before[0]) == (mode != "0")
    exact = F.conv2d(x.double(), weight.double(), None, 1, 1)
    scale = torch.finfo(torch.float32).eps * exact.pow(2).mean().sqrt().item()
    err = ((out.double() - exact).abs().max() / scale).item()
    assert err <= ACCURACY_BOUNDS[mode], f"max error {err:.1f} eps * rms(out)"


# ---- the weight gradient (csrc/cpu/conv2d_fast_winograd_wgrad.cpp) ---------------------------

def _wgrad_calls():
    return ops._conv2d_cpu_winograd_wgrad_info()


def _wgrad(grad_out, x, k, padding):
    return ops._conv2d_weight_grad(grad_out, x, [k, x.shape[1], 3, 3], (1, 1), (padding,) * 2, (1, 1), 1)


def _assert_wgrad_within_bound(got, x, grad_out, padding, tile, what):
    # A stride-1 tile of m outputs pairs input offsets -(m - 1) .. m + 1 with each grad_output
    # pixel; 32 extra roundings for F(4x4)'s coefficients (up to 8 in A, 5 in B^T; measured up
    # to 2 eps x magnitude for F(2x2) and 16 for F(4x4), fp32 and fp64 alike, even for a 1x1
    # grad_output). test_wgrad_accuracy_against_fp64 measures the typical errors.
    assert_wgrad_within_tile_bound(got, x, grad_out, padding, 1, (-(tile - 1), tile + 1), 32, what)


# (n, c, h, w, k, padding, what it reaches)
WGRAD_CASES = [
    (1, 5, 9, 10, 7, 1, "odd C and K, grad_output 9x10: partial tiles at right and bottom"),
    (2, 17, 11, 6, 33, 0, "padding 0, C tail, K past one channel group"),
    (3, 16, 7, 7, 16, 1, "batch 3, 7x7"),
    (1, 9, 5, 13, 20, 2, "padding 2"),
    (1, 8, 6, 5, 8, 3, "padding 3: taps that read only padding at the edges"),
    (1, 3, 3, 3, 5, 0, "1x1 grad_output"),
    (2, 40, 9, 8, 72, 1, "several channel blocks and groups"),
]
WGRAD_IDS = [c[-1].split(":")[0].replace(" ", "_").replace(",", "") for c in WGRAD_CASES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", WGRAD_CASES, ids=WGRAD_IDS)
def test_wgrad_matches_torch(case, channels_last, tile, dtype, winograd, gemm_width):
    winograd(tile)
    n, c, h, w, k, padding, _ = case
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=fmt)
    grad_out = torch.randn(n, k, h + 2 * padding - 2, w + 2 * padding - 2, dtype=dtype).contiguous(memory_format=fmt)
    before = _wgrad_calls()
    got = _wgrad(grad_out, x, k, padding)
    assert _wgrad_calls() == before + 1
    assert got.dtype == dtype
    _assert_wgrad_within_bound(got, x, grad_out, padding, tile, "weight gradient")


@pytest.mark.parametrize("tile", [2, 4])
def test_wgrad_non_contiguous_and_mixed_formats(tile, winograd):
    # Any strides: the op brings both operands into one format (channels_last if either is).
    winograd(tile)
    x = torch.randn(2, 12, 9, 22)[:, :, :, ::2]  # (2, 12, 9, 11), every other column
    grad_out = torch.randn(2, 10, 11, 9).transpose(2, 3)  # (2, 10, 9, 11), not contiguous
    before = _wgrad_calls()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got = _wgrad(grad_out, x, 10, 1)
    got_cl = _wgrad(grad_out, x_cl, 10, 1)
    assert _wgrad_calls() == before + 2
    _assert_wgrad_within_bound(got, x, grad_out, 1, tile, "non-contiguous")
    # (a channels_last weight gradient: the input is channels_last)
    _assert_wgrad_within_bound(got_cl, x_cl, grad_out, 1, tile, "channels_last input, NCHW grad_output")


def test_wgrad_gradcheck_fp64(winograd):
    # fp64 through autograd: the Winograd weight gradient (forced; the forward pass and input
    # gradient in fp64 run the generic kernels) against finite differences.
    winograd(2)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    before = _wgrad_calls()
    assert torch.autograd.gradcheck(lambda x, w: FF.conv2d(x, w, None, padding=1), (x, weight))
    assert _wgrad_calls() > before


def test_wgrad_off_with_environment_variable(winograd):
    winograd(0)
    x, grad_out = torch.randn(2, 32, 24, 24), torch.randn(2, 32, 24, 24)
    before = _wgrad_calls()
    got = _wgrad(grad_out, x, 32, 1)
    assert _wgrad_calls() == before
    _assert_wgrad_within_bound(got, x, grad_out, 1, 1, "direct kernel")


@pytest.mark.parametrize("tile", ["2", "4", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_wgrad_results_do_not_depend_on_thread_count(tile, dtype, winograd, gemm_width):
    # 2 x 32 x 32 outputs: 512 F(2x2) tiles (2 slices of partial sums); 72 output channels:
    # split into groups differently per thread count.
    winograd(tile)
    x = torch.randn(2, 40, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 72, 32, 32, dtype=dtype)
    threads = torch.get_num_threads()
    results = []
    before = _wgrad_calls()
    try:
        for t in (1, 2, 5):
            torch.set_num_threads(t)
            results.append(_wgrad(grad_out, x, 72, 1))
    finally:
        torch.set_num_threads(threads)
    assert _wgrad_calls() == before + 3
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_wgrad_heuristic(monkeypatch):
    monkeypatch.delenv("FASTCONV_CPU_WINOGRAD", raising=False)
    before = _wgrad_calls()
    x, grad_out = torch.randn(1, 64, 56, 56), torch.randn(1, 64, 56, 56)  # res2a_branch2b
    got = _wgrad(grad_out, x, 64, 1)
    assert _wgrad_calls() == before + 1
    _assert_wgrad_within_bound(got, x, grad_out, 1, 2, "res2a_branch2b")
    # A first layer (3 input channels) stays on the direct kernel.
    _wgrad(torch.randn(1, 16, 16, 16), torch.randn(1, 3, 16, 16), 16, 1)
    assert _wgrad_calls() == before + 1
    # Few tiles (4 F(2x2) tiles): Winograd in fp32 only with the AVX-512 kernels (the direct
    # kernel with AVX2), Winograd in fp64 (the generic fp64 kernel is slower).
    avx512 = ops._conv2d_cpu_fast_info()[0] == "avx512" and os.environ.get("FASTCONV_CPU_KERNELS") != "avx2"
    x, grad_out = torch.randn(1, 32, 4, 4), torch.randn(1, 40, 4, 4)
    _wgrad(grad_out, x, 40, 1)
    assert _wgrad_calls() == before + 1 + avx512
    monkeypatch.setenv("FASTCONV_CPU_KERNELS", "avx2")
    _wgrad(grad_out, x, 40, 1)
    assert _wgrad_calls() == before + 1 + avx512
    monkeypatch.delenv("FASTCONV_CPU_KERNELS")
    got = _wgrad(grad_out.double(), x.double(), 40, 1)
    assert _wgrad_calls() == before + 2 + avx512
    _assert_wgrad_within_bound(got, x.double(), grad_out.double(), 1, 2, "fp64, few tiles")


# Max |error| / (eps * rms(exact weight gradient)) on this problem (unit normals, C = K = 64,
# 2 x 24 x 24 outputs, 3x3; each weight sums 1152 products), measured: direct kernel 39,
# F(2x2,3x3) 25, F(4x4,3x3) 170. F(2x2) is as accurate as the direct sum (its transforms only
# add, negate and halve, and each GEMM sums a quarter as many products); F(4x4)'s transforms
# scale by up to 8 (A) and 1/24 (G) with mixed signs, ~4x the direct error. The bounds allow
# about 3x the measured values (the error of a random problem varies with the seed).
WGRAD_ACCURACY_BOUNDS = {"0": 120.0, "2": 75.0, "4": 510.0}


@pytest.mark.parametrize("mode", ["0", "2", "4"], ids=["direct", "F2x2", "F4x4"])
def test_wgrad_accuracy_against_fp64(mode, winograd):
    winograd(mode)
    torch.manual_seed(0)
    x, grad_out = torch.randn(2, 64, 24, 24), torch.randn(2, 64, 24, 24)
    before = _wgrad_calls()
    got = _wgrad(grad_out, x, 64, 1)
    assert (_wgrad_calls() > before) == (mode != "0")
    exact = torch.nn.grad.conv2d_weight(x.double(), got.shape, grad_out.double(), 1, 1)
    scale = torch.finfo(torch.float32).eps * exact.pow(2).mean().sqrt().item()
    err = ((got.double() - exact).abs().max() / scale).item()
    assert err <= WGRAD_ACCURACY_BOUNDS[mode], f"max error {err:.1f} eps * rms(grad_weight)"

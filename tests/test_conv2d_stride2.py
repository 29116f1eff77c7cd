"""Strided 3x3 (and other) convolutions on the hand-written fp32 CPU kernels: the input
gradient as a sum of stride-1 sub-convolutions over phase classes (csrc/cpu/conv2d_fast_stride2.cpp,
taken for rows of fewer than 4 register tiles per phase, as all cases here but the wide one)
and the forward and weight-gradient passes of the same layers, against PyTorch in fp64, in NCHW
and channels_last. Covers padding 1 and 0, odd and even image sizes, channel tails, batch 1
(weights packed per thread) and larger batches (packed up front), several chunks per class,
reductions cut into L1 blocks, classes with no tap at all, and stride-2 transposed
convolutions (whose forward pass is this input gradient). Results must not depend on the thread
count, and an image of a batch must equal that image alone, bit for bit.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)
import fastconv.nn.functional as FF
from conv_helpers import gemm_tile  # noqa: F401

# every test with each width of the GEMM micro-kernels (the strided input gradient's GEMM form)
pytestmark = pytest.mark.usefixtures("gemm_tile")

ops = torch.ops.fastconv


@pytest.fixture(autouse=True)
def _no_winograd(monkeypatch):
    # The stride-2 Winograd input gradient (tests/test_conv2d_winograd_stride2.py) would take
    # the 3x3 stride-2 layers with 32+ channels first; these tests are about the other paths.
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "0")


# (n, c, h, w, k, r, s, stride, padding, what it reaches)
CASES = [
    (2, 20, 12, 12, 24, 3, 3, 2, 1, "3x3 s2 p1 even size, C and K tails"),
    (1, 16, 11, 13, 16, 3, 3, 2, 1, "3x3 s2 p1 odd sizes, batch 1"),
    (2, 17, 9, 10, 33, 3, 3, 2, 0, "3x3 s2 p0, odd C"),
    (1, 8, 14, 14, 12, 3, 3, 2, 1, "14x14 s2: 7-pixel phase rows"),
    (1, 6, 22, 21, 8, 3, 3, 2, 1, "sub-images of 121 pixels: two chunks per class"),
    (1, 5, 5, 6, 130, 3, 3, 2, 1, "K = 130: one-row classes reduce in L1 blocks"),
    (1, 4, 6, 5, 70, 3, 3, 2, 1, "K = 70: two-row classes reduce in L1 blocks"),
    (2, 6, 9, 8, 10, 4, 4, 2, 1, "4x4 s2 (DCGAN): two taps per class"),
    (1, 7, 10, 11, 9, 3, 3, 3, 1, "stride 3: one tap per class"),
    (1, 5, 8, 9, 6, 3, 3, (1, 2), (1, 0), "stride (1, 2): all rows, column classes"),
    (1, 6, 7, 12, 5, 1, 3, (2, 3), (0, 1), "1x3 s(2, 3): row classes with no tap"),
    (1, 4, 9, 9, 5, 2, 2, 3, 0, "stride > kernel: classes with no column tap"),
]
IDS = [c[-1].replace(" ", "_") for c in CASES]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _passes(case, channels_last, seed=0):
    """The three passes of one case through the fastconv ops and in fp64 through torch."""
    n, c, h, w, k, r, s, stride, padding, _ = case
    stride, padding = _pair(stride), _pair(padding)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=fmt)
    weight = torch.randn(k, c, r, s, generator=gen)
    ref = F.conv2d(x.double(), weight.double(), None, stride, padding)
    grad_out = torch.randn(ref.shape, generator=gen).contiguous(memory_format=fmt)
    args = (stride, padding, (1, 1), 1)
    got = (ops.conv2d(x, weight, None, *args),
           ops._conv2d_input_grad(grad_out, weight, list(x.shape), *args),
           ops._conv2d_weight_grad(grad_out, x, list(weight.shape), *args))
    want = (ref,
            torch.nn.grad.conv2d_input(x.shape, weight.double(), grad_out.double(), stride, padding),
            torch.nn.grad.conv2d_weight(x.double(), weight.shape, grad_out.double(), stride, padding))
    return got, want


def _assert_close_to_fp64(got, want, reduction):
    # fp32 sums of `reduction` products of unit normals: rounding error grows ~ sqrt(reduction)
    # times the magnitude of the terms; 1e-5 * reduction bounds it with a wide margin (the
    # bound of tests/test_conv2d_cpu_kernels.py).
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * max(reduction, 1))


def _fast_info():
    return ops._conv2d_cpu_fast_info()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_strided_passes_match_torch_fp64(case, channels_last):
    isa, before = _fast_info()
    n, c, h, w, k, r, s, *_ = case
    got, want = _passes(case, channels_last)
    p, q = want[0].shape[2:]
    for g, wt, red in zip(got, want, (c * r * s, k * r * s, n * p * q)):
        _assert_close_to_fp64(g, wt, red)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    assert got[2].is_contiguous(memory_format=fmt)  # the weight gradient too, as PyTorch's
    if isa == "generic":
        pytest.skip("no AVX2/AVX-512 on this CPU: only the generic kernels ran")
    assert _fast_info()[1] - before == 3  # every pass on the fast kernels


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES[::2], ids=IDS[::2])
def test_gather_path_agrees(case, channels_last, monkeypatch):
    # FASTCONV_CPU_STRIDED=0 sends the input gradient to the per-row gather path: a different
    # summation order, so not the same bits, but both within fp32 rounding of the fp64 result.
    new = _passes(case, channels_last)[0][1]
    monkeypatch.setenv("FASTCONV_CPU_STRIDED", "0")
    old, want = _passes(case, channels_last)
    _assert_close_to_fp64(old[1], want[1], case[4] * case[5] * case[6])
    _assert_close_to_fp64(new, want[1], case[4] * case[5] * case[6])


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_wide_rows_on_both_paths(channels_last, monkeypatch):
    # 25 input pixels per column phase (>= 4 AVX2 tiles): the per-row gather path by default,
    # the class path with FASTCONV_CPU_STRIDED=1; both within fp32 rounding of fp64.
    case = (1, 8, 7, 50, 20, 3, 3, 2, 1, "")
    default, want = _passes(case, channels_last)
    _assert_close_to_fp64(default[1], want[1], 20 * 9)
    monkeypatch.setenv("FASTCONV_CPU_STRIDED", "1")
    forced, _ = _passes(case, channels_last)
    _assert_close_to_fp64(forced[1], want[1], 20 * 9)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_results_do_not_depend_on_thread_count(channels_last):
    case = (2, 20, 15, 22, 40, 3, 3, 2, 1, "")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _passes(case, channels_last, seed=1)[0]
        torch.set_num_threads(3)
        three = _passes(case, channels_last, seed=1)[0]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, three):
        assert torch.equal(a, b)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_image_of_a_batch_equals_the_image_alone(channels_last):
    # Batch 1 packs each weight block per thread; 3 images of 40 x 40 (staged grad_output over
    # 512 KiB) pack all blocks first. Same packed values and chunks, so the same bits.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x_shape, w = [3, 24, 40, 40], torch.randn(128, 24, 3, 3)
    grad_out = torch.randn(3, 128, 20, 20).contiguous(memory_format=fmt)
    args = ((2, 2), (1, 1), (1, 1), 1)
    full = ops._conv2d_input_grad(grad_out, w, x_shape, *args)
    one = ops._conv2d_input_grad(grad_out[:1], w, [1] + x_shape[1:], *args)
    assert torch.equal(full[:1], one)
    want = torch.nn.grad.conv2d_input(x_shape, w.double(), grad_out.double(), 2, 1)
    _assert_close_to_fp64(full, want, 128 * 9)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [((2, 16, 4, 4), (16, 8, 4, 4), 2, 1, 0),  # DCGAN generator
                                   ((1, 12, 5, 6), (12, 20, 3, 3), 2, 1, 1)],  # output_padding
                         ids=["4x4_s2_p1", "3x3_s2_p1_op1"])
def test_strided_transposed_convolutions(shape, channels_last):
    x_shape, w_shape, stride, padding, output_padding = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(x_shape).contiguous(memory_format=fmt)
    w, b = torch.randn(w_shape), torch.randn(w_shape[1])
    kw = dict(stride=stride, padding=padding, output_padding=output_padding)
    before = _fast_info()[1]
    y = FF.conv_transpose2d(x, w, b, **kw)
    want = F.conv_transpose2d(x.double(), w.double(), b.double(), **kw)
    _assert_close_to_fp64(y, want, w_shape[0] * w_shape[2] * w_shape[3] + 1)
    assert y.is_contiguous(memory_format=fmt)
    if _fast_info()[0] != "generic":
        assert _fast_info()[1] > before


# The implicit-GEMM form (channels_last, csrc/cpu/conv2d_fast_stride2.cpp): taken by default
# for strided layers with >= 128 channels in and out and >= 512 grad_output pixels, forced
# anywhere (stride 1 included) with FASTCONV_CPU_STRIDED_GEMM=1.
# (n, c, h, w, k, r, s, stride, padding, what it reaches)
GEMM_CASES = [
    (2, 136, 36, 35, 128, 3, 3, 2, 1, "default: odd rows, C tail of 8, classes spanning images"),
    (1, 136, 48, 47, 400, 3, 3, 2, 1, "K = 400: runs of 800 steps cut into 3 blocks mid-tap"),
    (16, 128, 14, 14, 128, 3, 3, 2, 0, "pad 0, 7 x 7 sub-images"),
    (1, 128, 72, 70, 128, 3, 3, 3, 1, "stride 3: one tap per class"),
]
GEMM_IDS = [c[-1].split(":")[0].replace(" ", "_") for c in GEMM_CASES]


def _gemm_calls():
    return ops._conv2d_cpu_strided_gemm_info()


@pytest.mark.parametrize("case", GEMM_CASES, ids=GEMM_IDS)
def test_gemm_form_matches_torch_fp64(case):
    before = _gemm_calls()
    got, want = _passes(case, channels_last=True)
    _assert_close_to_fp64(got[1], want[1], case[4] * case[5] * case[6])
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    if _fast_info()[0] != "generic":
        assert _gemm_calls() - before == 1


@pytest.mark.parametrize("case", GEMM_CASES[:2], ids=GEMM_IDS[:2])
def test_gemm_form_packs_weights_of_any_strides(case):
    # the weights are packed from their strides: a channels_last weight gives the same bits
    n, c, h, w, k, r, s, stride, padding, _ = case
    weight = torch.randn(k, c, r, s)
    p, q = (h + 2 * padding - r) // stride + 1, (w + 2 * padding - s) // stride + 1
    grad_out = torch.randn(n, k, p, q).contiguous(memory_format=torch.channels_last)
    args = ((stride, stride), (padding, padding), (1, 1), 1)
    dense = ops._conv2d_input_grad(grad_out, weight, [n, c, h, w], *args)
    wcl = weight.contiguous(memory_format=torch.channels_last)
    assert torch.equal(ops._conv2d_input_grad(grad_out, wcl, [n, c, h, w], *args), dense)


STRIDE1 = [(1, 20, 7, 9, 24, 3, 3, 1, 1, "stride 1: one class of 9 taps"),
            (2, 16, 9, 8, 12, 5, 5, 1, 2, "5x5 stride 1")]


@pytest.mark.parametrize("case", CASES + STRIDE1, ids=IDS + [c[-1].replace(" ", "_") for c in STRIDE1])
def test_gemm_form_forced_on_small_layers(case, monkeypatch):
    # every stride, padding and tap-less class of CASES, stride 1, few channels (tails in every
    # panel)
    monkeypatch.setenv("FASTCONV_CPU_STRIDED_GEMM", "1")
    before = _gemm_calls()
    got, want = _passes(case, channels_last=True)
    _assert_close_to_fp64(got[1], want[1], case[4] * case[5] * case[6])
    if _fast_info()[0] != "generic":
        assert _gemm_calls() - before == 1


def test_gemm_form_off_and_nchw_take_the_other_paths(monkeypatch):
    case = GEMM_CASES[0]
    before = _gemm_calls()
    _passes(case, channels_last=False)
    monkeypatch.setenv("FASTCONV_CPU_STRIDED_GEMM", "0")
    off, want = _passes(case, channels_last=True)
    assert _gemm_calls() == before
    _assert_close_to_fp64(off[1], want[1], case[4] * case[5] * case[6])


def test_gemm_form_does_not_depend_on_thread_count_or_batch(monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_STRIDED_GEMM", "1")
    before = _gemm_calls()
    fmt = torch.channels_last
    x_shape, w = [3, 64, 15, 22], torch.randn(96, 64, 3, 3)
    grad_out = torch.randn(3, 96, 8, 11).contiguous(memory_format=fmt)
    args = ((2, 2), (1, 1), (1, 1), 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops._conv2d_input_grad(grad_out, w, x_shape, *args)
        torch.set_num_threads(3)
        three = ops._conv2d_input_grad(grad_out, w, x_shape, *args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    alone = ops._conv2d_input_grad(grad_out[1:2], w, [1] + x_shape[1:], *args)
    assert torch.equal(one[1:2], alone)
    if _fast_info()[0] != "generic":
        assert _gemm_calls() - before == 3

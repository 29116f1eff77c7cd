"""The hand-written fp32 CPU convolution kernels (csrc/cpu/conv2d_fast*.cpp) against PyTorch in
fp64, through the three conv ops, over shapes that reach every kernel variant and tail:
the S x C fold (C = 1, 3 first layers), per-tap reductions (groups, column dilation), the flat
1x1 GEMM, strided input-gradient phases, depthwise, pixel tails (widths not a multiple of the
register tile) and channel tails (counts not a multiple of the channel block), in NCHW and
channels_last; and the same cases with FASTCONV_CPU_KERNELS=generic (the portable kernels) and,
on an AVX-512 machine, =avx2. The fast path must handle each case (a per-process counter says
so), and its results must not depend on the thread count.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers the ops)

ops = torch.ops.fastconv

# (n, c, h, w, k, r, s, stride, padding, dilation, groups, what it reaches)
CASES = [
    (2, 3, 11, 13, 16, 3, 3, 1, 1, 1, 1, "C=3 fold, 3x3, pixel tail"),
    (1, 5, 9, 10, 7, 3, 3, 1, 1, 1, 1, "odd C and K: channel tails"),
    (2, 8, 12, 12, 20, 1, 1, 1, 0, 1, 1, "flat 1x1 GEMM, K tail"),
    (1, 16, 9, 9, 33, 1, 1, 2, 0, 1, 1, "1x1 stride 2"),
    (2, 3, 23, 23, 17, 7, 7, 2, 3, 1, 1, "7x7 stride 2 first layer"),
    (1, 6, 10, 11, 12, 3, 3, 2, 1, 1, 1, "3x3 stride 2: two input-gradient phases"),
    (1, 8, 9, 9, 8, 3, 3, 1, 2, 2, 1, "dilation 2: per-tap reduction"),
    (1, 8, 10, 10, 12, 3, 3, 1, 1, 1, 2, "groups 2"),
    (1, 12, 11, 9, 6, 3, 3, 2, 1, 1, 3, "groups 3, stride 2"),
    (1, 1, 20, 40, 5, 5, 9, 2, 0, 1, 1, "C=1 wide kernel (DeepSpeech-like)"),
    (2, 4, 7, 7, 4, 5, 5, 1, 3, 1, 1, "padding > kernel half"),
    (1, 8, 6, 6, 16, 2, 3, 3, (1, 0), 1, 1, "stride > kernel: pixels no tap reaches"),
    (1, 16, 8, 8, 16, 3, 3, 1, 1, 1, 16, "depthwise"),
    (2, 20, 9, 11, 20, 3, 3, 2, 1, 1, 20, "depthwise stride 2, channel tail"),
    (1, 17, 5, 5, 40, 3, 3, 1, 1, 1, 1, "small image, K tail"),
    (1, 40, 7, 7, 72, 3, 3, 1, 1, 1, 1, "several channel blocks"),
    (3, 7, 13, 6, 9, 4, 2, (2, 1), (2, 0), (1, 2), 1, "even kernel, mixed stride and dilation"),
    (1, 4, 3, 5, 6, 3, 3, 1, 1, 1, 1, "image narrower than a register tile"),
    (1, 80, 5, 21, 14, 3, 3, 1, 1, 1, 1, "reduction cut into L1 blocks, pixel tail"),
    (1, 700, 10, 10, 8, 1, 1, 1, 0, 1, 1, "1x1 over many channels: pixel chunks, L1 blocks"),
    (1, 6, 4, 24, 10, 3, 3, 1, 1, 1, 1, "rows of 24 pixels: whole vectors, no mask"),
    (2, 5, 6, 16, 7, 1, 3, 1, (0, 1), 1, 1, "rows of 16 pixels"),
    (1, 3, 5, 70, 8, 3, 3, 1, 1, 1, 1, "wgrad chunks of one row: kernel rows missing the first"),
    (1, 128, 2, 130, 16, 3, 3, 1, 1, 1, 1, "wgrad packed chunks of one row, first misses a row"),
    (3, 130, 33, 19, 20, 3, 3, 2, 1, 1, 1, "wgrad packed: stride 2, C and K tails, 51 rows in 3 even chunks"),
    (1, 256, 9, 9, 40, 3, 3, 1, 2, 2, 2, "wgrad packed: groups 2, dilation 2, K tail per group"),
    (2, 48, 11, 9, 70, 5, 5, 1, 2, 1, 1, "wgrad packed with 48 channels (>= 32, K >= 64), K tail, 5x5"),
    (1, 36, 7, 7, 20, 3, 3, 1, 1, 1, 1, "7x7 NCHW through the NHWC-staged kernels, K tail"),
    (1, 20, 13, 14, 24, 3, 3, 1, 1, 1, 1, "14 wide: input-gradient tiles across rows, C tail"),
    # ungrouped 1x1 layers go to the packed GEMM (tests/test_conv2d_gemm.py); grouped ones still
    # take the direct kernels: the flat 1x1 path, and in NCHW over wide rows the pixel-row path
    (2, 8, 12, 12, 20, 1, 1, 1, 0, 1, 2, "grouped 1x1: flat direct path"),
    (1, 12, 5, 40, 18, 1, 1, 1, 0, 1, 3, "grouped 1x1 over 40-pixel rows: NCHW pixel-row path"),
    (1, 4, 5, 6, 8, 2, 3, 1, (2, 1), 1, 1, "row padding > kernel rows - 1: no tiles across"),
    (1, 3, 4, 203, 13, 3, 3, 1, 1, 1, 1, "NCHW rows of 203 pixels: 3 segments, transposed-store tails"),
    (1, 5, 3, 45, 8, 3, 3, 1, 0, 1, 1, "C=5 NCHW staging: vector groups of 8 pixels, then scalar"),
]
IDS = [c[-1].replace(" ", "_") for c in CASES]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _run_all(case, channels_last):
    """The three passes of one case through the fastconv ops and in fp64 through torch."""
    n, c, h, w, k, r, s, stride, padding, dilation, groups, _ = case
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
    weight = torch.randn(k, c // groups, r, s)
    bias = torch.randn(k)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), stride, padding, dilation, groups)
    grad_out = torch.randn(ref.shape).contiguous(memory_format=fmt)
    out = ops.conv2d(x, weight, bias, stride, padding, dilation, groups)
    grad_in = ops._conv2d_input_grad(grad_out, weight, list(x.shape), stride, padding, dilation, groups)
    grad_w = ops._conv2d_weight_grad(grad_out, x, list(weight.shape), stride, padding, dilation, groups)
    refs = (ref,
            torch.nn.grad.conv2d_input(x.shape, weight.double(), grad_out.double(), stride, padding,
                                       dilation, groups),
            torch.nn.grad.conv2d_weight(x.double(), weight.shape, grad_out.double(), stride, padding,
                                        dilation, groups))
    return (out, grad_in, grad_w), refs


def _assert_close_to_fp64(got, want, reduction):
    # fp32 sums of `reduction` products of unit normals: rounding error grows ~ sqrt(reduction)
    # times the magnitude of the terms; 1e-5 * reduction bounds it with a wide margin.
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * max(reduction, 1))


def _check_case(case, channels_last):
    n, c, h, w, k, r, s, *_rest, groups, _ = case
    got, want = _run_all(case, channels_last)
    p, q = want[0].shape[2:]
    reductions = ((c // groups) * r * s, (k // groups) * r * s, n * p * q)
    for g, wt, red in zip(got, want, reductions):
        _assert_close_to_fp64(g, wt, red)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # the weight gradient comes in the activations' format (PyTorch's, for a contiguous weight)
    assert got[2].is_contiguous(memory_format=fmt)
    if c == 1:  # a one-channel input is contiguous in both formats: no format to check
        return
    assert got[0].is_contiguous(memory_format=fmt)
    assert got[1].is_contiguous(memory_format=fmt)


def _fast_calls():
    return ops._conv2d_cpu_fast_info()[1]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fast_kernels_match_torch(case, channels_last):
    isa, before = ops._conv2d_cpu_fast_info()
    _check_case(case, channels_last)
    if isa == "generic":
        pytest.skip("no AVX2/AVX-512 on this CPU: only the generic kernels ran")
    depthwise_wgrad = case[10] > 1 and case[10] == case[1]  # left to the generic kernel
    assert _fast_calls() - before == (2 if depthwise_wgrad else 3)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_generic_kernels_when_forced(case, channels_last, monkeypatch):
    monkeypatch.setenv("FASTCONV_CPU_KERNELS", "generic")
    assert ops._conv2d_cpu_fast_info()[0] == "generic"
    before = _fast_calls()
    _check_case(case, channels_last)
    assert _fast_calls() == before


@pytest.mark.parametrize("case", CASES[::2], ids=IDS[::2])
def test_avx2_kernels_on_avx512_machines(case, monkeypatch):
    if ops._conv2d_cpu_fast_info()[0] != "avx512":
        pytest.skip("AVX-512 kernels not in use on this CPU (the AVX2 ones are tested above)")
    monkeypatch.setenv("FASTCONV_CPU_KERNELS", "avx2")
    assert ops._conv2d_cpu_fast_info()[0] == "avx2"
    _check_case(case, channels_last=True)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", [(2, 24, 15, 17, 40, 3, 3, 1, 1, 1, 1, "C=24"),
                                  (2, 140, 15, 17, 40, 3, 3, 2, 1, 1, 1, "C=140 stride 2")],
                         ids=["few_channels", "packed_wgrad_strided_dgrad"])
def test_results_do_not_depend_on_thread_count(case, channels_last):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(1)
        one, _ = _run_all(case, channels_last)
        torch.set_num_threads(3)
        torch.manual_seed(1)
        three, _ = _run_all(case, channels_last)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, three):
        assert torch.equal(a, b)


def test_empty_batch_and_bias_free():
    x = torch.randn(0, 8, 6, 6)
    weight = torch.randn(16, 8, 3, 3)
    out = ops.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    assert out.shape == (0, 16, 6, 6)
    grad_w = ops._conv2d_weight_grad(torch.randn(0, 16, 6, 6), x, [16, 8, 3, 3], (1, 1), (1, 1), (1, 1), 1)
    assert torch.equal(grad_w, torch.zeros(16, 8, 3, 3))
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(ops.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 1),
                               F.conv2d(x, weight, None, 1, 1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("weight_layout", ["channels_last", "strided"])
def test_noncontiguous_weight_gives_the_same_bits(channels_last, weight_layout):
    # The fast kernels pack a weight from its strides (no contiguous copy first): the packed
    # weights, and so every result bit, must equal those of the contiguous weight in the same
    # memory format (PyTorch's rule: channels_last when the input or the weight is).
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for groups in (1, 2):
        x = torch.randn(2, 12, 9, 11).contiguous(memory_format=fmt)
        weight = torch.randn(20, 12 // groups, 3, 3)
        if weight_layout == "channels_last":
            odd = weight.contiguous(memory_format=torch.channels_last)
            out_fmt = torch.channels_last
        else:  # every other column of a wider kernel: neither format
            wide = torch.randn(20, 12 // groups, 3, 6)
            wide[..., ::2] = weight
            odd = wide[..., ::2]
            out_fmt = fmt
        assert not odd.is_contiguous() and torch.equal(odd, weight)
        args = ((2, 1), (1, 1), (1, 1), groups)
        out = ops.conv2d(x.contiguous(memory_format=out_fmt), weight, None, *args)
        out_odd = ops.conv2d(x, odd, None, *args)
        assert out_odd.is_contiguous(memory_format=out_fmt)
        assert torch.equal(out, out_odd)
        _assert_close_to_fp64(out_odd, F.conv2d(x.double(), weight.double(), None, *args), 12 // groups * 9)
        grad_out = torch.randn(out.shape)
        grad_in = ops._conv2d_input_grad(grad_out.contiguous(memory_format=out_fmt), weight,
                                         list(x.shape), *args)
        grad_in_odd = ops._conv2d_input_grad(grad_out.contiguous(memory_format=fmt), odd,
                                             list(x.shape), *args)
        assert grad_in_odd.is_contiguous(memory_format=out_fmt)
        assert torch.equal(grad_in, grad_in_odd)
        want = torch.nn.grad.conv2d_input(x.shape, weight.double(), grad_out.double(), *args)
        _assert_close_to_fp64(grad_in_odd, want, 20 // groups * 9)


@pytest.mark.parametrize("weight_layout", ["contiguous", "channels_last", "strided"])
def test_weights_packed_per_thread_give_the_same_bits(weight_layout):
    # With one image (or a small input) each thread packs the weight blocks it uses itself;
    # with a larger batch the whole weight is packed first. Both must give the same kernel
    # calls, so image 0 of a batch that is packed up front equals that image alone, bit for
    # bit, for every weight layout the packing reads (NCHW, channels_last, other strides).
    # (3x5 kernel: not a Winograd case; 56 input and 72 output channels: a tail block on
    # both sides; 3 x 28 x 28 staged images are too large for per-thread packing.)
    fmt = torch.channels_last
    x = torch.randn(3, 56, 28, 28).contiguous(memory_format=fmt)
    weight = torch.randn(72, 56, 3, 5)
    if weight_layout == "channels_last":
        weight = weight.contiguous(memory_format=torch.channels_last)
    elif weight_layout == "strided":
        wide = torch.randn(72, 56, 3, 10)
        wide[..., ::2] = weight
        weight = wide[..., ::2]
    args = ((1, 1), (1, 2), (1, 1), 1)
    out = ops.conv2d(x, weight, None, *args)
    one = ops.conv2d(x[:1], weight, None, *args)
    assert torch.equal(out[:1], one)
    _assert_close_to_fp64(out, F.conv2d(x.double(), weight.double(), None, *args), 56 * 15)
    grad_out = torch.randn(out.shape).contiguous(memory_format=fmt)
    grad_in = ops._conv2d_input_grad(grad_out, weight, list(x.shape), *args)
    grad_in_one = ops._conv2d_input_grad(grad_out[:1], weight, [1, 56, 28, 28], *args)
    assert torch.equal(grad_in[:1], grad_in_one)
    want = torch.nn.grad.conv2d_input(x.shape, weight.double(), grad_out.double(), *args)
    _assert_close_to_fp64(grad_in, want, 72 * 15)

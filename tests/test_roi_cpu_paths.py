"""The CPU ROI kernels' internal paths, each against torchvision: ROI Pool's register-blocked
channel loops (blocks of 64 and 16 channels with AVX-512, 32 with AVX2, then 8 and a scalar
tail) and its backward reading
grad_output and argmax in place in any layout; ROI Align's NCHW map (read in bands of rows,
tests/test_roi_layout.py has more) with few boxes on it and with many, against channels_last.
The small shapes of test_roi_align.py / test_roi_pool.py have fewer than 8 channels and so
never reach the blocked loops."""
import pytest
import torch
import torchvision

from fastconv.ops import roi_align, roi_pool
from fastconv.testing import TOLERANCES
from roi_testing import edge_case_boxes, grads, with_threads


# ROI Align's NCHW forward takes one of two paths by map size (cpu/roi_align.cpp,
# whole_map_bytes): bands of rows, or the whole map transposed to channels_last. Every test here
# runs both.
@pytest.fixture(autouse=True, params=["bands", "whole_map"])
def roi_align_nchw_path(request, monkeypatch):
    monkeypatch.setenv("FASTCONV_ROI_WHOLE_MAP_BYTES",
                       "0" if request.param == "bands" else str(1 << 40))

FORMATS = [torch.contiguous_format, torch.channels_last]


# ---- ROI Pool -----------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [45, 70])  # 32 + 8 + 5 and 2 * 32 + 6: every block kind
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_roi_pool_channel_blocks_match_torchvision(channels, memory_format):
    x = torch.randn(2, channels, 11, 13).contiguous(memory_format=memory_format)
    rois = torch.cat([edge_case_boxes(2, 11, 13, 0.5).float()] * 2)
    out, argmax = torch.ops.fastconv.roi_pool(x, rois, 0.5, 3, 4)
    ref, ref_argmax = torch.ops.torchvision.roi_pool(x, rois, 0.5, 3, 4)
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, ref) and torch.equal(argmax, ref_argmax)
    grad = torch.randn(ref.shape)
    g = grads(lambda t, r: roi_pool(t, r, (3, 4), 0.5), x, rois, grad)
    g_ref = grads(lambda t, r: torchvision.ops.roi_pool(t, r, (3, 4), 0.5), x, rois, grad)
    assert g.is_contiguous(memory_format=memory_format)
    # a few terms per pixel, added in box order by both
    torch.testing.assert_close(g, g_ref, **TOLERANCES[torch.float32])


def test_roi_pool_backward_by_bin_rejects_argmax_past_the_map_in_any_channel_block():
    # a channels_last argmax is added bin by bin over all channels (16 at a time through
    # AVX-512's gather and scatter): an index past the map in a whole block or in the tail raises
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    go = torch.ones(1, 40, 2, 2)
    for c in (3, 20, 37):
        bad = torch.zeros(1, 40, 2, 2, dtype=torch.int32)
        bad[0, c, 1, 0] = 25
        bad = bad.contiguous(memory_format=torch.channels_last)
        with pytest.raises(IndexError, match=r"expected indices in \[0, 25\), got 25"):
            torch.ops.fastconv._roi_pool_backward(go, rois, bad, 1.0, 2, 2, [1, 40, 5, 5], True)


def test_roi_pool_blocked_loop_ties_nan_and_infinities():
    # channel 0: ties (the first in row-major order wins); 1: NaN never wins; 2: all -inf keeps
    # -FLT_MAX and argmax -1 (torchvision's rule), in a 40-channel map so all go through the
    # 32-channel register block
    x = torch.randn(1, 40, 6, 6)
    x[0, 0] = 0.0
    x[0, 0, 2:4, 2:4] = 1.0
    x[0, 1] = float("nan")
    x[0, 1, 5, 5] = 3.0
    x[0, 2] = float("-inf")
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0], [0, 2.0, 2.0, 3.0, 3.0],
                         [0, 7.0, 7.0, 9.0, 9.0]])  # the last is outside: empty bins
    out, argmax = torch.ops.fastconv.roi_pool(x, rois, 1.0, 3, 3)
    ref, ref_argmax = torch.ops.torchvision.roi_pool(x, rois, 1.0, 3, 3)
    assert torch.equal(out, ref) and torch.equal(argmax, ref_argmax)
    assert (argmax[:, 2] == -1).all() and (argmax[2] == -1).all()


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_roi_pool_backward_reads_any_grad_layout(memory_format):
    x = torch.randn(2, 37, 9, 10).contiguous(memory_format=memory_format)
    rois = edge_case_boxes(2, 9, 10, 1.0).float()
    other = torch.channels_last if memory_format == torch.contiguous_format else \
        torch.contiguous_format
    for make_grad in (lambda s: torch.randn(s).contiguous(memory_format=other),  # other layout
                      lambda s: torch.randn(s[1:]).expand(s),                  # expanded
                      lambda s: torch.randn(s[0], s[2], s[3], s[1]).permute(0, 3, 1, 2),
                      # neither a channel's bins nor a bin's channels adjacent: copied one by one
                      lambda s: torch.randn(s[0], s[1], s[3], s[2]).transpose(2, 3)):
        grad = make_grad((rois.shape[0], 37, 3, 2))
        g = grads(lambda t, r: roi_pool(t, r, (3, 2), 1.0), x, rois, grad)
        g_ref = grads(lambda t, r: torchvision.ops.roi_pool(t, r, (3, 2), 1.0), x, rois,
                      grad.contiguous())
        assert g.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(g, g_ref, **TOLERANCES[torch.float32])


# The NCHW backward adds a pass of cpu::l2_channels channels at a time (a multiple of 16: 16 on
# maps of 4096 pixels or more): 45 channels on a 64x70 map take passes of 16, 16 and a 13-channel
# tail; the channels_last one (argmax channels_last) goes bin by bin over all channels in units
# of (image, band of rows), into grad_input itself (float) or a (pixels, channels) buffer
# (bfloat16); 1, 3 and 8 threads give 1, 2 and 4 bands per image (the two NCHW ones: different
# channel blocks per unit), with bins across the bands' borders.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_roi_pool_backward_passes_with_tails_match_torchvision(dtype, memory_format):
    x = torch.randn(2, 45, 64, 70).to(dtype).contiguous(memory_format=memory_format)
    rois = torch.cat([edge_case_boxes(2, 64, 70, 0.5)] * 3).to(dtype)
    grad = torch.randn(rois.shape[0], 45, 5, 4).to(dtype)
    g_ref = grads(lambda t, r: torchvision.ops.roi_pool(t, r, (5, 4), 0.5), x.float(),
                  rois.float(), grad.float())
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3, 8):
            torch.set_num_threads(threads)
            results.append(grads(lambda t, r: roi_pool(t, r, (5, 4), 0.5), x, rois, grad))
    finally:
        torch.set_num_threads(previous)
    g = results[0]
    assert g.dtype == dtype and g.is_contiguous(memory_format=memory_format)
    for other in results[1:]:  # fixed order of additions, any thread count
        assert torch.equal(results[0], other)
    # a few terms per pixel in box order, accumulated in float by both; bfloat16 rounds once
    torch.testing.assert_close(g.float(), g_ref, **TOLERANCES[dtype])


# ---- ROI Align ----------------------------------------------------------------------------------
# (N, C, H, W, boxes, output_size, sampling_ratio, aligned): 20 edge-case boxes with 3x2 bins
# and at most 2x2 samples (few samples on the map), and the same boxes three times with 7x7
# bins and adaptive sampling (whole-map boxes alone read every pixel).
ALIGN_CASES = {
    "few_samples": (2, 70, 40, 48, 1, (3, 2), 2, False),
    "few_samples_aligned_sr1": (2, 45, 40, 48, 1, (3, 2), 1, True),
    "many_samples": (2, 45, 40, 48, 3, (7, 7), 0, True),
}


def align_inputs(case, dtype=torch.float32):
    n, c, h, w, repeat, size, ratio, aligned = case
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype)
    rois = torch.cat([edge_case_boxes(n, h, w, 1.0)] * repeat).to(dtype)
    return x, rois, (size, 1.0, ratio, aligned)


@pytest.mark.parametrize("name", list(ALIGN_CASES))
def test_roi_align_nchw_paths_match_channels_last_and_torchvision(name):
    x, rois, args = align_inputs(ALIGN_CASES[name])
    xl = x.contiguous(memory_format=torch.channels_last)
    out = roi_align(x, rois, *args)
    assert out.is_contiguous()
    # same samples in the same order whichever way the map is read: identical numbers
    assert torch.equal(out, roi_align(xl, rois, *args).contiguous())
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, *args),
                               **TOLERANCES[torch.float32])
    grad = torch.randn(out.shape)
    g = grads(lambda t, r: roi_align(t, r, *args), x, rois, grad)
    g_last = grads(lambda t, r: roi_align(t, r, *args), xl, rois, grad)
    g_ref = grads(lambda t, r: torchvision.ops.roi_align(t, r, *args), x, rois, grad)
    assert g.is_contiguous() and g_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(g, g_last.contiguous())  # the same sums in the same order
    # sums of many bin contributions in different orders (torchvision multiplies by the weight
    # before dividing by the count): a few fp32 ulps of sums of magnitude ~10, as in
    # test_roi_align.py
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=2.5e-5)


@pytest.mark.parametrize("name", ["few_samples", "many_samples"])
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_roi_align_backward_is_bitwise_independent_of_threads(name, memory_format):
    x, rois, args = align_inputs(ALIGN_CASES[name])
    x = x.contiguous(memory_format=memory_format)
    grad = torch.randn(rois.shape[0], x.shape[1], *args[0])
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):  # different channel blocks per unit
            torch.set_num_threads(threads)
            results.append(grads(lambda t, r: roi_align(t, r, *args), x, rois, grad))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_roi_align_nchw_low_precision(dtype):
    x, rois, args = align_inputs(ALIGN_CASES["few_samples"], dtype)
    out = roi_align(x, rois, *args)
    assert out.dtype == dtype
    assert torch.equal(out, roi_align(x.contiguous(memory_format=torch.channels_last), rois,
                                      *args).contiguous())
    ref = torchvision.ops.roi_align(x.float(), rois.float(), *args)
    torch.testing.assert_close(out.float(), ref, **TOLERANCES[dtype])
    grad = torch.randn(out.shape).to(dtype)
    g = grads(lambda t, r: roi_align(t, r, *args), x, rois, grad)
    g_ref = grads(lambda t, r: torchvision.ops.roi_align(t, r, *args), x.float(), rois.float(),
                  grad.float())
    assert g.dtype == dtype
    torch.testing.assert_close(g.float(), g_ref, **TOLERANCES[dtype])


def test_roi_align_nchw_gradcheck():
    # two small boxes on a 1x9x12x14 NCHW map; samples off the pixel grid
    x = torch.randn(1, 9, 12, 14, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 3.3, 2.6, 6.1, 5.7], [0, 8.2, 1.1, 12.9, 4.4]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (2, 3), 1.0, 2, False), (x,))


# The NCHW backward writes each band of rows into the channel planes with non-temporal stores
# of whole 64-byte lines (cpu/layout_transpose.h, transpose_32bit_streaming) where the planes
# are a whole number of lines (here 200 x 20 pixels), and ordinary stores for the elements
# before the first whole line of a band (at 1 thread the units are 20 or 23 channels by 163 or
# 142 rows: the second band starts 3260 or 2840 pixels into a plane, not a multiple of 16),
# after the last one, and for the channels past a multiple of 8 (20 = 16 + 4, 23 = 16 + 7).
@pytest.mark.parametrize("channels", [40, 45])
def test_roi_align_nchw_backward_streamed_bands_at_any_alignment(channels):
    x = torch.randn(1, channels, 200, 20)
    rois = torch.cat([edge_case_boxes(1, 200, 20, 1.0)] * 2).float()
    args = ((5, 4), 1.0, 2, False)
    grad = torch.randn(rois.shape[0], channels, 5, 4)
    g = with_threads(1, lambda: grads(lambda t, r: roi_align(t, r, *args), x, rois, grad))
    g_last = with_threads(1, lambda: grads(lambda t, r: roi_align(t, r, *args),
                                           x.contiguous(memory_format=torch.channels_last),
                                           rois, grad))
    assert torch.equal(g, g_last.contiguous())  # the same sums, only stored differently
    g_ref = grads(lambda t, r: torchvision.ops.roi_align(t, r, *args), x, rois, grad)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=2.5e-5)  # as above


# The NCHW forward's bands transpose only the columns their boxes read, one call per row,
# unless the boxes span more than half the width: then every column, each channel's rows of the
# band as one run (cpu/roi_align.cpp, forward_nchw). Boxes over columns 10-30 of 96 (part of
# the width) and 10-70 (widened to all of it), both at several band heights (1 thread: units
# of 45 channels; 3 threads: of 15, so taller bands).
@pytest.mark.parametrize("columns", [(10, 30), (10, 70)])
@pytest.mark.parametrize("threads", [1, 3])
def test_roi_align_nchw_bands_read_part_or_all_of_the_width(columns, threads):
    n, c, h, w = 2, 45, 300, 96
    x = torch.randn(n, c, h, w)
    lo, hi = columns
    boxes = []
    for k in range(24):  # boxes down the map, both images, some starting or ending on an edge
        y1 = (k * 37) % (h - 20)
        x1 = lo + (k * 7) % (hi - lo - 4)
        x2 = hi if k % 5 == 0 else min(hi, x1 + 3 + k % 11)
        boxes.append([k % n, x1 + 0.3, y1 + 0.6, x2, y1 + 4.5 + k % 17])
    rois = torch.tensor(boxes)
    args = ((4, 3), 1.0, 2, False)
    out = with_threads(threads, lambda: roi_align(x, rois, *args))
    out_last = roi_align(x.contiguous(memory_format=torch.channels_last), rois, *args)
    assert torch.equal(out, out_last.contiguous())  # the same samples in the same order
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, *args),
                               **TOLERANCES[torch.float32])

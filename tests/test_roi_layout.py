"""The CPU ROI kernels' layout changes: an NCHW map transposed to channels_last for ROI Pool
(csrc/cpu/layout_transpose.h) and ROI Pool's backward buffers of channel planes transposed into
a channels_last gradient; ROI Align's NCHW forward and backward, which sweep the map in bands
of rows transposed to or from buffers with a pixel's channels adjacent. Shapes are chosen for
the transpose's edges: channel and pixel counts that are not multiples of its 8x8 blocks or of
its 32-column blocks, a block or less of either, batches of several images; and for several
bands per map (a tall map), with boxes whose sample rows run upwards (inverted, aligned); and a
map that is not contiguous in either layout (torch's own copy). ROI Pool is exact against
torchvision, so a misplaced element shows as a wrong maximum or argmax; ROI Align's NCHW
results must equal its channels_last ones bit for bit (same samples, same order)."""
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

# (N, C, H, W): pixels H*W = 32 (one column block), 143 and 259 (tails of 8 and 32); channels
# 8 (one row block), 45 and 70 (tails of 5 and 6), 3 (no whole block). With 45 and 70 channels
# every 8th / 4th box's NCHW output block starts on a 64-byte line and goes out as streamed
# 16-channel groups plus a tail (cpu::transpose_32bit_dense_streaming); the others unstreamed.
SHAPES = [(1, 8, 4, 8), (2, 45, 13, 11), (3, 70, 7, 37), (2, 3, 5, 9)]


def boxes(n, h, w, scale, repeat=2):
    return torch.cat([edge_case_boxes(n, h, w, scale)] * repeat).float()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_roi_pool_layouts_match_torchvision_exactly(shape, memory_format):
    n, c, h, w = shape
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    rois = boxes(n, h, w, 0.5)
    out, argmax = torch.ops.fastconv.roi_pool(x, rois, 0.5, 3, 2)
    ref, ref_argmax = torch.ops.torchvision.roi_pool(x, rois, 0.5, 3, 2)
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, ref) and torch.equal(argmax, ref_argmax)
    grad = torch.randn(ref.shape)
    results = [with_threads(t, lambda: grads(lambda a, r: roi_pool(a, r, (3, 2), 0.5), x, rois,
                                             grad)) for t in (1, 2, 3)]
    g_ref = grads(lambda a, r: torchvision.ops.roi_pool(a, r, (3, 2), 0.5), x, rois, grad)
    assert results[0].is_contiguous(memory_format=memory_format)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    # a few terms per pixel, added in box order by both
    torch.testing.assert_close(results[0], g_ref, **TOLERANCES[torch.float32])


# Many boxes with 7x7 bins and adaptive sampling (whole-map boxes alone read every pixel).
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_roi_align_nchw_matches_channels_last_and_torchvision(shape, dtype):
    n, c, h, w = shape
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    xl = x.contiguous(memory_format=torch.channels_last)
    rois = boxes(n, h, w, 1.0, repeat=3).to(dtype)
    args = ((7, 7), 1.0, 0, True)
    out = roi_align(x, rois, *args)
    assert out.is_contiguous() and out.dtype == dtype
    # the same samples in the same order whichever layout the map comes in
    assert torch.equal(out, roi_align(xl, rois, *args).contiguous())
    ref = torchvision.ops.roi_align(x.float(), rois.float(), *args)
    torch.testing.assert_close(out.float(), ref, **TOLERANCES[dtype])
    grad = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    results = [with_threads(t, lambda: grads(lambda a, r: roi_align(a, r, *args), x, rois, grad))
               for t in (1, 2, 3)]
    g_last = grads(lambda a, r: roi_align(a, r, *args), xl, rois, grad)
    g_ref = grads(lambda a, r: torchvision.ops.roi_align(a, r, *args), x.float(), rois.float(),
                  grad.float())
    assert results[0].is_contiguous() and g_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    # the NCHW gradient's band buffers hold the channels_last sums, transposed
    assert torch.equal(results[0], g_last.contiguous())
    if dtype == torch.float32:
        # sums of many bin contributions in different orders (torchvision multiplies by the
        # weight before dividing by the count): a few fp32 ulps of sums of magnitude ~10, as
        # in test_roi_align.py
        torch.testing.assert_close(results[0], g_ref, rtol=1e-5, atol=2.5e-5)
    else:
        torch.testing.assert_close(results[0].float(), g_ref, **TOLERANCES[dtype])


@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_non_contiguous_map_matches_its_contiguous_copy(op):
    big = torch.randn(2, 46, 11, 15)
    x = big[:, 1:, :, 2:]  # neither NCHW- nor channels_last-contiguous
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    rois = boxes(2, 11, 13, 0.5, repeat=3)
    if op == "roi_pool":
        fn = lambda a, r: roi_pool(a, r, (3, 2), 0.5)  # noqa: E731
    else:
        fn = lambda a, r: roi_align(a, r, (7, 7), 0.5, 0, False)  # noqa: E731
    out = fn(x, rois)
    assert torch.equal(out, fn(x.contiguous(), rois))
    grad = torch.randn(out.shape)
    assert torch.equal(grads(fn, x, rois, grad), grads(fn, x.contiguous(), rois, grad))


# A tall map: the NCHW forward's and backward's bands (24 and 25 rows for 64 channels of 40
# columns in a 256 KB buffer) split it thirteen ways; bins of the taller boxes span two bands.
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_nchw_bands_match_channels_last(aligned, sampling_ratio):
    x = torch.randn(2, 64, 300, 40)
    xl = x.contiguous(memory_format=torch.channels_last)
    rois = boxes(2, 300, 40, 0.5)
    args = ((5, 3), 0.5, sampling_ratio, aligned)
    out = roi_align(x, rois, *args)
    assert torch.equal(out, roi_align(xl, rois, *args).contiguous())
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, *args),
                               **TOLERANCES[torch.float32])
    grad = torch.randn(out.shape)
    g = [with_threads(t, lambda: grads(lambda a, r: roi_align(a, r, *args), x, rois, grad))
         for t in (1, 3)]
    assert torch.equal(g[0], g[1])
    g_last = grads(lambda a, r: roi_align(a, r, *args), xl, rois, grad)
    assert torch.equal(g[0], g_last.contiguous())
    g_ref = grads(lambda a, r: torchvision.ops.roi_align(a, r, *args), x, rois, grad)
    torch.testing.assert_close(g[0], g_ref, rtol=1e-5, atol=2.5e-5)  # as above

"""The CPU ROI kernels' session-7 paths: ROI Pool's NCHW forward pools each box into a (bins, C)
tile and transposes it (values and int32 argmax) into the output; ROI Align's bins accumulate
and scatter all their samples in one call (channel blocks of 32, 16 and 8 in registers, then a
scalar tail), here with small boxes scattered over wide maps (a band's rows hold several
separate column ranges; boxes across the edges, touching, nested, inverted). Results must stay
exact against torchvision (ROI Pool) and bit-identical between the layouts and thread counts
(ROI Align)."""
import pytest
import torch
import torchvision

from fastconv.ops import roi_align, roi_pool
from fastconv.testing import TOLERANCES
from roi_testing import grads, with_threads


# ROI Align's NCHW forward takes one of two paths by map size (cpu/roi_align.cpp,
# whole_map_bytes): bands of rows, or the whole map transposed to channels_last. Every test here
# runs both.
@pytest.fixture(autouse=True, params=["bands", "whole_map"])
def roi_align_nchw_path(request, monkeypatch):
    monkeypatch.setenv("FASTCONV_ROI_WHOLE_MAP_BYTES",
                       "0" if request.param == "bands" else str(1 << 40))


def sparse_boxes(n_images, height, width, scale, count=24, seed=0):
    """Small boxes (1-15% of a side) scattered over a map (image coordinates), plus boxes whose
    column ranges touch, overlap, nest and cross the map's edges, and one inverted box."""
    H, W = height / scale, width / scale
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        x, y = (torch.rand(2, generator=g) * torch.tensor([W, H])).tolist()
        w, h = (torch.rand(2, generator=g) * 0.14 + 0.01).tolist()
        rows.append((i % n_images, x, y, x + w * W, y + h * H))
    rows += [
        (0, 0.10 * W, 0.40 * H, 0.20 * W, 0.50 * H),  # two ranges that touch
        (0, 0.20 * W, 0.42 * H, 0.30 * W, 0.47 * H),
        (0, 0.50 * W, 0.10 * H, 0.70 * W, 0.20 * H),  # one nested in another
        (0, 0.55 * W, 0.12 * H, 0.60 * W, 0.15 * H),
        (n_images - 1, -0.05 * W, 0.70 * H, 0.04 * W, 0.80 * H),  # across the left edge
        (n_images - 1, 0.96 * W, 0.85 * H, 1.08 * W, 1.03 * H),   # across right and bottom
        (n_images - 1, 0.45 * W, 0.66 * H, 0.35 * W, 0.58 * H),   # inverted
    ]
    return torch.tensor(rows, dtype=torch.float32)


# (N, C, H, W): channel counts with every register block kind (16 = one 16-block, 45 = 32 + 8 +
# 5, 3 = scalar only) and wide rows so that a band's rows hold several separate column ranges;
# planes of whole 64-byte lines (64 x 80 pixels), into which the NCHW backward streams its
# bands, with zeros for the lines that no box reaches (cpu/layout_transpose.h)
ALIGN_SHAPES = [(2, 16, 41, 97), (1, 45, 67, 83), (2, 3, 30, 61), (1, 40, 64, 80)]


@pytest.mark.parametrize("shape", ALIGN_SHAPES, ids=str)
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_sparse_boxes_nchw_match_channels_last(shape, aligned):
    n, c, h, w = shape
    x = torch.randn(shape)
    xl = x.contiguous(memory_format=torch.channels_last)
    rois = sparse_boxes(n, h, w, 0.5)
    args = ((7, 7), 0.5, 2, aligned)
    out = roi_align(x, rois, *args)
    assert out.is_contiguous()
    assert torch.equal(out, roi_align(xl, rois, *args).contiguous())
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, *args),
                               **TOLERANCES[torch.float32])
    # and without the first boxes: other runs per row
    assert torch.equal(roi_align(x, rois[5:], *args), out[5:])
    grad = torch.randn(out.shape)
    g = [with_threads(t, lambda: grads(lambda a, r: roi_align(a, r, *args), x, rois, grad))
         for t in (1, 2)]
    assert torch.equal(g[0], g[1])
    g_last = grads(lambda a, r: roi_align(a, r, *args), xl, rois, grad)
    assert torch.equal(g[0], g_last.contiguous())
    g_ref = grads(lambda a, r: torchvision.ops.roi_align(a, r, *args), x, rois, grad)
    # sums of bin contributions in another order: see test_roi_layout.py
    torch.testing.assert_close(g[0], g_ref, rtol=1e-5, atol=2.5e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_roi_align_sparse_boxes_other_dtypes(dtype):
    x = torch.randn(2, 19, 37, 53, dtype=torch.float64).to(dtype)
    rois = sparse_boxes(2, 37, 53, 0.5).to(dtype)
    args = ((3, 4), 0.5, 0, True)
    out = roi_align(x, rois, *args)
    assert out.dtype == dtype
    assert torch.equal(out, roi_align(x.contiguous(memory_format=torch.channels_last), rois,
                                      *args).contiguous())
    ref = torchvision.ops.roi_align(x.double(), rois.double(), *args)
    torch.testing.assert_close(out.double(), ref, **TOLERANCES[dtype])


# Bins (rows of the tile transpose): 49 (6 blocks of 8 and one), 64 (whole blocks), 6 and 1 (less
# than a block); channels (its columns): 520 (a 512-column panel and a tail), 45, 8 and 3.
@pytest.mark.parametrize("output_size", [(7, 7), (8, 8), (3, 2), (1, 1)], ids=str)
@pytest.mark.parametrize("channels", [520, 45, 8, 3])
def test_roi_pool_nchw_tiles_match_torchvision_exactly(output_size, channels):
    x = torch.randn(2, channels, 13, 17)
    rois = sparse_boxes(2, 13, 17, 0.5, count=6)
    out, argmax = torch.ops.fastconv.roi_pool(x, rois, 0.5, *output_size)
    ref, ref_argmax = torch.ops.torchvision.roi_pool(x, rois, 0.5, *output_size)
    assert out.is_contiguous() and argmax.is_contiguous()
    assert torch.equal(out, ref) and torch.equal(argmax, ref_argmax)
    out_l, argmax_l = torch.ops.fastconv.roi_pool(
        x.contiguous(memory_format=torch.channels_last), rois, 0.5, *output_size)
    assert torch.equal(out_l, ref) and torch.equal(argmax_l, ref_argmax)


def test_roi_pool_nchw_tiles_keep_argmax_bits_and_empty_bins():
    # -1 (empty bins, boxes outside the map) and large indices survive the 32-bit transpose
    x = torch.randn(1, 24, 300, 301)
    rois = torch.tensor([[0, 0, 0, 300, 299], [0, 290, 280, 300, 299], [0, 400, 400, 500, 500],
                         [0, -50, -50, -10, -10]], dtype=torch.float32)
    out, argmax = torch.ops.fastconv.roi_pool(x, rois, 1.0, 7, 7)
    ref, ref_argmax = torch.ops.torchvision.roi_pool(x, rois, 1.0, 7, 7)
    assert torch.equal(out, ref) and torch.equal(argmax, ref_argmax)
    assert (argmax == -1).any() and argmax.max() > 2**16


@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_nchw_no_boxes(op):
    x = torch.randn(2, 45, 9, 11, requires_grad=True)
    rois = torch.zeros(0, 5)
    if op == "roi_pool":
        out = roi_pool(x, rois, (7, 7), 0.5)
    else:
        out = roi_align(x, rois, (7, 7), 0.5, 2, True)
    assert out.shape == (0, 45, 7, 7)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.zeros_like(x))

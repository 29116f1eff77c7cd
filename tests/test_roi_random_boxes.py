"""roi_align and roi_pool on random maps and boxes (fixed seeds) against torchvision, forward and
backward, NCHW and channels_last, fp32 and fp64, on every device of the fixture (torchvision
runs on the CPU). The boxes are drawn anywhere around the map (partly or wholly outside it
along either axis, tiny, large), with random scales,
output sizes, sampling ratios and `aligned`: the edge cases of roi_testing.edge_case_boxes come
from a list, these from chance (a box beside the map, rows in and columns out, crashed the NCHW
backward before it was in that list)."""
import random

import pytest
import torch
import torchvision.ops as tv

import fastconv.ops as fo
from fastconv.testing import TOLERANCES


def draw(rng):
    n, c, h, w = rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 20), rng.randint(1, 20)
    dtype = rng.choice([torch.float32, torch.float64])
    fmt = rng.choice([torch.contiguous_format, torch.channels_last])
    x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=fmt)
    k = rng.randint(0, 6)
    scale = rng.choice([1.0, 0.5, 0.25, 2.0])
    size = torch.tensor([w, h, w, h], dtype=dtype) / scale  # the map in image pixels
    corner = torch.rand(k, 4, dtype=dtype) * size * 1.5 - 3 / scale
    corner[:, 2:] = corner[:, :2] + torch.rand(k, 2, dtype=dtype) * rng.choice([0.5, 5, 20])
    boxes = torch.cat([torch.randint(0, n, (k, 1)).to(dtype), corner], 1)
    return x, boxes, (rng.randint(1, 5), rng.randint(1, 5)), scale


def forward_and_grad(fn, x, boxes, grad, device="cpu"):
    x = x.detach().to(device).requires_grad_()
    y = fn(x, boxes.to(device))
    gx = torch.autograd.grad(y, x, grad.to(device))[0] if y.numel() else torch.zeros_like(x)
    return y.cpu(), gx.cpu()


@pytest.mark.parametrize("seed", range(8))
def test_random_boxes_match_torchvision(device, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for _ in range(25):
        x, boxes, size, scale = draw(rng)
        ratio, aligned = rng.choice([-1, 0, 1, 2, 3]), rng.random() < 0.5
        tol = TOLERANCES[x.dtype]
        what = f"x{list(x.shape)} {x.dtype} boxes {boxes.tolist()} size {size} scale {scale}"

        def align(ours):
            op = fo.roi_align if ours else tv.roi_align
            return lambda t, b: op(t, b, size, scale, ratio, aligned)

        grad = torch.randn(boxes.shape[0], x.shape[1], *size, dtype=x.dtype)
        y, gx = forward_and_grad(align(True), x, boxes, grad, device)
        y_ref, gx_ref = forward_and_grad(align(False), x, boxes, grad)
        torch.testing.assert_close(y, y_ref, **tol, msg=f"roi_align {what}")
        torch.testing.assert_close(gx, gx_ref, **tol, msg=f"roi_align grad {what}")

        y, gx = forward_and_grad(lambda t, b: fo.roi_pool(t, b, size, scale), x, boxes, grad,
                                 device)
        y_ref, gx_ref = forward_and_grad(lambda t, b: tv.roi_pool(t, b, size, scale), x, boxes, grad)
        assert torch.equal(y, y_ref), f"roi_pool {what}"  # a max: exact
        torch.testing.assert_close(gx, gx_ref, **tol, msg=f"roi_pool grad {what}")

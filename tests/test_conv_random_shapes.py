"""conv2d and conv_transpose2d on random geometries (fixed seeds) against torch in fp64: the
forward pass, the three gradients and the output's memory format, in fp32 (the hand-written
CPU kernels; the SIMT CUDA kernels, TF32 off) and fp64, NCHW and channels_last, on every device
of the fixture. The shape tables of the other test files hold the cases someone thought of;
this one draws strides, paddings, dilations, output paddings, groups and sizes
independently, so combinations nobody listed are compared too (it found the
output_padding >= stride case of conv_transpose2d, now also in tests/test_conv_transpose2d.py).
Geometries torch rejects must be rejected too; the one deliberate difference is a transposed
convolution whose output has a zero size, which torch returns empty and fastconv rejects (the
issue asks for an error on output sizes <= 0)."""
import random

import pytest
import torch
import torch.nn.functional as TF

import fastconv.nn.functional as F
from conv_helpers import assert_within_rounding, no_tf32, reference  # noqa: F401 (fixture)

CONFIGS_PER_SEED = 40


def draw(rng):
    """One random geometry: (transposed, x shape, w shape, kwargs, dtype, channels_last)."""
    groups = rng.choice([1, 1, 1, 2, 3])
    c, k = groups * rng.randint(1, 10), groups * rng.randint(1, 10)
    if rng.random() < 0.15:  # depthwise, multiplier 1 or 2
        groups, k = c, c * rng.choice([1, 2])
    r, s = rng.randint(1, 6), rng.randint(1, 6)
    kw = dict(stride=(rng.randint(1, 3), rng.randint(1, 3)),
              padding=(rng.randint(0, 4), rng.randint(0, 4)),
              dilation=(rng.randint(1, 2), rng.randint(1, 2)), groups=groups)
    transposed = rng.random() < 0.4
    n, h, w = rng.randint(0, 3), rng.randint(1, 24), rng.randint(1, 24)
    if transposed:
        kw["output_padding"] = tuple(rng.randint(0, max(kw["stride"][d], kw["dilation"][d]) - 1)
                                     for d in range(2))
        w_shape = (c, k // groups, r, s)
    else:
        w_shape = (k, c // groups, r, s)
    return (transposed, (n, c, h, w), w_shape, kw, rng.choice([torch.float32, torch.float64]),
            rng.random() < 0.5)


@pytest.mark.parametrize("seed", range(10))
def test_random_geometries_match_torch(device, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    compared = 0
    for _ in range(CONFIGS_PER_SEED):
        transposed, x_shape, w_shape, kw, dtype, channels_last = draw(rng)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(x_shape, dtype=dtype, device=device).contiguous(memory_format=fmt)
        x.requires_grad_()
        wt = torch.randn(w_shape, dtype=dtype, device=device).requires_grad_()
        out_channels = w_shape[1] * kw["groups"] if transposed else w_shape[0]
        b = torch.randn(out_channels, dtype=dtype, device=device).requires_grad_()
        ours = F.conv_transpose2d if transposed else F.conv2d
        theirs = TF.conv_transpose2d if transposed else TF.conv2d
        what = f"{'conv_transpose2d' if transposed else 'conv2d'} x{list(x_shape)} w{list(w_shape)} {kw} {dtype} {fmt}"
        try:
            expected = theirs(x, wt, b, **kw)
        except RuntimeError:
            with pytest.raises(RuntimeError, match="fastconv::"):
                ours(x, wt, b, **kw)
            continue
        if transposed and 0 in expected.shape[2:]:
            with pytest.raises(RuntimeError, match="expected an output of at least 1x1"):
                ours(x, wt, b, **kw)
            continue
        y = ours(x, wt, b, **kw)
        assert y.shape == expected.shape, what
        # the memory format torch picks (channels_last in, channels_last out, with torch's
        # rules for tensors that are both)
        assert y.stride() == expected.stride() or y.numel() == 0, what

        def ref(*t):
            return theirs(*t, **kw)

        exact, magnitude = reference(ref, x, wt, b)
        reduced = w_shape[0] // kw["groups"] if transposed else w_shape[1]
        taps = w_shape[2] * w_shape[3]
        assert_within_rounding(y, exact, magnitude, reduced * taps + 1, f"forward {what}")
        grad = torch.randn(y.shape, dtype=dtype, device=device).contiguous(memory_format=fmt)
        gx, gw, gb = torch.autograd.grad(y, (x, wt, b), grad)
        d = [t.detach().double().requires_grad_() for t in (x, wt)]
        go = grad.double()
        rx, rw = torch.autograd.grad(ref(*d), d, go)
        ax = torch.autograd.grad(ref(d[0], d[1].detach().abs()), d[0], go.abs())[0]
        aw = torch.autograd.grad(ref(d[0].detach().abs(), d[1]), d[1], go.abs())[0]
        other = w_shape[1] if transposed else w_shape[0] // kw["groups"]
        assert_within_rounding(gx, rx, ax, other * taps, f"grad_input {what}")
        pixels = x_shape[0] * max(x_shape[2] * x_shape[3], y.shape[2] * y.shape[3])
        assert_within_rounding(gw, rw, aw, max(1, pixels), f"grad_weight {what}")
        assert_within_rounding(gb, go.sum((0, 2, 3)), go.abs().sum((0, 2, 3)),
                               max(1, y.shape[0] * y.shape[2] * y.shape[3]), f"grad_bias {what}")
        compared += 1
    assert compared >= CONFIGS_PER_SEED // 2  # most draws are valid geometries

"""conv_transpose2d (the input-gradient op plus a bias) against F.conv_transpose2d and an fp64
reference, on every device; gradcheck and gradgradcheck, torch.compile, output sizes."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv.nn.functional as F
from conv_helpers import (DTYPES, FORMATS, assert_compiled_matches_eager,  # noqa: F401
                          assert_same_error_eagerly_and_under_fake_tensors, assert_within_rounding,
                          make, no_tf32, reference)

# (input shape, weight shape (C_in, C_out / groups, R, S), stride, padding, output_padding,
#  groups, dilation)
CASES = [
    ((2, 8, 5, 6), (8, 6, 1, 1), 1, 0, 0, 1, 1),              # 1x1
    ((1, 6, 4, 5), (6, 3, 3, 3), 2, 1, 1, 1, 1),              # stride 2 with output_padding
    ((2, 4, 5, 5), (4, 2, 3, 3), 1, 2, 0, 2, 2),              # groups + dilation
    ((2, 6, 4, 4), (6, 1, 3, 3), 2, 1, 1, 6, 1),              # depthwise, output_padding
    ((2, 4, 3, 4), (4, 5, 4, 2), (3, 2), (1, 0), (2, 1), 1, (1, 2)),  # non-square
    ((1, 3, 4, 4), (3, 2, 7, 7), 2, 3, 1, 1, 1),              # 7x7 stride 2, C=3
    ((0, 4, 5, 5), (4, 3, 3, 3), 2, 1, 0, 1, 1),              # empty batch
    ((4, 5, 6), (4, 3, 3, 3), 1, 1, 0, 1, 1),                 # unbatched 3-D input
    ((2, 4, 5, 5), (4, 3, 3, 3), 1, 0, 1, 1, 2),              # output_padding < dilation
    # output_padding >= stride with padding: the padding crops the full result's far end and
    # the output_padding rows/columns bring part of it back (inputs reach them)
    ((2, 4, 5, 5), (4, 3, 3, 3), 1, (1, 2), 1, 1, 2),
    ((1, 4, 4, 5), (4, 2, 3, 2), 2, 2, 2, 2, 3),              # output_padding // stride = 1
]


def case_id(case):
    return "-".join(str(v) for v in case).replace(" ", "")


def kwargs(case):
    _, _, stride, padding, output_padding, groups, dilation = case
    return dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                dilation=dilation)


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_backward_match_torch(device, case, dtype, memory_format):
    x_shape, w_shape = case[0], case[1]
    kw = kwargs(case)
    groups = case[5]
    x = make(x_shape, dtype, device, memory_format, requires_grad=True)
    w = make(w_shape, dtype, device, requires_grad=True)
    b = make((w_shape[1] * groups,), dtype, device, requires_grad=True)
    y = F.conv_transpose2d(x, w, b, **kw)
    exact, magnitude = reference(lambda *t: TF.conv_transpose2d(*t, **kw), x, w, b)
    # each output element sums at most (C_in / groups) * R * S products, plus the bias
    terms = w_shape[0] // groups * w_shape[2] * w_shape[3] + 1
    # the bias is added to the rounded sum (as a separate op): two roundings in fp16 / bf16
    assert_within_rounding(y, exact, magnitude, terms, "forward", roundings=2)
    if dtype in (torch.float32, torch.float64):
        ref = TF.conv_transpose2d(x, w, b, **kw)
        assert y.shape == ref.shape and y.stride() == ref.stride()

    grad = make(y.shape, dtype, device, memory_format)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), grad)
    r = [t.detach().double().requires_grad_() for t in (x, w)]
    go = grad.double()
    rx, rw = torch.autograd.grad(TF.conv_transpose2d(*r, **kw), r, go)
    ax = torch.autograd.grad(TF.conv_transpose2d(r[0], r[1].detach().abs(), **kw), r[0],
                             go.abs())[0]
    aw = torch.autograd.grad(TF.conv_transpose2d(r[0].detach().abs(), r[1], **kw), r[1],
                             go.abs())[0]
    n = x_shape[0] if len(x_shape) == 4 else 1
    assert_within_rounding(gx, rx, ax, w_shape[1] * w_shape[2] * w_shape[3], "dx")
    assert_within_rounding(gw, rw, aw, max(1, n * x_shape[-2] * x_shape[-1]), "dw")
    dims = [0, 2, 3] if go.dim() == 4 else [1, 2]
    assert_within_rounding(gb, go.sum(dims), go.abs().sum(dims),
                           max(1, go.numel() // b.numel()), "db")


def test_gradcheck_and_gradgradcheck(device):
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)

    def fn(x, w, b):
        return F.conv_transpose2d(x, w, b, stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
                                  groups=2, dilation=(1, 2))

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_gradcheck_channels_last(device):
    x = torch.randn(1, 3, 3, 3, dtype=torch.float64, device=device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda a, b: F.conv_transpose2d(a, b, stride=2, padding=1, output_padding=1), (x, w))


def test_torch_compile_fullgraph_matches_eager(device):
    def f(x, w, b):
        return F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1).sum()

    x = torch.randn(2, 4, 5, 5, device=device)
    w = torch.randn(4, 3, 3, 3, device=device)
    b = torch.randn(3, device=device)
    assert_compiled_matches_eager(f, (x, w, b))


BAD = [
    (dict(stride=1, output_padding=1), "expected output_padding >= 0 and smaller than stride "
                                       "or dilation"),
    (dict(stride=2, output_padding=2), "expected output_padding >= 0 and smaller than stride"),
    (dict(padding=-1), "expected padding >= 0"),
    (dict(stride=0), "expected stride >= 1"),
    (dict(padding=4), "expected an output of at least 1x1"),
    (dict(groups=3), "divisible by groups"),
]


@pytest.mark.parametrize("kw, message", BAD, ids=lambda v: str(v)[:30])
def test_bad_arguments_raise_clear_errors(kw, message):
    x, w = torch.randn(1, 4, 3, 3), torch.randn(4, 2, 3, 3)
    assert_same_error_eagerly_and_under_fake_tensors(
        lambda a, b: F.conv_transpose2d(a, b, **kw), (x, w), message)


def test_channel_mismatch_is_reported_in_conv_transpose_terms():
    with pytest.raises(RuntimeError, match=r"fastconv::conv_transpose2d: expected input with "
                                           r"weight.size\(0\) = 4 channels"):
        F.conv_transpose2d(torch.randn(1, 3, 5, 5), torch.randn(4, 2, 3, 3))

"""fastconv.nn.Conv2d / ConvTranspose2d as drop-ins for torch's modules, and conv2d's errors
for bad input (the same message eagerly and under fake tensors)."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv
import fastconv.nn.functional as F
from conv_helpers import assert_same_error_eagerly_and_under_fake_tensors, no_tf32  # noqa: F401

_ops = torch.ops.fastconv


def _close(a, b):
    # fp32 sums of <= 48 products of N(0, 1) values, computed in another order than torch's
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv2d_module_is_a_drop_in(device, padding_mode):
    kw = dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(1, 1),
              dilation=1, groups=2, bias=True, padding_mode=padding_mode)
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(**kw).to(device)
    torch.manual_seed(0)
    ours = fastconv.nn.Conv2d(**kw).to(device)
    assert isinstance(ours, torch.nn.Conv2d)
    assert repr(ours) == repr(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():  # same initialization from the same seed
        assert torch.equal(ours.state_dict()[key], value)
    x = torch.randn(2, 4, 7, 8, device=device, requires_grad=True)
    _close(ours(x), ref(x))
    gx, gw = torch.autograd.grad(ours(x).square().sum(), (x, ours.weight))
    rx, rw = torch.autograd.grad(ref(x).square().sum(), (x, ref.weight))
    _close(gx, rx)
    _close(gw, rw)


def test_state_dict_round_trip(device):
    ref = torch.nn.Conv2d(3, 5, 3, padding="same", bias=False).to(device)
    ours = fastconv.nn.Conv2d(3, 5, 3, padding="same", bias=False).to(device)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 6, 6, device=device)
    _close(ours(x), ref(x))
    back = torch.nn.Conv2d(3, 5, 3, padding="same", bias=False).to(device)
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.weight, ref.weight)


def test_conv_transpose2d_module_is_a_drop_in(device):
    kw = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1,
              output_padding=1, groups=2, dilation=1)
    torch.manual_seed(1)
    ref = torch.nn.ConvTranspose2d(**kw).to(device)
    torch.manual_seed(1)
    ours = fastconv.nn.ConvTranspose2d(**kw).to(device)
    assert isinstance(ours, torch.nn.ConvTranspose2d)
    assert repr(ours) == repr(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    x = torch.randn(2, 4, 5, 4, device=device)
    _close(ours(x), ref(x))
    # output_size picks the output_padding (torch's _output_padding rule)
    for size in ([9, 7], [10, 8], [2, 6, 10, 8]):
        out = ours(x, output_size=size)
        assert out.shape[-2:] == ref(x, output_size=size).shape[-2:] == tuple(size[-2:])
        _close(out, ref(x, output_size=size))
    with pytest.raises(ValueError):
        ours(x, output_size=[12, 8])  # outside the reachable range: torch's error
    with pytest.raises(ValueError):
        fastconv.nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect")


def test_modules_in_channels_last_and_unbatched(device):
    conv = fastconv.nn.Conv2d(3, 4, 3, padding=1).to(device)
    ref = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 5, 5, device=device).contiguous(memory_format=torch.channels_last)
    y = conv(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _close(y, ref(x))
    _close(conv(x[0]), ref(x[0]))


# Bad input: (input shape, weight shape, keyword arguments, message part). Each must raise a
# RuntimeError "fastconv::conv2d: expected ..." (or the Python layer's equivalent).
BAD = [
    ((1, 6, 5, 5), (4, 3, 3, 3), dict(groups=4), "input channels divisible by groups, got 6"),
    ((1, 6, 5, 5), (6, 2, 3, 3), dict(groups=4), "input channels divisible by groups"),
    ((1, 4, 5, 5), (6, 2, 3, 3), dict(groups=4), "output channels (weight.size(0)) divisible"),
    ((1, 4, 5, 5), (6, 3, 3, 3), dict(), "weight.size(1) * groups equal to the input's 4 "
                                         "channels"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(groups=2), "weight.size(1) * groups equal"),
    ((1, 4, 2, 2), (6, 4, 3, 3), dict(), "expected an output of at least 1x1, got 0x0"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(dilation=3), "expected an output of at least 1x1"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(padding=-1), "expected padding >= 0, got [-1, -1]"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(stride=0), "expected stride >= 1, got [0, 0]"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(dilation=(1, 0)), "expected dilation >= 1"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(groups=0), "expected groups >= 1, got 0"),
    ((1, 1, 4, 5, 5), (6, 4, 3, 3), dict(), "got 5-D input"),
    ((4, 5), (6, 4, 3, 3), dict(), "got 2-D input"),
    ((1, 4, 5, 5), (6, 4, 3), dict(), "expected a 4-D weight (K, C / groups, R, S), got 3-D"),
    ((1, 0, 5, 5), (6, 0, 3, 3), dict(), "non-zero channel and spatial sizes"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(stride=2, padding="same"),
     "expected stride 1 with padding='same'"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(padding="full"), "expected padding to be an int, a pair"),
    ((1, 4, 5, 5), (6, 4, 3, 3), dict(stride=(1, 2, 3)), "expected stride to be an int or a pair"),
]


@pytest.mark.parametrize("x_shape, w_shape, kw, message", BAD, ids=lambda v: str(v)[:40])
def test_bad_input_raises_the_same_error_eagerly_and_under_fake_tensors(x_shape, w_shape, kw,
                                                                         message):
    x, w = torch.randn(x_shape), torch.randn(w_shape)
    assert_same_error_eagerly_and_under_fake_tensors(
        lambda a, b: F.conv2d(a, b, **kw), (x, w), message, match="fastconv::conv2d: expected")


def test_bad_dtypes_and_bias():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3)
    cases = [
        ((x.long(), w.long(), None), "expected input of dtype float32, float64, float16 or "
                                     "bfloat16, got Long"),
        ((x, w.double(), None), "expected weight of the input's dtype Float, got Double"),
        ((x, w, torch.randn(6, dtype=torch.float64)), "expected bias of the input's dtype"),
        ((x, w, torch.randn(5)), "expected a 1-D bias of 6 elements"),
        ((x, w, torch.randn(6, 1)), "expected a 1-D bias of 6 elements"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match="fastconv::conv2d: expected") as e:
            F.conv2d(*args)
        assert message in str(e.value)


def test_gradient_ops_reject_inconsistent_shapes():
    w = torch.randn(6, 4, 3, 3)
    geo = ([1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match=r"fastconv::_conv2d_input_grad: expected grad_output "
                                           r"of shape \[2, 6, 3, 3\]"):
        _ops._conv2d_input_grad(torch.randn(2, 6, 3, 4), w, [2, 4, 5, 5], *geo)
    with pytest.raises(RuntimeError, match=r"fastconv::_conv2d_input_grad: expected a 3-D"):
        _ops._conv2d_input_grad(torch.randn(2, 6, 3, 3), w, [4, 5], *geo)
    with pytest.raises(RuntimeError, match=r"fastconv::_conv2d_weight_grad: expected grad_output "
                                           r"of shape \[2, 6, 3, 3\]"):
        _ops._conv2d_weight_grad(torch.randn(2, 5, 3, 3), torch.randn(2, 4, 5, 5),
                                 [6, 4, 3, 3], *geo)
    with pytest.raises(RuntimeError, match=r"_conv2d_weight_grad: expected weight_size.size\(1\)"):
        _ops._conv2d_weight_grad(torch.randn(2, 6, 3, 3), torch.randn(2, 4, 5, 5),
                                 [6, 3, 3, 3], *geo)
    with pytest.raises(RuntimeError, match=r"_conv2d_weight_grad: expected input of the "
                                           r"grad_output's dtype"):
        _ops._conv2d_weight_grad(torch.randn(2, 6, 3, 3), torch.randn(2, 4, 5, 5).double(),
                                 [6, 4, 3, 3], *geo)


def test_empty_batch_gives_zero_weight_gradient(device):
    x = torch.randn(0, 3, 5, 5, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 4, 5, 5)
    gx, gw, gb = torch.autograd.grad(y.sum(), (x, w, b))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w))
    assert torch.equal(gb, torch.zeros_like(b))


def test_autocast_casts_like_torch():
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = F.conv2d(x, w), TF.conv2d(x, w)
        assert ours.dtype == ref.dtype == torch.bfloat16
        ours_t = F.conv_transpose2d(x, w.transpose(0, 1))
        ref_t = TF.conv_transpose2d(x, w.transpose(0, 1))
        assert ours_t.dtype == ref_t.dtype == torch.bfloat16

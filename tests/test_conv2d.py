"""conv2d and its two gradient ops against torch.nn.functional.conv2d / torch.nn.grad and an
fp64 reference, on every device; gradcheck, opcheck, torch.compile, determinism."""
import pytest
import torch
import torch.nn.functional as TF

import fastconv.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from conv_helpers import (CASES, DTYPES, FORMATS, NUMERIC_CASES,  # noqa: F401
                          assert_compiled_matches_eager, assert_within_rounding, case_id, make,
                          no_tf32, reference)

_ops = torch.ops.fastconv


def conv_args(case):
    _, _, stride, padding, dilation, groups = case
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def pairs(case):
    """(stride, padding, dilation, groups) as the private ops take them."""
    _, _, s, p, d, g = case
    two = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    return two(s), two(p), two(d), g


def output_like_torch(ours, ref):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert ours.stride() == ref.stride(), "memory format differs from PyTorch's"


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_backward_match_torch(device, case, dtype, memory_format):
    x_shape, w_shape = case[0], case[1]
    kw = conv_args(case)
    x = make(x_shape, dtype, device, memory_format, requires_grad=True)
    w = make(w_shape, dtype, device, requires_grad=True)
    b = make((w_shape[0],), dtype, device, requires_grad=True)
    y = F.conv2d(x, w, b, **kw)
    exact, magnitude = reference(lambda *t: TF.conv2d(*t, **kw), x, w, b)
    terms = w_shape[1] * w_shape[2] * w_shape[3] + 1
    assert_within_rounding(y, exact, magnitude, terms, "forward")
    if dtype in (torch.float32, torch.float64):  # torch's CPU conv has these everywhere
        output_like_torch(y, TF.conv2d(x, w, b, **kw))
    else:
        assert y.shape == exact.shape and y.dtype == dtype
        assert y.numel() == 0 or y.is_contiguous(
            memory_format=memory_format if len(x_shape) == 4 else torch.contiguous_format)

    grad = make(y.shape, dtype, device, memory_format)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), grad)
    ref = [t.detach().double().requires_grad_() for t in (x, w, b)]
    go = grad.double()
    rx, rw, rb = torch.autograd.grad(TF.conv2d(*ref, **kw), ref, go)
    # magnitudes: the same sums over |values| (each gradient is linear in both its operands)
    ax = torch.autograd.grad(TF.conv2d(ref[0], ref[1].detach().abs(), **kw), ref[0],
                             go.abs())[0]
    aw = torch.autograd.grad(TF.conv2d(ref[0].detach().abs(), ref[1], **kw), ref[1],
                             go.abs())[0]
    n = x_shape[0] if len(x_shape) == 4 else 1
    assert_within_rounding(gx, rx, ax, w_shape[0] // case[5] * w_shape[2] * w_shape[3], "dx")
    assert_within_rounding(gw, rw, aw, max(1, n * y.shape[-2] * y.shape[-1]), "dw")
    assert_within_rounding(gb, rb, go.abs().sum([0, 2, 3] if go.dim() == 4 else [1, 2]),
                           max(1, go.numel() // w_shape[0]), "db")
    assert gx.stride() == x.stride() or x.numel() == 0


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("case", NUMERIC_CASES, ids=case_id)
def test_gradient_ops_match_torch_nn_grad(device, case, memory_format):
    x_shape, w_shape = case[0], case[1]
    x = make(x_shape, torch.float64, device, memory_format)
    w = make(w_shape, torch.float64, device)
    s, p, d, g = pairs(case)
    go = make(TF.conv2d(x, w, None, s, p, d, g).shape, torch.float64, device, memory_format)
    gx = _ops._conv2d_input_grad(go, w, list(x_shape), s, p, d, g)
    gw = _ops._conv2d_weight_grad(go, x, list(w_shape), s, p, d, g)
    if len(x_shape) == 3:  # torch.nn.grad takes batched tensors only
        ref_x = torch.nn.grad.conv2d_input((1, *x_shape), w, go[None], s, p, d, g)[0]
        ref_w = torch.nn.grad.conv2d_weight(x[None], w_shape, go[None], s, p, d, g)
    else:
        ref_x = torch.nn.grad.conv2d_input(x_shape, w, go, s, p, d, g)
        ref_w = torch.nn.grad.conv2d_weight(x, w_shape, go, s, p, d, g)
    torch.testing.assert_close(gx, ref_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, ref_w, rtol=1e-12, atol=1e-12)
    # the weight gradient comes in PyTorch's memory format (convolution_backward's; its weight
    # here is contiguous, so its rule follows x: channels_last for a channels_last batch). Its
    # CPU rule: on CUDA, torch keeps fp64 convolutions contiguous (cudnn_conv_suggest_memory_format)
    if len(x_shape) == 4:
        torch_gw = torch.ops.aten.convolution_backward(go.cpu(), x.cpu(), w.cpu(), None, s, p, d,
                                                       False, [0, 0], g, [False, True, False])[1]
        assert gw.stride() == torch_gw.stride()
    else:
        assert gw.is_contiguous()


def test_only_requested_gradients_are_computed(device):
    x = torch.randn(2, 3, 6, 6, device=device)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    y = F.conv2d(x, w)
    # Only the weight gradient is requested: the input gradient op must not run.
    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record():
        (gw,) = torch.autograd.grad(y.sum(), w)
    assert any("_conv2d_weight_grad" in c for c in calls)
    assert not any("_conv2d_input_grad" in c for c in calls)
    assert gw.shape == w.shape


def test_graph_recorded_only_when_a_gradient_can_be_asked_for(device):
    # the C++ autograd kernel (csrc/cpu/conv2d_autograd.cpp) runs the op below autograd when
    # nothing requires grad or grad mode is off, and records a node otherwise, for any one
    # operand: here the bias alone, whose gradient is grad summed over batch and space
    x = torch.randn(2, 3, 6, 6, device=device)
    w = torch.randn(4, 3, 3, 3, device=device)
    b = torch.randn(4, device=device)
    assert F.conv2d(x, w, b).grad_fn is None
    grad_out = torch.randn(2, 4, 4, 4, device=device)
    dx = torch.ops.fastconv._conv2d_input_grad(grad_out, w, [2, 3, 6, 6], [1, 1], [0, 0], [1, 1], 1)
    assert dx.grad_fn is None
    b.requires_grad_(True)
    with torch.no_grad():
        assert F.conv2d(x, w, b).grad_fn is None
    y = F.conv2d(x, w, b)
    assert y.grad_fn is not None
    g = torch.randn_like(y)
    (gb,) = torch.autograd.grad(y, b, g)
    torch.testing.assert_close(gb, g.sum(dim=[0, 2, 3]))


def test_non_contiguous_operands(device):
    base = torch.randn(4, 10, 13, 12, device=device)
    x = base[::2, 1::2, 1:12, ::2]  # strided in every dimension
    w = torch.randn(6, 5, 3, 3, device=device).transpose(2, 3)
    assert not x.is_contiguous() and not w.is_contiguous()
    exact, magnitude = reference(lambda a, b: TF.conv2d(a, b, padding=1), x, w)
    assert_within_rounding(F.conv2d(x, w, padding=1), exact, magnitude, 5 * 9, "forward")


@pytest.mark.parametrize("x_format, w_format", [
    (torch.contiguous_format, torch.channels_last),
    (torch.channels_last, torch.contiguous_format),
    (torch.channels_last, torch.channels_last)], ids=str)
def test_output_memory_format_follows_torch(device, x_format, w_format):
    x = torch.randn(2, 4, 6, 6, device=device).contiguous(memory_format=x_format)
    w = torch.randn(8, 4, 3, 3, device=device).contiguous(memory_format=w_format)
    ours, ref = F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1)
    assert ours.stride() == ref.stride()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)  # 36-term fp32 sums
    # the gradient of a sum arrives expanded (no format): grad_input still follows torch's
    for padding in (1, "same"):
        grads = []
        for fn in (F.conv2d, TF.conv2d):
            xg = x.clone().requires_grad_()
            (g,) = torch.autograd.grad(fn(xg, w[..., :2, :2], padding=padding).sum(), xg)
            grads.append(g)
        assert grads[0].stride() == grads[1].stride(), padding
    # the weight gradient takes the weight's format, as torch's
    wg = [w.clone().requires_grad_() for _ in range(2)]
    F.conv2d(x, wg[0], padding=1).sum().backward()
    TF.conv2d(x, wg[1], padding=1).sum().backward()
    assert wg[0].grad.stride() == wg[1].grad.stride()


def test_gradcheck_and_gradgradcheck(device):
    # fp64, every input differentiable; groups, stride, dilation and padding all non-trivial.
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)

    def fn(x, w, b):
        return F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_gradcheck_channels_last_and_unbatched(device, memory_format):
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: F.conv2d(a, b, padding="same"), (x, w))
    xu = torch.randn(3, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: F.conv2d(a, b, padding=1), (xu, w))


def _opcheck_cases(device, memory_format):
    x = make((2, 4, 7, 6), torch.float32, device, memory_format, requires_grad=True)
    w = make((6, 2, 3, 3), torch.float32, device, requires_grad=True)
    b = make((6,), torch.float32, device, requires_grad=True)
    geo = ([2, 1], [1, 1], [1, 2], 2)
    go = make((2, 6, 4, 4), torch.float32, device, memory_format, requires_grad=True)
    return [
        (_ops.conv2d.default, (x, w, b, *geo)),
        (_ops.conv2d.default, (x, w, None, *geo)),
        (_ops._conv2d_input_grad.default, (go, w, [2, 4, 7, 6], *geo)),
        (_ops._conv2d_weight_grad.default, (go, x, [6, 2, 3, 3], *geo)),
    ]


@pytest.mark.parametrize("index", range(4), ids=["conv2d", "conv2d-no-bias", "input_grad",
                                                  "weight_grad"])
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_opcheck(device, index, memory_format):
    op, args = _opcheck_cases(device, memory_format)[index]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_torch_compile_fullgraph_matches_eager(device, memory_format):
    def f(x, w, b):
        y = F.conv2d(x, w, b, stride=2, padding=1, groups=2)
        return F.conv2d(y.relu(), w[:, :2].contiguous(), padding="same", groups=3).square().sum()

    x = make((2, 4, 9, 8), torch.float32, device, memory_format)
    w = make((6, 2, 3, 3), torch.float32, device)
    b = make((6,), torch.float32, device)
    assert_compiled_matches_eager(f, (x, w, b))


def test_torch_compile_inductor_and_dynamic_shapes(device):
    w = torch.randn(5, 3, 3, 3, device=device)
    compiled = torch.compile(lambda t: F.conv2d(t, w, padding=1) + 1, fullgraph=True)
    x = torch.randn(2, 3, 8, 8, device=device)
    assert torch.equal(compiled(x), F.conv2d(x, w, padding=1) + 1)
    dynamic = torch.compile(lambda t: F.conv2d(t, w, stride=2), fullgraph=True,
                            backend="aot_eager", dynamic=True)
    for shape in [(1, 3, 9, 9), (3, 3, 12, 7)]:
        x = torch.randn(shape, device=device)
        assert torch.equal(dynamic(x), F.conv2d(x, w, stride=2))


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_deterministic_across_runs_and_thread_counts(device, memory_format):
    x = make((3, 16, 12, 11), torch.float32, device, memory_format, requires_grad=True)
    w = make((24, 8, 3, 3), torch.float32, device, requires_grad=True)

    def run():
        y = F.conv2d(x, w, stride=1, padding=1, groups=2)
        return (y, *torch.autograd.grad(y, (x, w), torch.ones_like(y)))

    threads = torch.get_num_threads()
    first = run()
    try:
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, run(), single):
        assert torch.equal(a, b) and torch.equal(a, c)

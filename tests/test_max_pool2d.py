"""max_pool2d / max_pool2d_with_indices against torch.nn.functional, on every device."""
import pytest
import torch
import torch.nn.functional as TF
from torch._subclasses.fake_tensor import FakeTensorMode

import fastconv
import fastconv.nn.functional as F
from fastconv.testing import distinct_values, tolerances

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# (input shape, kernel, stride, padding, dilation, ceil_mode): the edge cases of the issue.
CASES = [
    ((2, 3, 9, 9), 3, 2, 1, 1, False),          # ResNet stem shape, overlapping windows
    ((2, 3, 10, 7), 3, 2, 1, 1, True),          # ceil_mode with an overhanging last window
    ((1, 4, 5, 5), 2, 1, 0, 2, False),          # dilation
    ((2, 5, 13, 11), 3, 3, 1, 2, True),         # dilation + ceil_mode + padding
    ((1, 1, 1, 1), 1, 1, 0, 1, False),          # 1x1 input
    ((2, 3, 6, 6), 6, 6, 0, 1, False),          # kernel = input
    ((2, 3, 11, 11), 2, 4, 0, 1, False),        # stride > kernel (gaps between windows)
    ((2, 3, 8, 8), 4, 3, 2, 1, True),           # padding = kernel / 2 with ceil_mode
    ((3, 2, 7, 6), (3, 2), (1, 2), (1, 0), (1, 2), True),  # non-square everything
    ((0, 3, 8, 8), 2, 2, 0, 1, False),          # empty batch
    ((3, 9, 9), 3, 2, 1, 1, False),             # unbatched 3-D input
    ((1, 2, 5, 17), (1, 3), None, (0, 1), 1, True),  # stride defaults to the kernel
]
FORMATS = [torch.contiguous_format, torch.channels_last]


def make_input(shape, dtype, device, memory_format, ties=True):
    x = torch.randn(shape, dtype=torch.float32, device=device)
    if ties:  # rounding creates many equal values: exercises the tie rule
        x = x.round(decimals=1)
    x = x.to(dtype)
    if len(shape) == 4:
        x = x.contiguous(memory_format=memory_format)
    return x


def both(x, case, **kw):
    _, k, s, p, d, ceil = case
    ours = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True, **kw)
    ref = TF.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True, **kw)
    return ours, ref


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_forward_and_backward_match_torch(device, case, dtype, memory_format):
    x = make_input(case[0], dtype, device, memory_format)
    (out, idx), (ref, ref_idx) = both(x, case)
    # Max-pool returns input elements, so values are bit-identical, indices identical.
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)
    assert out.stride() == ref.stride() and idx.stride() == ref_idx.stride()

    xa = x.detach().requires_grad_()
    xb = x.detach().requires_grad_()
    grad = torch.randn_like(ref)
    F.max_pool2d(xa, *case[1:5], ceil_mode=case[5]).backward(grad)
    TF.max_pool2d(xb, *case[1:5], ceil_mode=case[5]).backward(grad)
    if dtype in (torch.float32, torch.float64):
        # Same additions in the same (ascending output) order as PyTorch: bit-identical.
        assert torch.equal(xa.grad, xb.grad)
    else:
        torch.testing.assert_close(xa.grad, xb.grad, **tolerances(dtype))
    assert xa.grad.stride() == xb.grad.stride()


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_propagates_like_torch(device, dtype, memory_format):
    case = ((2, 3, 9, 9), 3, 2, 1, 1, False)
    x = make_input(case[0], dtype, device, memory_format)
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 1, 1] = float("nan")       # two NaNs in one window: PyTorch reports the later one
    x[1, 2, 4:7, 4:7] = float("-inf")  # a window of -inf only: index of its first element
    (out, idx), (ref, ref_idx) = both(x, case)
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)
    assert out.isnan().any()


def test_non_contiguous_input(device):
    base = torch.randn(4, 6, 20, 18, device=device)
    x = base[::2, 1::2, 1:17, ::2]  # strided in every dimension
    assert not x.is_contiguous()
    (out, idx), (ref, ref_idx) = both(x, ((), 3, 2, 1, 1, True))
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_indices_interchange_with_torch_unpool(device):
    x = torch.randn(2, 3, 8, 8, device=device)
    out, idx = F.max_pool2d_with_indices(x, 2)
    torch.testing.assert_close(TF.max_unpool2d(out, idx, 2), F.max_unpool2d(out, idx, 2))


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[8], CASES[10]], ids=str)
def test_gradcheck_and_gradgradcheck(device, case, memory_format):
    shape = case[0]
    x = distinct_values(shape, device=device)
    if len(shape) == 4:
        x = x.contiguous(memory_format=memory_format)
    x.requires_grad_()

    def pool(t):
        return F.max_pool2d(t, *case[1:5], ceil_mode=case[5])

    assert torch.autograd.gradcheck(pool, (x,))
    assert torch.autograd.gradgradcheck(pool, (x,))


def test_only_requested_gradients_are_computed(device):
    x = torch.randn(1, 2, 6, 6, device=device)
    out, idx = F.max_pool2d_with_indices(x, 2)
    assert not out.requires_grad and not idx.requires_grad
    x.requires_grad_()
    out, idx = F.max_pool2d_with_indices(x, 2)
    assert out.requires_grad and not idx.requires_grad


@pytest.mark.parametrize("op_args", [
    lambda x: (torch.ops.fastconv.max_pool2d_with_indices.default,
               (x, [3, 3], [2, 2], [1, 1], [1, 1], True)),
    lambda x: (torch.ops.fastconv._max_pool2d_backward.default,
               (torch.randn(2, 3, 5, 4, device=x.device),
                F.max_pool2d_with_indices(x, 3, 2, 1, ceil_mode=True)[1],
                list(x.shape), [3, 3], [2, 2], [1, 1], [1, 1], True)),
], ids=["forward", "backward"])
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_opcheck(device, op_args, memory_format):
    x = torch.randn(2, 3, 9, 7, device=device).contiguous(memory_format=memory_format)
    op, args = op_args(x)
    if op is torch.ops.fastconv.max_pool2d_with_indices.default:
        args = (args[0].requires_grad_(),) + args[1:]
    torch.library.opcheck(op, args)


def test_module_is_a_drop_in(device):
    kwargs = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True,
                  return_indices=True)
    ours, ref = fastconv.nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs)
    assert isinstance(ours, torch.nn.MaxPool2d)
    assert repr(ours) == repr(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 9, 9, device=device)
    for a, b in zip(ours(x), ref(x)):
        assert torch.equal(a, b)
    assert torch.equal(fastconv.nn.MaxPool2d(2)(x), torch.nn.MaxPool2d(2)(x))


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_torch_compile_fullgraph_matches_eager(device, memory_format):
    def f(t):
        out, idx = F.max_pool2d(t, 3, 2, 1, ceil_mode=True, return_indices=True)
        return out.sum() * 2 + idx.float().mean()

    x = torch.randn(2, 3, 11, 9, device=device).contiguous(memory_format=memory_format)
    xc = x.clone().requires_grad_()
    xe = x.clone().requires_grad_()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    yc, ye = compiled(xc), f(xe)
    yc.backward()
    ye.backward()
    assert torch.equal(yc, ye) and torch.equal(xc.grad, xe.grad)


def test_torch_compile_inductor(device):
    x = torch.randn(2, 3, 10, 10, device=device)
    compiled = torch.compile(lambda t: F.max_pool2d(t, 2) + 1, fullgraph=True)
    assert torch.equal(compiled(x), F.max_pool2d(x, 2) + 1)


def test_torch_compile_dynamic_shapes(device):
    compiled = torch.compile(lambda t: F.max_pool2d(t, 3, 2, 1), fullgraph=True,
                             backend="aot_eager", dynamic=True)
    for shape in [(1, 2, 9, 9), (2, 3, 12, 7)]:
        x = torch.randn(shape, device=device)
        assert torch.equal(compiled(x), TF.max_pool2d(x, 3, 2, 1))


# Bad input: (args to F.max_pool2d after the input, input maker, error type, message part)
BAD = [
    ((0,), None, RuntimeError, "expected kernel_size >= 1, got [0, 0]"),
    ((3, 0), None, RuntimeError, "expected stride >= 1, got [0, 0]"),
    ((3, -1), None, RuntimeError, "expected stride >= 1"),
    ((3, 1, 2), None, RuntimeError, "expected padding at most half the kernel size"),
    ((3, 1, -1), None, RuntimeError, "expected padding >= 0"),
    ((2, 1, 0, 0), None, RuntimeError, "expected dilation >= 1"),
    ((9,), None, RuntimeError, "expected an output of at least 1x1, got 0x0"),
    ((2,), lambda: torch.randn(2, 2, 4, 4, 4), RuntimeError, "got 5-D input"),
    ((2,), lambda: torch.randn(4, 4), RuntimeError, "got 2-D input"),
    ((2,), lambda: torch.ones(1, 2, 4, 4, dtype=torch.long), RuntimeError,
     "expected input of dtype float32, float64, float16 or bfloat16, got Long"),
    ((2,), lambda: torch.ones(1, 0, 4, 4), RuntimeError, "non-zero channel and spatial sizes"),
    (((2, 2, 2),), None, RuntimeError, "expected kernel_size to be an int or a pair of ints"),
]


@pytest.mark.parametrize("args, make, error, message", BAD, ids=lambda v: str(v)[:40])
def test_bad_input_raises_the_same_error_eagerly_and_under_fake_tensors(args, make, error,
                                                                         message):
    x = make() if make else torch.randn(1, 2, 6, 6)
    with pytest.raises(error, match=r"fastconv::max_pool2d") as eager:
        F.max_pool2d(x, *args)
    assert message in str(eager.value)
    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x)
        with pytest.raises(error) as fake:
            F.max_pool2d(fx, *args)
    assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]


def test_backward_op_rejects_mismatched_shapes():
    x = torch.randn(1, 2, 6, 6)
    out, idx = F.max_pool2d_with_indices(x, 2)
    with pytest.raises(RuntimeError, match=r"fastconv::_max_pool2d_backward: expected "
                                           r"grad_output of shape \[1, 2, 3, 3\]"):
        torch.ops.fastconv._max_pool2d_backward(torch.randn(1, 2, 3, 4), idx, [1, 2, 6, 6],
                                                [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="expected indices of dtype int64, got Int"):
        torch.ops.fastconv._max_pool2d_backward(out, idx.int(), [1, 2, 6, 6], [2, 2], [2, 2],
                                                [0, 0], [1, 1], False)
    with pytest.raises(IndexError, match=r"expected indices in \[0, 36\), got 36"):
        torch.ops.fastconv._max_pool2d_backward(out, torch.full_like(idx, 36), [1, 2, 6, 6],
                                                [2, 2], [2, 2], [0, 0], [1, 1], False)


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_portable_cpu_path_matches_torch(monkeypatch, case, memory_format):
    # On AVX-512 machines float inputs take the hand-written AVX-512 kernels; this runs the
    # portable (auto-vectorized) path that other CPUs use, on the same cases.
    monkeypatch.setenv("FASTCONV_CPU_KERNELS", "generic")
    x = make_input(case[0], torch.float32, "cpu", memory_format)
    x[..., 0, 0] = float("nan")
    (out, idx), (ref, ref_idx) = both(x, case)
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)


def test_autocast_keeps_the_input_dtype_like_torch():
    # max_pool2d is on no autocast list: it runs in the input's dtype, as torch's does.
    x = torch.randn(1, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = F.max_pool2d(x, 2), TF.max_pool2d(x, 2)
        assert ours.dtype == ref.dtype == torch.float32
        y = x.to(torch.bfloat16)
        assert F.max_pool2d(y, 2).dtype == TF.max_pool2d(y, 2).dtype == torch.bfloat16

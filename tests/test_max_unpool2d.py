"""max_unpool2d against torch.nn.functional.max_unpool2d, on every device."""
import pytest
import torch
import torch.nn.functional as TF
from torch._subclasses.fake_tensor import FakeTensorMode

import fastconv
import fastconv.nn.functional as F
from fastconv.testing import distinct_values

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FORMATS = [torch.contiguous_format, torch.channels_last]

# (input shape to the pool, kernel, stride, padding, output_size for the unpool)
CASES = [
    ((2, 3, 8, 8), 2, None, 0, None),
    ((2, 3, 9, 9), 3, 2, 1, None),           # overlapping windows: repeated indices
    ((2, 3, 9, 9), 3, 2, 1, (9, 9)),         # output_size recovers the odd input size
    ((1, 2, 7, 5), (3, 2), (2, 1), (1, 0), [1, 2, 7, 5]),  # 4-element output_size
    ((0, 3, 8, 8), 2, 2, 0, None),           # empty batch
    ((3, 8, 6), 2, 2, 0, None),              # unbatched
]


def pooled(case, dtype, device, memory_format):
    shape, k, s, p, _ = case
    x = torch.randn(shape, device=device).to(dtype)
    if len(shape) == 4:
        x = x.contiguous(memory_format=memory_format)
    return TF.max_pool2d(x, k, s, p, return_indices=True)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_matches_torch(device, case, dtype, memory_format):
    out, idx = pooled(case, dtype, device, memory_format)
    _, k, s, p, size = case
    ours = F.max_unpool2d(out, idx, k, s, p, output_size=size)
    ref = TF.max_unpool2d(out, idx, k, s, p, output_size=size)
    assert torch.equal(ours, ref)
    assert ours.stride() == ref.stride()

    a = out.detach().requires_grad_()
    b = out.detach().requires_grad_()
    grad = torch.randn_like(ref)
    F.max_unpool2d(a, idx, k, s, p, output_size=size).backward(grad)
    TF.max_unpool2d(b, idx, k, s, p, output_size=size).backward(grad)
    assert torch.equal(a.grad, b.grad)  # a gather: exact


def test_gradcheck(device):
    x = distinct_values((2, 3, 6, 6), device=device)
    out, idx = F.max_pool2d_with_indices(x, 2)
    out.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: F.max_unpool2d(t, idx, 2), (out,))


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_opcheck(device, memory_format):
    x = torch.randn(2, 3, 8, 6, device=device).contiguous(memory_format=memory_format)
    out, idx = F.max_pool2d_with_indices(x, 2)
    torch.library.opcheck(torch.ops.fastconv.max_unpool2d.default,
                          (out.requires_grad_(), idx, [8, 6]))
    torch.library.opcheck(torch.ops.fastconv._max_unpool2d_backward.default,
                          (torch.randn_like(x), idx))


def test_module_is_a_drop_in(device):
    ours, ref = fastconv.nn.MaxUnpool2d(3, 2, 1), torch.nn.MaxUnpool2d(3, 2, 1)
    assert isinstance(ours, torch.nn.MaxUnpool2d)
    assert repr(ours) == repr(ref)
    out, idx = TF.max_pool2d(torch.randn(1, 2, 9, 9, device=device), 3, 2, 1,
                             return_indices=True)
    assert torch.equal(ours(out, idx, output_size=(9, 9)), ref(out, idx, output_size=(9, 9)))


def test_torch_compile_fullgraph_matches_eager(device):
    def f(t):
        out, idx = F.max_pool2d(t, 2, return_indices=True)
        return F.max_unpool2d(out * 3, idx, 2).sum()

    x = torch.randn(2, 3, 8, 8, device=device)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    yc = torch.compile(f, fullgraph=True, backend="aot_eager")(xc)
    ye = f(xe)
    yc.backward()
    ye.backward()
    assert torch.equal(yc, ye) and torch.equal(xc.grad, xe.grad)


def _bad_calls():
    x = torch.randn(1, 2, 4, 4)
    idx = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    return [
        ((x, idx.int(), 2), RuntimeError, "expected indices of dtype int64, got Int"),
        ((x, idx[:, :, :2], 2), RuntimeError, "expected indices of the same shape as the input"),
        ((x.long(), idx, 2), RuntimeError, "expected input of dtype float32"),
        ((x[0, 0], idx[0, 0], 2), RuntimeError, "got 2-D input"),
        ((x, idx, 2, None, 0, (3, 3)), ValueError, "expected output_size[0] between 6 and 10"),
        ((x, idx, 2, None, 0, (8, 8, 8)), ValueError, "expected output_size with 2 or 4"),
        ((x, torch.full_like(idx, 64), 2), IndexError, "expected indices in [0, 64), got 64"),
        ((x, torch.full_like(idx, -1), 2), IndexError, "expected indices in [0, 64), got -1"),
    ]


@pytest.mark.parametrize("call", range(len(_bad_calls())))
def test_bad_input(call):
    args, error, message = _bad_calls()[call]
    with pytest.raises(error) as eager:
        F.max_unpool2d(*args)
    assert "fastconv::max_unpool2d: " in str(eager.value) and message in str(eager.value)
    if error is RuntimeError:  # shape/dtype errors are found by the fake kernel too
        with FakeTensorMode() as mode:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            with pytest.raises(error) as fake:
                F.max_unpool2d(*fake_args)
        assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]


def test_gradgradcheck(device):
    x = distinct_values((2, 3, 6, 6), device=device)
    out, idx = F.max_pool2d_with_indices(x, 2)
    out.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: F.max_unpool2d(t, idx, 2), (out,))
    # max-pool's double backward with a grad_output that depends on the input
    x.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: F.max_pool2d(t, 2) ** 2, (x,))

"""fastconv.ops.roi_pool against torchvision.ops.roi_pool and an fp64 reference on every device
of the fixture: edge-case boxes, non-square outputs, list boxes, dtypes, memory formats, argmax,
gradients (gradcheck on distinct values and against torchvision), determinism, opcheck,
torch.compile and bad inputs."""
import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode

import fastconv
from fastconv.ops import RoIPool, roi_pool
from fastconv.testing import TOLERANCES, distinct_values
from roi_testing import edge_case_boxes, reference_roi_pool

FORMATS = [torch.contiguous_format, torch.channels_last]
# (N, C, H, W, spatial_scale, output_size); image 1 has no boxes when N > 2
CASES = [
    (3, 5, 9, 11, 0.5, (3, 2)),
    (2, 4, 8, 6, 1.0, (2, 3)),
    (3, 3, 12, 10, 0.25, (7, 7)),   # more bins than pixels per box: empty and shared bins
]


def make(case, dtype, device, memory_format):
    n, c, h, w, scale, _ = case
    x = distinct_values((n, c, h, w), dtype=torch.float64).to(dtype)
    rois = edge_case_boxes(n, h, w, scale, empty_image=1 if n > 2 else None).to(dtype)
    return x.to(device).contiguous(memory_format=memory_format), rois.to(device)


def torchvision_argmax(x, rois, scale, size):
    return torch.ops.torchvision.roi_pool(x, rois, scale, *size)


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_argmax_and_backward_match_torchvision(device, case, memory_format):
    scale, size = case[4], case[5]
    x, rois = make(case, torch.float32, device, memory_format)
    out, argmax = torch.ops.fastconv.roi_pool(x, rois, scale, *size)
    assert out.is_contiguous(memory_format=memory_format) and argmax.dtype == torch.int32
    ref, ref_argmax = torchvision_argmax(x.cpu(), rois.cpu(), scale, size)
    assert torch.equal(out.cpu(), ref)
    assert torch.equal(argmax.cpu(), ref_argmax)
    xg = x.detach().requires_grad_()
    xr = x.detach().cpu().requires_grad_()
    grad = torch.randn(ref.shape)
    (g,) = torch.autograd.grad(roi_pool(xg, rois, size, scale), xg, grad.to(device))
    (g_ref,) = torch.autograd.grad(torchvision.ops.roi_pool(xr, rois.cpu(), size, scale), xr, grad)
    assert g.is_contiguous(memory_format=memory_format)
    # sums of a few gradients per pixel, added in box order by both (CUDA: gathered per pixel
    # in the same order): rounding can still differ where torchvision accumulates otherwise
    torch.testing.assert_close(g.cpu(), g_ref, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float64_matches_independent_reference(device, case):
    scale, size = case[4], case[5]
    x, rois = make(case, torch.float64, device, torch.contiguous_format)
    x = torch.randn(x.shape, dtype=torch.float64, device=device)
    out = roi_pool(x, rois, size, scale)
    assert torch.equal(out.cpu(), reference_roi_pool(x, rois, scale, size))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(device, dtype):
    case = CASES[0]
    scale, size = case[4], case[5]
    x, rois = make(case, dtype, device, torch.channels_last)
    out = roi_pool(x, rois, size, scale)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    ref = torchvision.ops.roi_pool(x.float().cpu(), rois.float().cpu(), size, scale)
    assert torch.equal(out.float().cpu(), ref)  # a maximum is exact in any dtype


def test_ties_nan_and_empty_bins_match_torchvision(device):
    x = torch.zeros(1, 2, 6, 6)
    x[0, 0, 2:4, 2:4] = 1.0                 # ties: the first in row-major order wins
    x[0, 1] = float("nan")                   # NaN never wins: -FLT_MAX with argmax -1
    x[0, 1, 5, 5] = 3.0
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0], [0, 2.0, 2.0, 3.0, 3.0],
                         [0, 7.0, 7.0, 9.0, 9.0]])  # the last is outside: empty bins
    out, argmax = torch.ops.fastconv.roi_pool(x.to(device), rois.to(device), 1.0, 3, 3)
    ref, ref_argmax = torchvision_argmax(x, rois, 1.0, (3, 3))
    assert torch.equal(out.cpu(), ref) and torch.equal(argmax.cpu(), ref_argmax)


def test_list_of_boxes_and_module_match_torchvision(device):
    x = torch.randn(2, 3, 10, 12, device=device)
    boxes = [torch.tensor([[1.2, 0.7, 7.9, 8.3], [0.0, 0.0, 11.0, 9.0]], device=device),
             torch.tensor([[3.3, 2.1, 5.8, 9.6]], device=device)]
    ours, theirs = RoIPool((3, 2), spatial_scale=0.9), torchvision.ops.RoIPool((3, 2), 0.9)
    assert repr(ours) == repr(theirs) and ours.state_dict() == theirs.state_dict() == {}
    assert fastconv.nn.RoIPool is RoIPool
    assert torch.equal(ours(x, boxes).cpu(), theirs(x.cpu(), [b.cpu() for b in boxes]))


def test_no_boxes(device):
    x = torch.randn(2, 3, 5, 5, device=device, requires_grad=True)
    out = roi_pool(x, torch.zeros(0, 5, device=device), (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradcheck_on_distinct_values(device):
    # distinct values at least 1/numel apart: the finite differences never change an argmax
    x = distinct_values((2, 3, 6, 7), device=device).requires_grad_()
    rois = torch.tensor([[0, 0.4, 0.6, 9.1, 7.3], [1, 2.1, 1.4, 5.9, 10.7],
                         [0, -1.3, 3.2, 4.2, 13.9], [1, 0.0, 0.0, 13.0, 11.0]],
                        dtype=torch.float64, device=device)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 2), 0.5), (x,), eps=1e-4)


def test_backward_is_deterministic(device):
    x = torch.randn(2, 8, 9, 9, device=device, requires_grad=True)
    rois = torch.cat([edge_case_boxes(2, 9, 9, 1.0).float().to(device)] * 3)
    grads = []
    for _ in range(2):
        out = roi_pool(x, rois, 3)
        grads.append(torch.autograd.grad(out, x, torch.ones_like(out))[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_opcheck(device, memory_format):
    x = torch.randn(2, 3, 6, 5, device=device).contiguous(memory_format=memory_format)
    rois = torch.tensor([[0, 0.3, 0.4, 4.2, 5.1], [1, 1.1, 0.2, 3.3, 2.9]], device=device)
    torch.library.opcheck(torch.ops.fastconv.roi_pool.default,
                          (x.requires_grad_(), rois, 0.5, 3, 2))
    _, argmax = torch.ops.fastconv.roi_pool(x.detach(), rois, 0.5, 3, 2)
    go = torch.randn(2, 3, 3, 2, device=device)
    torch.library.opcheck(torch.ops.fastconv._roi_pool_backward.default,
                          (go, rois, argmax.contiguous(), 0.5, 3, 2, [2, 3, 6, 5],
                           memory_format == torch.channels_last))


def test_torch_compile_fullgraph_matches_eager(device):
    def f(t, r):
        return roi_pool(t, r, (2, 3), 0.5).square().sum()

    x = torch.randn(2, 3, 8, 8, device=device)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 12.0], [1, 0.0, 0.0, 15.0, 15.0]], device=device)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    yc = torch.compile(f, fullgraph=True, backend="aot_eager")(xc, rois)
    ye = f(xe, rois)
    yc.backward()
    ye.backward()
    assert torch.equal(yc, ye) and torch.equal(xc.grad, xe.grad)


def test_bad_input_raises_the_same_error_eagerly_and_under_fake_tensors():
    x, rois = torch.randn(2, 2, 5, 5), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    for args, message in [((x[0], rois, 2), "expected a 4-D (N, C, H, W) input, got 3-D"),
                          ((x, rois.double(), 2), "expected rois of the input's dtype Float"),
                          ((x, rois, 2, -1.0), "expected a finite, non-negative spatial_scale"),
                          ((x, rois, (2, 0)), "expected an output size of at least 1x1")]:
        with pytest.raises(RuntimeError, match="fastconv::roi_pool: expected") as eager:
            roi_pool(*args)
        assert message in str(eager.value)
        with FakeTensorMode() as mode:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            with pytest.raises(RuntimeError) as fake:
                roi_pool(*fake_args)
        assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]


def test_bad_box_values_raise_on_real_devices(device):
    x = torch.randn(2, 2, 5, 5, device=device)
    for box, message in [((2.0, 0, 0, 3, 3), "integer in [0, 2), got 2 in box 0"),
                         ((0.0, float("nan"), 0, 3, 3), "finite box coordinates, got nan")]:
        with pytest.raises(RuntimeError, match="fastconv::roi_pool: expected") as e:
            roi_pool(x, torch.tensor([box], device=device), 2)
        assert message in str(e.value)


def test_backward_op_checks_argmax():
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    go = torch.ones(1, 2, 2, 2)
    with pytest.raises(RuntimeError, match="expected argmax of dtype int32, got Long"):
        torch.ops.fastconv._roi_pool_backward(go, rois, torch.zeros(1, 2, 2, 2, dtype=torch.long),
                                              1.0, 2, 2, [1, 2, 5, 5], False)
    for layout in (torch.contiguous_format, torch.channels_last):  # argmax in planes, by bin
        bad = torch.full((1, 2, 2, 2), 25, dtype=torch.int32).contiguous(memory_format=layout)
        with pytest.raises(IndexError, match=r"expected indices in \[0, 25\), got 25"):
            torch.ops.fastconv._roi_pool_backward(go, rois, bad, 1.0, 2, 2, [1, 2, 5, 5],
                                                  layout == torch.channels_last)

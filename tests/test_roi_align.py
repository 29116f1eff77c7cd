"""fastconv.ops.roi_align against torchvision.ops.roi_align and an fp64 reference, on every
device of the fixture (cpu, emulated CUDA under two schedules, cuda): edge-case boxes, both
`aligned` values, sampling ratios -1/0/1/3, non-square outputs, list boxes, dtypes, memory
formats, gradients (gradcheck and against torchvision), determinism, opcheck, torch.compile
and bad inputs."""
import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode

import fastconv
from fastconv.ops import RoIAlign, roi_align
from fastconv.testing import TOLERANCES
from roi_testing import edge_case_boxes, reference_roi_align

FORMATS = [torch.contiguous_format, torch.channels_last]
# (N, C, H, W, spatial_scale, output_size, sampling_ratio): the image without boxes is image 1
CASES = [
    (3, 5, 9, 11, 0.5, (3, 2), -1),
    (3, 4, 8, 6, 1.0, (2, 3), 0),
    (2, 6, 7, 9, 0.25, (4, 4), 1),
    (3, 3, 10, 8, 0.5, (1, 2), 3),
]


def make(case, dtype, device, memory_format):
    n, c, h, w, scale, size, ratio = case
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype)
    rois = edge_case_boxes(n, h, w, scale, empty_image=1 if n > 2 else None).to(dtype)
    return x.to(device).contiguous(memory_format=memory_format), rois.to(device)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_match_torchvision(device, case, memory_format, aligned):
    _, _, _, _, scale, size, ratio = case
    x, rois = make(case, torch.float32, device, memory_format)
    x.requires_grad_()
    out = roi_align(x, rois, size, scale, ratio, aligned)
    assert out.is_contiguous(memory_format=memory_format)
    xr = x.detach().cpu().requires_grad_()
    ref = torchvision.ops.roi_align(xr, rois.cpu(), size, scale, ratio, aligned)
    torch.testing.assert_close(out.cpu(), ref, **TOLERANCES[torch.float32])
    grad = torch.randn_like(ref)
    (g,) = torch.autograd.grad(out, x, grad.to(device))
    (g_ref,) = torch.autograd.grad(ref, xr, grad)
    assert g.is_contiguous(memory_format=memory_format)
    # Each input gradient sums many bin contributions; fastconv scales a bin's gradient by
    # 1/count before the bilinear weight (CPU) or gathers per pixel (CUDA), torchvision
    # multiplies by the weight first: different rounding order, up to a few fp32 ulps of sums
    # of magnitude ~10.
    torch.testing.assert_close(g.cpu(), g_ref, rtol=1e-5, atol=2.5e-5)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_float64_matches_independent_reference(device, case, aligned):
    _, _, _, _, scale, size, ratio = case
    x, rois = make(case, torch.float64, device, torch.contiguous_format)
    out = roi_align(x, rois, size, scale, ratio, aligned)
    ref = reference_roi_align(x, rois, scale, size, ratio, aligned)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-10, atol=1e-10)
    tv = torchvision.ops.roi_align(x.cpu(), rois.cpu(), size, scale, ratio, aligned)
    torch.testing.assert_close(out.cpu(), tv, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_low_precision_accumulates_in_float(device, dtype, memory_format):
    case = CASES[0]
    _, _, _, _, scale, size, ratio = case
    x, rois = make(case, dtype, device, memory_format)
    out = roi_align(x, rois, size, scale, ratio, True)
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    # reference: the same rounded inputs in float32
    ref = torchvision.ops.roi_align(x.float().cpu(), rois.float().cpu(), size, scale, ratio, True)
    torch.testing.assert_close(out.float().cpu(), ref, **TOLERANCES[dtype])
    x.requires_grad_()
    out = roi_align(x, rois, size, scale, ratio, True)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    xf = x.detach().float().cpu().requires_grad_()
    torchvision.ops.roi_align(xf, rois.float().cpu(), size, scale, ratio, True).sum().backward()
    torch.testing.assert_close(g.float().cpu(), xf.grad, **TOLERANCES[dtype])


def test_list_of_boxes_and_module_match_torchvision(device):
    x = torch.randn(2, 3, 10, 12, device=device)
    boxes = [torch.tensor([[1.2, 0.7, 7.9, 8.3], [0.0, 0.0, 11.0, 9.0]], device=device),
             torch.tensor([[3.3, 2.1, 5.8, 9.6]], device=device)]
    ours = RoIAlign((3, 2), spatial_scale=0.9, sampling_ratio=2, aligned=True)
    theirs = torchvision.ops.RoIAlign((3, 2), spatial_scale=0.9, sampling_ratio=2, aligned=True)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict() == theirs.state_dict() == {}
    assert fastconv.nn.RoIAlign is RoIAlign
    ref = theirs(x.cpu(), [b.cpu() for b in boxes])
    torch.testing.assert_close(ours(x, boxes).cpu(), ref, **TOLERANCES[torch.float32])
    assert torch.equal(roi_align(x, tuple(boxes), (3, 2), 0.9, 2, True), ours(x, boxes))
    # boxes as one (K, 5) tensor give the same result
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    assert torch.equal(roi_align(x, rois, (3, 2), 0.9, 2, True), ours(x, boxes))


def test_no_boxes_and_empty_batch(device):
    x = torch.randn(2, 3, 5, 5, device=device, requires_grad=True)
    rois = torch.zeros(0, 5, device=device)
    out = roi_align(x, rois, (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = roi_align(torch.randn(0, 3, 5, 5, device=device), rois, 2)
    assert empty.shape == (0, 3, 2, 2)


def test_gradcheck_with_samples_off_the_pixel_grid(device):
    # Box corners at odd fractions keep every sample strictly between pixel centres (ROI Align
    # is linear in the input, so gradcheck checks the backward's weights and their placement).
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, device=device, requires_grad=True)
    rois = torch.tensor([[0, 0.37, 0.61, 9.13, 7.29], [1, 2.11, 1.43, 5.87, 10.71],
                         [0, -1.31, 3.17, 4.23, 13.9], [1, 7.7, 0.3, 2.9, 6.1]],
                        dtype=torch.float64, device=device)
    for aligned, ratio in [(False, 2), (True, -1)]:
        assert torch.autograd.gradcheck(
            lambda t: roi_align(t, rois, (3, 2), 0.5, ratio, aligned), (x,))


def test_backward_is_deterministic(device):
    x = torch.randn(2, 8, 9, 9, device=device, requires_grad=True)
    rois = edge_case_boxes(2, 9, 9, 1.0).float().to(device)
    rois = torch.cat([rois] * 3)  # many overlapping boxes on the same pixels
    grads = []
    for _ in range(2):
        out = roi_align(x, rois, 3, 1.0, 2, True)
        grads.append(torch.autograd.grad(out, x, torch.ones_like(out))[0])
    assert torch.equal(grads[0], grads[1])


def test_deterministic_algorithms_mode_just_works(device):
    x = torch.randn(1, 2, 6, 6, device=device, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.5, 4.5, 5.0]], device=device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        roi_align(x, rois, 2, 1.0, 2).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("memory_format", FORMATS, ids=str)
def test_opcheck(device, memory_format):
    x = torch.randn(2, 3, 6, 5, device=device).contiguous(memory_format=memory_format)
    rois = torch.tensor([[0, 0.3, 0.4, 4.2, 5.1], [1, 1.1, 0.2, 3.3, 2.9]], device=device)
    torch.library.opcheck(torch.ops.fastconv.roi_align.default,
                          (x.requires_grad_(), rois, 0.5, 3, 2, 2, True))
    go = torch.randn(2, 3, 3, 2, device=device)
    torch.library.opcheck(torch.ops.fastconv._roi_align_backward.default,
                          (go, rois, 0.5, 3, 2, -1, False, [2, 3, 6, 5],
                           memory_format == torch.channels_last))


def test_torch_compile_fullgraph_matches_eager(device):
    def f(t, r):
        return roi_align(t, r, (2, 3), 0.5, -1, True).square().sum()

    x = torch.randn(2, 3, 8, 8, device=device)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 12.0], [1, 0.0, 0.0, 15.0, 15.0]], device=device)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    yc, ye = compiled(xc, rois), f(xe, rois)
    yc.backward()
    ye.backward()
    assert torch.equal(yc, ye) and torch.equal(xc.grad, xe.grad)


def test_torch_compile_inductor():
    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0, 0.5, 1.0, 4.0, 5.5]])
    compiled = torch.compile(lambda t, r: roi_align(t, r, 2, 1.0, 2) * 2, fullgraph=True)
    assert torch.equal(compiled(x, rois), roi_align(x, rois, 2, 1.0, 2) * 2)


def test_autocast_runs_in_float32_and_returns_the_input_dtype():
    x = torch.randn(1, 2, 6, 6, dtype=torch.bfloat16)
    rois = torch.tensor([[0, 0.5, 1.0, 4.0, 5.5]], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(x, rois, 2, 1.0, 2)
    assert out.dtype == torch.bfloat16
    ref = roi_align(x.float(), rois.float(), 2, 1.0, 2).to(torch.bfloat16)
    assert torch.equal(out, ref)


# Bad input: (input maker, rois maker, kwargs, message part)
BAD = [
    (lambda: torch.randn(2, 5, 5), None, {}, "expected a 4-D (N, C, H, W) input, got 3-D"),
    (lambda: torch.ones(1, 2, 5, 5, dtype=torch.long), None, {},
     "expected input of dtype float32, float64, float16 or bfloat16, got Long"),
    (None, lambda: torch.zeros(1, 5, dtype=torch.float64), {},
     "expected rois of the input's dtype Float, got Double"),
    (None, None, dict(spatial_scale=-0.5), "expected a finite, non-negative spatial_scale"),
    (None, None, dict(output_size=(0, 2)), "expected an output size of at least 1x1, got 0x2"),
    (lambda: torch.randn(1, 2, 0, 5), None, {}, "expected a feature map of at least 1x1"),
]


@pytest.mark.parametrize("make_x, make_rois, kwargs, message", BAD, ids=lambda v: str(v)[:30])
def test_bad_input_raises_the_same_error_eagerly_and_under_fake_tensors(make_x, make_rois,
                                                                         kwargs, message):
    x = make_x() if make_x else torch.randn(2, 2, 5, 5)
    rois = make_rois() if make_rois else torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    args = dict(output_size=2, spatial_scale=1.0) | kwargs
    with pytest.raises(RuntimeError, match=r"fastconv::roi_align: expected") as eager:
        roi_align(x, rois, **args)
    assert message in str(eager.value)
    with FakeTensorMode() as mode:
        with pytest.raises(RuntimeError) as fake:
            roi_align(mode.from_tensor(x), mode.from_tensor(rois), **args)
    assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]


@pytest.mark.parametrize("box, message", [
    ((2.0, 0, 0, 3, 3), "batch index that is an integer in [0, 2), got 2 in box 1"),
    ((-1.0, 0, 0, 3, 3), "batch index that is an integer in [0, 2), got -1 in box 1"),
    ((0.5, 0, 0, 3, 3), "got 0.5 in box 1"),
    ((0.0, 0, float("nan"), 3, 3), "expected finite box coordinates, got nan in box 1"),
    ((1.0, 0, 0, float("inf"), 3), "expected finite box coordinates, got inf in box 1"),
])
def test_bad_box_values_raise_on_real_devices(device, box, message):
    # Box values need data: real kernels check them (CUDA through a validation kernel whose
    # finding is read back); fake tensors cannot.
    x = torch.randn(2, 2, 5, 5, device=device, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0], box], device=device)
    with pytest.raises(RuntimeError, match="fastconv::roi_align: expected") as e:
        roi_align(x, rois, 2)
    assert message in str(e.value)
    go = torch.ones(2, 2, 2, 2, device=device)
    with pytest.raises(RuntimeError, match="fastconv::_roi_align_backward: expected"):
        torch.ops.fastconv._roi_align_backward(go, rois, 1.0, 2, 2, -1, False, [2, 2, 5, 5],
                                               False)


def test_bad_boxes_argument():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(RuntimeError, match=r"fastconv::roi_align: expected boxes of shape "
                                           r"\(K, 5\).*got \[1, 4\]"):
        roi_align(x, torch.zeros(1, 4), 2)
    with pytest.raises(RuntimeError, match=r"expected every tensor in the boxes list of shape "
                                           r"\(L, 4\), got \[1, 5\] at position 1"):
        roi_align(x, [torch.zeros(1, 4), torch.zeros(1, 5)], 2)
    with pytest.raises(TypeError, match="expected output_size to be an int or a pair"):
        roi_align(x, torch.zeros(1, 5), (1, 2, 3))


def test_backward_op_rejects_mismatched_shapes():
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    with pytest.raises(RuntimeError, match=r"fastconv::_roi_align_backward: expected "
                                           r"grad_output of shape \[1, 2, 2, 2\], got"):
        torch.ops.fastconv._roi_align_backward(torch.ones(1, 2, 2, 3), rois, 1.0, 2, 2, -1,
                                               False, [1, 2, 5, 5], False)


def test_double_backward_is_a_clear_error():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.5, 3.5, 3.5]], dtype=torch.float64)
    out = roi_align(x, rois, 2, 1.0, 2)
    go = torch.ones_like(out, requires_grad=True)
    (g,) = torch.autograd.grad(out, x, go, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()

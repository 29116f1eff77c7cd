"""Fused BatchNorm(+ReLU, + residual add) against torch.nn.functional.batch_norm (+ add, relu),
on every device (cpu, emulated CUDA under two schedules, cuda)."""
import pytest
import torch
import torch.nn.functional as TF
from torch._subclasses.fake_tensor import FakeTensorMode

import fastconv
import fastconv.nn.functional as F
from fastconv.testing import tolerances

# (shape, memory format): N*H*W = 2, 2-D (N, C), 3-D, planes spanning several CPU chunks,
# channels_last with C not a multiple of 8, an empty batch.
SHAPES = [
    ((2, 3, 5, 7), torch.contiguous_format),
    ((2, 3, 5, 7), torch.channels_last),
    ((1, 4, 1, 2), torch.contiguous_format),   # N*H*W = 2
    ((2, 5), torch.contiguous_format),         # (N, C), N*H*W = 2
    ((4, 6, 9), torch.contiguous_format),      # (N, C, L)
    ((3, 10, 6, 6), torch.channels_last),
    ((0, 3, 4, 4), torch.contiguous_format),   # empty batch
]
# (activation, residual)
KINDS = [(None, False), ("relu", False), ("relu", True), (None, True)]


def make(shape, dtype, device, memory_format, scale=1.0, shift=0.0):
    x = torch.randn(shape, dtype=torch.float64, device=device) * scale + shift
    x = x.to(dtype)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


def params(c, dtype, device):
    w = (torch.rand(c, dtype=torch.float64, device=device) + 0.5).to(dtype)
    b = (torch.randn(c, dtype=torch.float64, device=device) * 0.5).to(dtype)
    return w, b


def reference(x, residual, rm, rv, w, b, training, momentum, eps, relu):
    if x.dtype in (torch.float16, torch.bfloat16):
        # torch's CPU kernel wants every tensor in the input's dtype: compute in float32 (what
        # fastconv computes in) and round once
        up = lambda t: t.float() if t is not None else None  # noqa: E731
        stats = (rm, rv) if rm is None or rm.dtype == torch.float32 else (up(rm), up(rv))
        return reference(up(x), up(residual), *stats, up(w), up(b), training, momentum, eps,
                         relu).to(x.dtype)
    y = TF.batch_norm(x, rm, rv, w, b, training, momentum, eps)
    if residual is not None:
        y = y + residual
    return TF.relu(y) if relu else y


def ours(x, residual, rm, rv, w, b, training, momentum, eps, relu):
    if residual is not None:
        if relu:
            return F.batch_norm_add_relu(x, residual, rm, rv, w, b, training, momentum, eps)
        return F.batch_norm(x, rm, rv, w, b, training, momentum, eps) + residual
    return F.batch_norm(x, rm, rv, w, b, training, momentum, eps,
                        activation="relu" if relu else None)


def run_both(device, shape, memory_format, dtype, training, kind, affine=True, track=True,
             stats_dtype=None, grad=True):
    activation, with_residual = kind
    relu = activation == "relu"
    c = shape[1]
    x = make(shape, dtype, device, memory_format)
    res = make(shape, dtype, device, memory_format) if with_residual else None
    w, b = params(c, dtype, device) if affine else (None, None)
    sdt = stats_dtype or dtype
    rm0 = torch.randn(c, dtype=sdt, device=device) * 0.1 if track else None
    rv0 = (torch.rand(c, dtype=sdt, device=device) + 0.5) if track else None
    results = []
    for fn in (ours, reference):
        rm = rm0.clone() if track else None
        rv = rv0.clone() if track else None
        xi = x.detach().requires_grad_(grad)
        ri = res.detach().requires_grad_(grad) if res is not None else None
        wi = w.detach().requires_grad_(grad) if affine else None
        bi = b.detach().requires_grad_(grad) if affine else None
        y = fn(xi, ri, rm, rv, wi, bi, training or not track, 0.1, 1e-5, relu)
        out = {"y": y.detach(), "running_mean": rm, "running_var": rv}
        if grad and y.numel() > 0:
            torch.manual_seed(1)
            y.backward(torch.randn_like(y))
            out.update(grad_x=xi.grad, grad_res=ri.grad if ri is not None else None,
                       grad_w=wi.grad if affine else None, grad_b=bi.grad if affine else None)
        results.append(out)
    return results


def assert_matches(a, b, dtype, what=""):
    tol = tolerances(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        tol = dict(rtol=3e-2, atol=3e-2)  # torch rounds the normalized value to 16 bits first
    for key in a:
        if a[key] is None:
            assert b[key] is None, key
            continue
        key_tol = tol
        if key.startswith("grad") and dtype == torch.float32:
            # grad_input = alpha * (g - mean(g) - x_hat * mean(g * x_hat)): terms of size |dy|
            # that nearly cancel (exactly for N*H*W = 2), so its error scales with |dy| ~ 1,
            # not with the (small) result; with 2 values per channel invstd can be large and
            # the result ill-conditioned (relative errors ~1e-5 between any two fp32 orders)
            key_tol = dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a[key], b[key], **key_tol, msg=lambda m: f"{key} {what}: {m}")
        if key in ("y", "grad_x", "grad_res"):
            assert a[key].stride() == b[key].stride(), key


@pytest.mark.parametrize("shape, memory_format", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_torch_fp32(device, shape, memory_format, kind, training):
    ours_, ref = run_both(device, shape, memory_format, torch.float32, training, kind)
    assert_matches(ours_, ref, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_matches_torch_other_dtypes(device, dtype, memory_format):
    # float16/bfloat16 with float32 running statistics and affine parameters, as torch allows
    stats = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    ours_, ref = run_both(device, (2, 4, 6, 5), memory_format, dtype, True, ("relu", True),
                          stats_dtype=stats, grad=dtype == torch.float64)
    assert_matches(ours_, ref, dtype)


@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
def test_affine_and_track_running_stats_off(device, affine, track):
    for training in (True, False):
        ours_, ref = run_both(device, (3, 4, 5, 5), torch.contiguous_format, torch.float32,
                              training, ("relu", False), affine=affine, track=track)
        assert_matches(ours_, ref, torch.float32, f"training={training}")


def test_large_planes_and_non_contiguous(device):
    # planes of 150 x 150 values: several CPU chunks and CUDA blocks per channel
    n = 1 if device != "cpu" else 2
    x = make((n, 2, 150, 150), torch.float32, device, torch.contiguous_format, 3.0, 1.0)
    rm, rv = torch.zeros(2, device=device), torch.ones(2, device=device)
    rm2, rv2 = rm.clone(), rv.clone()
    y = F.batch_norm_relu(x, rm, rv, training=True)
    torch.testing.assert_close(y, TF.relu(TF.batch_norm(x, rm2, rv2, training=True)))
    torch.testing.assert_close((rm, rv), (rm2, rv2))
    base = make((4, 6, 10, 12), torch.float32, device, torch.contiguous_format)
    xs = base[::2, 1::2, ::3, 1:]  # strided in every dimension
    assert not xs.is_contiguous()
    torch.testing.assert_close(F.batch_norm(xs, None, None, training=True),
                               TF.batch_norm(xs, None, None, training=True))


def test_weight_zero_gradients(device):
    # weight == 0: the output is relu(bias) whatever x is; grad_weight still needs x_hat, which
    # is why x (not y) is saved for backward.
    ours_, ref = None, None
    x = make((3, 4, 4, 4), torch.float64, device, torch.contiguous_format)
    w = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64, device=device)
    b = torch.tensor([0.5, -0.5, 0.1, 0.0], dtype=torch.float64, device=device)
    grads = []
    for fn in (lambda *a: F.batch_norm_relu(*a, training=True),
               lambda *a: TF.relu(TF.batch_norm(*a, training=True))):
        xi, wi, bi = (t.detach().requires_grad_() for t in (x, w, b))
        y = fn(xi, None, None, wi, bi)
        torch.manual_seed(2)
        y.backward(torch.randn_like(y))
        grads.append((y.detach(), xi.grad, wi.grad, bi.grad))
    for a, b_ in zip(*grads):
        torch.testing.assert_close(a, b_, rtol=1e-10, atol=1e-10)
    assert grads[0][2][0].abs() > 0.1  # grad_weight of a zero weight is not zero


def test_stability_mean_1e4_std_1e_2(device):
    # fp32 inputs far from zero: single-pass sum / sum-of-squares would lose every digit of the
    # variance (1e8 vs 1e-4); the shifted chunk sums + parallel merge keep it.
    x = make((4, 3, 16, 16), torch.float32, device, torch.channels_last, 1e-2, 1e4)
    exact_var = x.double().var(dim=(0, 2, 3), unbiased=False)
    exact_mean = x.double().mean(dim=(0, 2, 3))
    for fmt in (torch.contiguous_format, torch.channels_last):
        mean, var = torch.ops.fastconv._batch_norm_stats(x.contiguous(memory_format=fmt))
        torch.testing.assert_close(var.double(), exact_var, rtol=1e-4, atol=0)
        torch.testing.assert_close(mean.double(), exact_mean, rtol=1e-7, atol=0)
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)
    torch.testing.assert_close(rv.double(), exact_var * x[:, 0].numel() / (x[:, 0].numel() - 1),
                               rtol=1e-4, atol=0)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_statistics_with_an_outlier_first(device, memory_format):
    # Each chunk's sums are shifted by a pivot; with its first value as the pivot, an outlier
    # there (4 standard deviations out) made m2 = s2 - s1 * d cancel: the variance came out
    # ~1e-5 (relative) off float64 in fp32, torch's ~1e-7. The pivot now averages a few values.
    x = make((8, 4, 6, 6), torch.float32, device, memory_format, 0.5)
    x[:, :, 0, 0] = 2.0  # the first value of every plane (NCHW) and of the first row (NHWC)
    mean, var = torch.ops.fastconv._batch_norm_stats(x)
    torch.testing.assert_close(var.double(), x.double().var(dim=(0, 2, 3), unbiased=False),
                               rtol=5e-7, atol=0)
    torch.testing.assert_close(mean.double(), x.double().mean(dim=(0, 2, 3)), rtol=0, atol=2e-7)


def test_module_momentum_none_and_state_dict(device):
    torch_bn = torch.nn.BatchNorm2d(5, momentum=None).to(device)
    ours_bn = fastconv.nn.BatchNorm2d(5, momentum=None).to(device)
    ours_bn.load_state_dict(torch_bn.state_dict())
    assert list(ours_bn.state_dict()) == list(torch_bn.state_dict())
    assert repr(ours_bn) == repr(torch_bn)
    for step in range(3):  # cumulative average: momentum 1, 1/2, 1/3
        x = make((2, 5, 3, 3), torch.float32, device, torch.contiguous_format, 1.0, step)
        torch.testing.assert_close(ours_bn(x), torch_bn(x))
    for key, value in torch_bn.state_dict().items():
        torch.testing.assert_close(ours_bn.state_dict()[key], value)
    ours_bn.eval()
    torch_bn.eval()
    x = make((2, 5, 3, 3), torch.float32, device, torch.channels_last)
    torch.testing.assert_close(ours_bn(x), torch_bn(x))


def test_batch_norm_relu_module_with_residual(device):
    m = fastconv.nn.BatchNormReLU2d(4).to(device)
    ref = torch.nn.BatchNorm2d(4).to(device)
    assert isinstance(m, torch.nn.BatchNorm2d) and isinstance(m, fastconv.nn.BatchNorm2d)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    ref.load_state_dict(m.state_dict())
    x = make((2, 4, 5, 5), torch.float32, device, torch.contiguous_format)
    r = make((2, 4, 5, 5), torch.float32, device, torch.contiguous_format)
    torch.testing.assert_close(m(x, r), TF.relu(ref(x) + r))
    torch.testing.assert_close(m(x), TF.relu(ref(x)))
    torch.testing.assert_close((m.running_mean, m.running_var), (ref.running_mean, ref.running_var))


def _away_from_zero(fn, *tensors, margin=1e-3, tries=20):
    """Fresh inputs until every ReLU pre-activation is at least `margin` from 0 (ReLU is not
    differentiable there: finite differences would straddle the kink)."""
    for _ in range(tries):
        values = [t() for t in tensors]
        pre = fn(*values)
        if pre.abs().min() > margin:
            return values
    pytest.fail("no input with pre-activations away from 0")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_gradcheck(device, training, memory_format):
    shape, c = (2, 3, 3, 2), 3
    rm = torch.randn(c, dtype=torch.float64, device=device) * 0.1
    rv = torch.rand(c, dtype=torch.float64, device=device) + 0.5

    def pre(x, r, w, b):
        return TF.batch_norm(x, rm.clone(), rv.clone(), w, b, training) + r

    x, r, w, b = _away_from_zero(
        pre, lambda: make(shape, torch.float64, device, memory_format),
        lambda: make(shape, torch.float64, device, memory_format),
        lambda: torch.rand(c, dtype=torch.float64, device=device) + 0.5,
        lambda: torch.randn(c, dtype=torch.float64, device=device) * 0.5)
    inputs = tuple(t.detach().requires_grad_() for t in (x, r, w, b))

    def fn(x, r, w, b):
        return F.batch_norm_add_relu(x, r, rm.clone(), rv.clone(), w, b, training)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradcheck(
        lambda x, w, b: F.batch_norm(x, rm.clone(), rv.clone(), w, b, training),
        (inputs[0], inputs[2], inputs[3]))


def test_only_requested_gradients(device):
    x = make((2, 3, 4, 4), torch.float32, device, torch.contiguous_format).requires_grad_()
    w, b = (t.requires_grad_() for t in params(3, torch.float32, device))
    y = F.batch_norm_relu(x, None, None, w, b, training=True)
    gx, = torch.autograd.grad(y.sum(), x, retain_graph=True)
    gw, = torch.autograd.grad(y.sum(), w)
    ref_x, ref_w = (t.detach().requires_grad_() for t in (x, w))
    yr = TF.relu(TF.batch_norm(ref_x, None, None, ref_w, b.detach(), training=True))
    torch.testing.assert_close((gx, gw), torch.autograd.grad(yr.sum(), (ref_x, ref_w)))


# ---- bad input ----------------------------------------------------------------------------------
def _bad_calls(device):
    x = torch.randn(2, 3, 4, 4, device=device)
    v3, v4 = torch.ones(3, device=device), torch.ones(4, device=device)
    return [
        (lambda: F.batch_norm(x, v4, v3.clone(), training=True), RuntimeError,
         "fastconv::_batch_norm_forward_train: expected running_mean of shape \\[3\\]"),
        (lambda: F.batch_norm(x, v3.clone(), v3.clone(), v4), RuntimeError,
         "fastconv::batch_norm_apply: expected weight of shape \\[3\\]"),
        (lambda: F.batch_norm(x, v3.clone(), v3.clone(), v3.long()), RuntimeError,
         "expected weight of dtype Float"),
        (lambda: F.batch_norm(x.double(), v3.clone(), v3.clone(), training=True, weight=v3),
         RuntimeError, "expected weight of dtype Double"),
        (lambda: F.batch_norm(torch.randn(1, 3, device=device), None, None, training=True),
         ValueError, "more than 1 value per channel when training"),
        (lambda: F.batch_norm(torch.randn(1, 3, 1, 1, device=device), v3.clone(), v3.clone(),
                              training=True), ValueError, "more than 1 value per channel"),
        (lambda: F.batch_norm_add_relu(x, x[:1], None, None, training=True), RuntimeError,
         "expected residual of the input's shape"),
        (lambda: F.batch_norm(torch.randn(3, device=device), None, None, training=True),
         RuntimeError, "expected input of at least 2 dimensions"),
        (lambda: F.batch_norm(x.long(), v3, v3), RuntimeError, "expected input of dtype"),
        (lambda: F.batch_norm(x, None, None), RuntimeError, "in evaluation mode"),
        (lambda: F.batch_norm(x, v3, v3, activation="gelu"), ValueError, "activation"),
    ]


@pytest.mark.parametrize("index", range(11))
def test_bad_input_errors_eager_and_fake(device, index):
    fn, error, pattern = _bad_calls(device)[index]
    with pytest.raises(error, match=pattern):
        fn()
    if device == "cpu":
        with FakeTensorMode(allow_non_fake_inputs=True):
            with pytest.raises(error, match=pattern):
                # fresh fake inputs: the same checks run in the Meta kernels
                _bad_calls(device)[index][0]()


# ---- opcheck, torch.compile -------------------------------------------------------------------
def _op_samples(device):
    x = make((2, 3, 4, 5), torch.float32, device, torch.contiguous_format)
    xc = make((2, 3, 4, 5), torch.float32, device, torch.channels_last)
    r = make((2, 3, 4, 5), torch.float32, device, torch.contiguous_format)
    w, b = params(3, torch.float32, device)
    mean, var = torch.randn(3, device=device), torch.rand(3, device=device) + 0.5
    sd, sx = torch.randn(3, device=device), torch.randn(3, device=device)
    ops = torch.ops.fastconv
    return [
        (ops._batch_norm_stats, (xc,)),
        (ops._batch_norm_forward_train, (x.requires_grad_(), w.requires_grad_(), b, r, None,
                                         None, 0.1, 1e-5, True)),
        (ops._batch_norm_forward_train, (xc, None, b, None, torch.zeros(3, device=device),
                                         torch.ones(3, device=device), 0.1, 1e-5, False)),
        (ops._batch_norm_update_stats, (mean, var, 40, 0.1, torch.zeros(3, device=device),
                                        torch.ones(3, device=device))),
        (ops.batch_norm_apply, (xc, mean, var, w, None, None, 1e-5, True)),
        (ops._batch_norm_backward_reduce, (r, x.detach(), mean, var, w.detach(), b, r, 1e-5,
                                           True)),
        (ops._batch_norm_backward_apply, (r, x.detach(), mean, var, w.detach(), b, None, sd, sx,
                                          40, 1e-5, False)),
        (ops._batch_norm_add_relu_backward_apply, (r, x.detach(), mean, var, None, b, r, None,
                                                   None, 40, 1e-5)),
        (ops._batch_norm_backward, (r, x.detach(), mean, var, w.detach(), b, r, 1e-5, True,
                                    True, True)),
        (ops._batch_norm_backward, (xc, xc, mean, var, None, None, None, 1e-5, False, False,
                                    False)),
    ]


@pytest.mark.parametrize("index", range(10))
def test_opcheck(device, index):
    op, args = _op_samples(device)[index]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_compile_fullgraph_matches_eager(device, training):
    m = fastconv.nn.BatchNormReLU2d(4).to(device).train(training)
    ref = fastconv.nn.BatchNormReLU2d(4).to(device).train(training)
    ref.load_state_dict(m.state_dict())
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    x = make((2, 4, 5, 5), torch.float32, device, torch.contiguous_format).requires_grad_()
    r = make((2, 4, 5, 5), torch.float32, device, torch.contiguous_format)
    y = compiled(x, r)
    y.sum().backward()
    gx = x.grad
    x.grad = None
    y_ref = ref(x, r)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(m.running_var, ref.running_var)
    torch.testing.assert_close(m.num_batches_tracked, ref.num_batches_tracked)


def test_compile_inductor_functional():
    x = torch.randn(2, 4, 5, 5)
    rm, rv = torch.zeros(4), torch.ones(4)
    rm2, rv2 = rm.clone(), rv.clone()
    fn = torch.compile(lambda x, rm, rv: F.batch_norm_relu(x, rm, rv, training=True),
                       fullgraph=True)
    torch.testing.assert_close(fn(x, rm, rv), F.batch_norm_relu(x, rm2, rv2, training=True))
    torch.testing.assert_close((rm, rv), (rm2, rv2))


def test_double_backward_is_a_clear_error(device):
    x = make((2, 3, 4, 4), torch.float64, device, torch.contiguous_format).requires_grad_()
    y = F.batch_norm_relu(x, None, None, training=True)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        g.sum().backward()

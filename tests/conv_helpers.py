"""Shared pieces of the convolution tests: the shape table, input makers and the error-bound
comparison (results are checked against an fp64 reference within a rigorous rounding bound,
so no tolerance is tuned to the code under test)."""
import pytest
import torch
import torch.nn.functional as F

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FORMATS = [torch.contiguous_format, torch.channels_last]
FORMAT_IDS = ["nchw", "channels_last"]


def pair(v):
    """An int or a pair as a pair (torch's convention for stride, padding, dilation)."""
    return (v, v) if isinstance(v, int) else tuple(v)


def described_case_ids(cases):
    """Test ids from the description that ends each case tuple (its text before a colon)."""
    return [c[-1].split(":")[0].replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
            for c in cases]


def run_counting(counter, fn):
    """fn()'s result and how much the per-process path counter `counter()` (one of the private
    `_conv2d_cpu_*_info` ops) rose while it ran: whether that path took the call."""
    before = counter()
    out = fn()
    return out, counter() - before


def results_at_thread_counts(fn, counts=(1, 2, 3)):
    """fn() run at each thread count (the previous count restored after)."""
    threads = torch.get_num_threads()
    try:
        results = []
        for t in counts:
            torch.set_num_threads(t)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 comparisons with PyTorch mean fp32 arithmetic on both sides (cuDNN/cuBLAS would
    otherwise use TF32 on a GPU)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=["native", "avx2"])
def simd_kernels(request, monkeypatch):
    """The direct-convolution SIMD kernels of the running CPU and, on an AVX-512 machine, the
    AVX2 ones too (FASTCONV_CPU_KERNELS=avx2), with Winograd off (it would otherwise take the
    3x3 stride-1 cases wherever it runs first)."""
    isa = torch.ops.fastconv._conv2d_cpu_fast_info()[0]
    if isa == "generic":
        pytest.skip("no AVX2: these paths run the SIMD kernels")
    if request.param == "avx2":
        if isa != "avx512":
            pytest.skip("no AVX-512 here: the native kernels are the AVX2 ones")
        monkeypatch.setenv("FASTCONV_CPU_KERNELS", "avx2")
    else:
        monkeypatch.delenv("FASTCONV_CPU_KERNELS", raising=False)
    monkeypatch.setenv("FASTCONV_CPU_WINOGRAD", "0")
    return "avx2" if request.param == "avx2" else isa


def _use_gemm_kernels(which, monkeypatch):
    if which == "native":
        return
    if torch.ops.fastconv._conv2d_cpu_fast_info()[0] != "avx512":
        pytest.skip("no AVX-512 here: the native kernels are the AVX2 ones")
    if which == "avx2":
        monkeypatch.setenv("FASTCONV_CPU_KERNELS", "avx2")
    else:  # one of the two AVX-512 tiles, whatever the shape
        monkeypatch.setenv("FASTCONV_CPU_GEMM_NR", which.split("x")[1])


@pytest.fixture(params=["native", "avx2"])
def gemm_width(request, monkeypatch):
    """The GEMM micro-kernels of the running CPU (6 x 32 on AVX-512) and, on an AVX-512 machine,
    the AVX2 ones too (6 x 16, FASTCONV_CPU_KERNELS=avx2): tails and packings differ."""
    _use_gemm_kernels(request.param, monkeypatch)
    return request.param


@pytest.fixture(params=["native", "avx2", "6x32", "6x64"])
def gemm_tile(request, monkeypatch):
    """gemm_width, plus each of the two AVX-512 tiles of the 1x1 GEMM (6 x 32, 6 x 64) on every
    shape: natively the tile depends on the column count (gemm::kernels_for)."""
    _use_gemm_kernels(request.param, monkeypatch)
    return request.param


def case_id(case):
    x, w, s, p, d, g = case
    return f"x{list(x)}-w{list(w)}-s{s}-p{p}-d{d}-g{g}".replace(" ", "")


# (input shape, weight shape, stride, padding, dilation, groups): the edge cases.
CASES = [
    ((2, 8, 5, 6), (12, 8, 1, 1), 1, 0, 1, 1),              # 1x1 (pointwise)
    ((1, 3, 15, 13), (8, 3, 7, 7), 2, 3, 1, 1),             # 7x7 stride 2 stem, C=3, batch 1
    ((2, 4, 9, 9), (6, 4, 3, 3), 1, 2, 2, 1),               # dilation
    ((2, 6, 7, 8), (9, 2, 3, 3), 1, 1, 1, 3),               # groups
    ((2, 8, 8, 7), (8, 1, 3, 3), 2, 1, 1, 8),               # depthwise, stride 2
    ((2, 4, 5, 5), (12, 1, 3, 3), 1, 1, 1, 4),              # depthwise with multiplier 3
    ((1, 3, 6, 5), (4, 3, 3, 3), 1, 3, 1, 1),               # padding larger than the kernel half
    ((2, 4, 7, 6), (5, 4, 2, 4), (2, 1), (1, 2), (1, 2), 1),  # non-square everything
    ((2, 4, 11, 10), (5, 4, 2, 2), 4, 0, 1, 1),             # stride > kernel (skipped pixels)
    ((2, 5, 6, 6), (7, 5, 3, 3), 2, 0, 1, 1),               # stride 2, rows left unread
    ((0, 4, 6, 6), (5, 4, 3, 3), 1, 1, 1, 1),               # empty batch
    ((4, 6, 7), (5, 4, 3, 3), 1, 1, 1, 1),                  # unbatched 3-D input
    ((2, 4, 6, 5), (5, 4, 4, 4), 1, "same", 1, 1),          # 'same' with an even kernel
    ((2, 4, 6, 5), (6, 2, 2, 3), 1, "same", 2, 2),          # 'same', dilation, groups
    ((2, 4, 6, 5), (5, 4, 3, 3), 1, "valid", 1, 1),         # 'valid'
]
# The cases with numeric padding (torch.nn.grad and the private ops take no strings).
NUMERIC_CASES = [c for c in CASES if not isinstance(c[3], str)]


def make(shape, dtype, device, memory_format=torch.contiguous_format, requires_grad=False):
    """Normal random values generated in fp32 (same distribution for every dtype)."""
    t = torch.randn(shape, device=device).to(dtype)
    if len(shape) == 4:
        t = t.contiguous(memory_format=memory_format)
    return t.requires_grad_(requires_grad)


def assert_within_rounding(actual, exact, magnitude, terms, what="", roundings=1):
    """|actual - exact| <= bound, where exact is the fp64 result of the same (already rounded)
    inputs and magnitude the fp64 sum of the absolute values of its terms. A sum of `terms`
    products accumulated in precision eps is off by at most terms * eps * magnitude (the
    standard worst-case bound); fp16 / bf16 accumulate in fp32 and round the result once (half
    an ulp of the result, bounded by eps * |exact|). `roundings` > 1 counts further roundings
    to the low-precision dtype before the end (a bias added after the sum), each bounded by
    eps * magnitude."""
    assert actual.shape == exact.shape, (actual.shape, exact.shape)
    dtype = actual.dtype
    acc_eps = torch.finfo(torch.float32 if dtype in (torch.float16, torch.bfloat16)
                          else dtype).eps
    bound = terms * acc_eps * magnitude + torch.finfo(dtype).tiny
    if dtype in (torch.float16, torch.bfloat16):
        bound = bound + torch.finfo(dtype).eps * (exact.abs() + (roundings - 1) * magnitude)
    err = (actual.double() - exact).abs()
    worst = (err / bound).max().item() if err.numel() else 0.0
    assert (err <= bound).all(), f"{what}: error up to {worst:.2f}x the rounding bound"


# The error bound: the worst-case bound of a direct sum of `terms` products, terms * eps *
# magnitude (magnitude: the sum of the terms' absolute values), as in assert_within_rounding,
# except that for Winograd (tile m) the magnitude is the largest one within m - 1 pixels: the
# transforms mix the terms of all m x m outputs of a tile, so an output whose own terms are
# small (e.g. all in the padding, leaving just the bias) carries rounding errors of the size of
# its tile neighbours' sums. Within that, the worst-case bound's factor `terms` leaves room for
# the transforms' extra roundings (test_accuracy_against_fp64 in tests/test_conv2d_winograd*.py
# measures the typical errors). A stride-2 tile's outputs are m - 1 pixels apart too.
def assert_within_tile_bound(got, exact, magnitude, terms, what, tile=0):
    assert got.dtype == torch.float32 and got.shape == exact.shape, what
    if tile and magnitude.numel():
        magnitude = F.max_pool2d(magnitude, 2 * tile - 1, 1, tile - 1)
    bound = terms * torch.finfo(torch.float32).eps * magnitude + torch.finfo(torch.float32).tiny
    err = (got.double() - exact).abs()
    assert (err <= bound).all(), f"{what}: error up to {(err / bound).max().item():.2f}x the bound"


def weight_grad_format(x, grad_out):
    """The memory format of fastconv's weight gradient: channels_last when either activation
    is (PyTorch's rule for a contiguous weight), else contiguous."""
    cl = torch.channels_last
    is_cl = [t.dim() == 4 and t.is_contiguous(memory_format=cl) and not t.is_contiguous()
             for t in (x, grad_out)]
    return cl if any(is_cl) else torch.contiguous_format


# The error bound of a Winograd weight gradient: as for a direct sum, terms * eps * magnitude
# with terms = the reduction length (N x P x Q products per weight) plus `extra` for the
# transforms' own roundings, except that the magnitude is the largest sum of |grad_output| x
# |input| over every input offset a transformed product can pair with a grad_output pixel
# (`reach` = (first, last) offset: the tile's input patch, B^T d B and A g A^T mixing all of it),
# which G^T . G then mixes into each tap (a tap whose own products are small, e.g. mostly
# padding, carries rounding errors of the size of its neighbours' sums).
def assert_wgrad_within_tile_bound(got, x, grad_out, padding, stride, reach, extra, what):
    xd, gd = x.double(), grad_out.double()
    ph, pw = pair(padding)
    exact = torch.nn.grad.conv2d_weight(xd, got.shape, gd, stride, (ph, pw))
    first, last = reach
    span = last - first + 1
    k, c = got.shape[:2]
    mag = torch.nn.grad.conv2d_weight(xd.abs(), (k, c, span, span), gd.abs(), stride, (ph - first, pw - first))
    mag = mag.amax(dim=(2, 3), keepdim=True)
    terms = grad_out.shape[0] * grad_out.shape[2] * grad_out.shape[3]
    bound = (terms + extra) * torch.finfo(got.dtype).eps * mag + torch.finfo(got.dtype).tiny
    assert got.shape == exact.shape and got.dtype == x.dtype, what
    assert got.is_contiguous(memory_format=weight_grad_format(x, grad_out)), what
    err = (got.double() - exact).abs()
    assert (err <= bound).all(), f"{what}: error up to {(err / bound).max().item():.2f}x the bound"


def reference(fn, *tensors):
    """fn evaluated in fp64 on the tensors' values, and on their absolute values (the
    magnitude of the terms each output element sums)."""
    exact = fn(*[t.detach().double() if t is not None else None for t in tensors])
    magnitude = fn(*[t.detach().double().abs() if t is not None else None for t in tensors])
    return exact, magnitude


def assert_compiled_matches_eager(f, tensors):
    """torch.compile(f, fullgraph=True) (aot_eager: fake kernels, autograd and tracing without
    code generation) gives f's value and the gradients of a scalar f, bit for bit."""
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    args_c = [t.clone().requires_grad_() for t in tensors]
    args_e = [t.clone().requires_grad_() for t in tensors]
    yc, ye = compiled(*args_c), f(*args_e)
    yc.backward()
    ye.backward()
    assert torch.equal(yc, ye)
    for a, e in zip(args_c, args_e):
        assert torch.equal(a.grad, e.grad)


def assert_same_error_eagerly_and_under_fake_tensors(fn, tensors, message, match="fastconv::"):
    """fn(*tensors) raises a RuntimeError matching `match` and containing `message`, and the
    same first line under FakeTensorMode (the checks shared with the Meta kernels)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with pytest.raises(RuntimeError, match=match) as eager:
        fn(*tensors)
    assert message in str(eager.value)
    with FakeTensorMode() as mode:
        with pytest.raises(RuntimeError) as fake:
            fn(*[mode.from_tensor(t) for t in tensors])
    assert str(fake.value).splitlines()[0] == str(eager.value).splitlines()[0]

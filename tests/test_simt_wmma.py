"""The emulator's nvcuda::wmma (csrc/simt/mma.h) through csrc/simt/test_kernels_wmma.cpp: exact
products in fp16, bf16 and tf32 against fp64 of the rounded inputs, every shape and layout,
CUDA's tf32 rounding, and planted misuse that must be reported."""
import struct

import pytest
import torch

from fastconv.testing import emulate_cuda, simt_available

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

ops = torch.ops.fastconv_simt
SCHEDULES = [("forward", 0), ("reverse", 0), ("random", 3)]
# (m, n, k) and tiles (Mt, Nt, Kt): a dimension of 8 keeps one tile, so every tile pointer stays
# 256-bit aligned as CUDA requires (an 8-element half offset is only 16 bytes).
SHAPES = {(16, 16, 16): (2, 2, 3), (32, 8, 16): (2, 1, 2), (8, 32, 16): (1, 2, 2),
          (16, 16, 8): (2, 2, 3)}


def tf32_round(x):
    """Round-to-nearest, ties away from zero, to 10 mantissa bits (PTX cvt.rna.tf32.f32),
    computed on the bit pattern independently of the emulator."""
    out = []
    for v in x.flatten().tolist():
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        if bits & 0x7F800000 != 0x7F800000:
            bits = (bits + 0x1000) & 0xFFFFE000
        out.append(struct.unpack("<f", struct.pack("<I", bits))[0])
    return torch.tensor(out, dtype=torch.float32).reshape(x.shape)


def operands(dtype, shape, tiles, generator, integers):
    m, n, k = shape
    mt, nt, kt = tiles
    if integers:  # small integers: every product and sum is exact in fp32
        a = torch.randint(-8, 9, (mt * m, kt * k), generator=generator).float()
        b = torch.randint(-8, 9, (kt * k, nt * n), generator=generator).float()
        c = torch.randint(-64, 65, (mt * m, nt * n), generator=generator).float()
    else:
        a = torch.randn(mt * m, kt * k, generator=generator)
        b = torch.randn(kt * k, nt * n, generator=generator)
        c = torch.randn(mt * m, nt * n, generator=generator)
    if dtype == torch.float32:
        return a, b, c, tf32_round(a), tf32_round(b)
    return a.to(dtype), b.to(dtype), c, a.to(dtype), b.to(dtype)


def reference(ra, rb, c, kt, k):
    """fp64 product of the rounded operands, accumulated tile by tile as the kernel's loop does
    (the emulator rounds to fp32 once per mma_sync)."""
    d = c.double()
    for t in range(kt):
        d = (d + ra[:, t * k:(t + 1) * k].double() @ rb[t * k:(t + 1) * k].double()).float().double()
    return d.float()


# every emulated (type, shape): fp16 and bf16 in the three k16 shapes, tf32 (float) in m16n16k8
CASES = [(dtype, shape) for dtype in (torch.float16, torch.bfloat16) for shape in list(SHAPES)[:3]]
CASES.append((torch.float32, (16, 16, 8)))


@pytest.mark.parametrize("dtype, shape", CASES, ids=lambda c: {
    torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "tf32"}.get(c) or
    "m{}n{}k{}".format(*c))
def test_wmma_gemm_is_exact_against_fp64_of_the_rounded_inputs(dtype, shape):
    tiles = SHAPES[shape]
    g = torch.Generator().manual_seed(hash(shape) % 1000 + 7)
    results = []
    for integers in (True, False):
        a, b, c, ra, rb = operands(dtype, shape, tiles, g, integers)
        want = reference(ra, rb, c, tiles[2], shape[2])
        if integers:  # exactly representable: also equal to the plain fp64 product
            assert torch.equal(want, (a.double() @ b.double() + c.double()).float())
        for layouts in [(False, False, False, False), (True, True, True, True),
                        (False, True, True, False), (True, False, False, True)]:
            for order, seed in SCHEDULES:
                with emulate_cuda(order, seed=seed, block_order=order):
                    got = ops._test_wmma_gemm(a, b, c, list(shape), *layouts, 2, 0)
                assert torch.equal(got, want), (layouts, order, (got - want).abs().max())
                results.append(got)
    assert len(results) == 2 * 4 * len(SCHEDULES)


def test_tf32_rounding_is_round_to_nearest_ties_away():
    one = 1.0
    ulp = 2.0 ** -10  # tf32 spacing at 1
    x = torch.tensor([one, one + ulp / 2, one + ulp / 2 + 2 ** -23, one + ulp / 2 - 2 ** -23,
                      -(one + ulp / 2), one + 1.5 * ulp, 3.4028234663852886e38, float("inf"),
                      -float("inf"), 1e-40, 0.0, -0.0], dtype=torch.float32)
    got = ops._test_float_to_tf32(x)
    want = torch.tensor([one, one + ulp, one + ulp, one, -(one + ulp), one + 2 * ulp,
                         float("inf"), float("inf"), -float("inf")], dtype=torch.float32)
    assert torch.equal(got[:9], want)
    assert torch.equal(got[9:], tf32_round(x[9:]))  # subnormal and zeros, bit for bit
    assert torch.isnan(ops._test_float_to_tf32(torch.tensor([float("nan")]))).all()
    assert torch.equal(ops._test_float_to_tf32(x), tf32_round(x))


@pytest.mark.parametrize("convert", [True, False])
def test_tf32_mma_uses_only_the_top_19_bits(convert):
    # 1 + 2^-10 - 2^-23 rounds up to 1 + 2^-10 through __float_to_tf32; without the conversion
    # the tensor core ignores the low 13 mantissa bits, which truncates it to 1.
    a = torch.full((16, 8), 1.0 + 2.0 ** -10 - 2.0 ** -23)
    b = torch.zeros(8, 16)
    b[0, 0] = 1.0
    c = torch.zeros(16, 16)
    with emulate_cuda():
        got = ops._test_wmma_gemm(a, b, c, [16, 16, 8], False, False, False, False, 1,
                                  0 if convert else 6)
    assert (got[:, 0] == (1.0 + 2.0 ** -10 if convert else 1.0)).all()
    assert (got[:, 1:] == 0).all()


def test_missing_barrier_before_a_wmma_load_depends_on_the_schedule():
    g = torch.Generator().manual_seed(5)
    a = torch.randint(-4, 5, (16, 16), generator=g).half()
    b = torch.randint(-4, 5, (16, 16), generator=g).half()
    want = (a.double() @ b.double()).float()
    for order in ("forward", "reverse", "random"):
        with emulate_cuda(order, seed=2):
            assert torch.equal(ops._test_wmma_staged(a, b, True), want)
    with emulate_cuda("forward"):  # warp 0 loads the tile before warp 1 has written it
        early = ops._test_wmma_staged(a, b, False)
    with emulate_cuda("reverse"):
        late = ops._test_wmma_staged(a, b, False)
    assert torch.isnan(early).any()  # dynamic shared memory is poisoned with 0xFF (NaN)
    assert torch.equal(late, want)


def _planted(planted, warps=1):
    a = torch.ones(32, 32, dtype=torch.float16)
    b = torch.ones(32, 32, dtype=torch.float16)
    c = torch.zeros(32, 32)
    return ops._test_wmma_gemm(a, b, c, [16, 16, 16], False, False, False, False, warps, planted)


@pytest.mark.parametrize("planted, message", [
    (1, r"WMMA warp collective mismatch in warp 0 .*load_matrix_sync.*lane 5\).* at "
        r"nvcuda::wmma::mma_sync"),
    (2, r"load_matrix_sync at .*test_kernels_wmma.cpp:\d+: expected a 256-bit \(32-byte\) "
        r"aligned pointer"),
    (3, r"WMMA warp collective mismatch .*load_matrix_sync\(ptr 0x[0-9a-f]+, ldm 32, row-major\)"
        r".*lane 3\) at nvcuda::wmma::load_matrix_sync\(ptr"),
    (4, r"mma_sync at .*: lane 7 holds a different fragment \(operand 0\) than lane 0"),
    (5, r"load_matrix_sync at .* needs all 32 lanes of the warp, but lane 9 has exited"),
])
def test_planted_wmma_misuse_is_reported(planted, message):
    with emulate_cuda("random", seed=4):
        with pytest.raises(RuntimeError, match=message):
            _planted(planted)
    with emulate_cuda("forward"):
        with pytest.raises(RuntimeError, match=r"failed in block \(\d+,0,0\)"):
            _planted(planted, warps=2)


def test_deadlock_report_names_the_wmma_collective():
    with emulate_cuda():
        with pytest.raises(RuntimeError, match=r"deadlock: .*\n  thread \(0,0,0\) \.\. \(10,0,0\) "
                           r"\(tid 0\.\.10\): nvcuda::wmma::load_matrix_sync\(mask 0xffffffff\) "
                           r".*test_kernels_wmma\.cpp:\d+\n  thread \(11,0,0\) \(tid 11\): "
                           r"__syncthreads .*test_kernels_wmma\.cpp:\d+"):
            _planted(7)


def test_lane_dependent_fragment_is_a_warning_without_strict(capfd):
    with emulate_cuda(strict=False):
        warnings = ops._stats()[4]
        out = _planted(4)
        assert ops._stats()[4] == warnings + 8  # once per mma_sync: 4 tiles x 2 k-steps
    assert torch.equal(out, torch.full((32, 32), 32.0))  # lane 0's fragment (all ones) is used
    assert "holds a different fragment" in capfd.readouterr().err


def test_ldm_must_be_a_multiple_of_16_bytes():
    b = torch.ones(24, 16, dtype=torch.float16)
    a = torch.ones(16, 20, dtype=torch.float16)  # lda = 20 halves = 40 bytes
    with emulate_cuda():
        with pytest.raises(RuntimeError, match=r"expected ldm a multiple of 8 elements \(16 "
                                               r"bytes\) for 16-bit elements, got 20"):
            ops._test_wmma_gemm(a, b[:20], torch.zeros(16, 16), [16, 16, 16], False, False,
                                False, False, 1, 0)

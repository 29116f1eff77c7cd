"""The CUDA emulator itself (csrc/simt, shared/SIMT.md), through the test kernels of
csrc/simt/test_kernels.cpp: exact answers from correct kernels under every schedule, the PTX
rules of every shuffle form and width, and planted bugs that must be reported."""
import itertools
import random
import time

import pytest
import torch

import fastconv.nn.functional as F
from fastconv.testing import emulate_cuda, simt_available

pytestmark = pytest.mark.skipif(not simt_available(), reason="fastconv._simt is not built")

ops = torch.ops.fastconv_simt
SCHEDULES = [("forward", 0), ("reverse", 0), ("random", 1), ("random", 7)]
FULL = 0xFFFFFFFF


@pytest.fixture(params=SCHEDULES, ids=lambda s: f"{s[0]}{s[1] or ''}")
def schedule(request):
    order, seed = request.param
    with emulate_cuda(order, seed=seed, block_order=order, strict=True):
        yield request.param


# ---- correct kernels: exact answers ----------------------------------------------------------
@pytest.mark.parametrize("use_down", [False, True], ids=["xor", "down"])
def test_warp_shuffle_reduction_is_exact(schedule, use_down):
    x = torch.randint(-100, 100, (1000,)).float()
    out = ops._test_warp_sum(x, use_down)
    expected = torch.nn.functional.pad(x, (0, 1024 - 1000)).reshape(-1, 32).sum(1)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("bx, by", [(256, 1), (96, 1), (32, 3), (1024, 1), (7, 5)])
def test_block_scan_in_shared_memory_is_exact(schedule, bx, by):
    n = 2500
    x = torch.randint(-1000, 1000, (n,))
    out = ops._test_block_scan(x, bx, by, 0)
    threads = bx * by
    expected = torch.cat([c.cumsum(0) for c in x.split(threads)])
    assert torch.equal(out, expected)


def test_barrier_predicate_reductions(schedule):
    pred = torch.randint(0, 2, (96,), dtype=torch.int32)
    out = ops._test_barrier_predicates(pred)
    assert (out[:, 0] == int(pred.sum())).all()
    assert (out[:, 1] == int(bool(pred.all()))).all()
    assert (out[:, 2] == int(bool(pred.any()))).all()
    ones = ops._test_barrier_predicates(torch.ones(64, dtype=torch.int32))
    assert (ones == torch.tensor([64, 1, 1], dtype=torch.int32)).all()


def test_atomics(schedule):
    blocks, threads = 3, 64
    n = blocks * threads
    got = ops._test_atomics(blocks, threads)
    expected = [n, n - 1, 0, -2 * n, (1 << 31) - 1, sum(range(n)),
                sum(t % 7 for t in range(n)), sum(range(n)), n, n % 10]
    assert got == [float(v) for v in expected]


def test_policies_order_threads_and_blocks():
    grid, block = [3, 2, 2], [4, 2, 3]  # linear ids: x fastest, as CUDA's tid and block rank
    n, per_block = 12 * 24, 24
    with emulate_cuda("forward"):
        assert ops._test_record_order(grid, block).tolist() == list(range(n))
    with emulate_cuda("reverse"):
        assert ops._test_record_order(grid, block).tolist() == list(range(n))[::-1]
    with emulate_cuda("forward", block_order="reverse"):
        seq = ops._test_record_order(grid, block).tolist()
        assert seq == [b * per_block + t for b in reversed(range(12)) for t in range(per_block)]
    runs = []
    for seed in (1, 1, 2):
        with emulate_cuda("random", seed=seed):
            runs.append(ops._test_record_order(grid, block).tolist())
    assert runs[0] == runs[1] != runs[2]  # reproducible from the seed
    for seq in runs:
        assert sorted(seq) == list(range(n))
        chunks = [seq[i:i + per_block] for i in range(0, n, per_block)]
        assert all(len({v // per_block for v in c}) == 1 for c in chunks)  # blocks run whole
        assert [c[0] // per_block for c in chunks] != list(range(12))


# ---- warp collectives against the PTX rules ----------------------------------------------------
KINDS = {"idx": 0, "up": 1, "down": 2, "xor": 3}


def ptx_source(kind, lane, b, width):
    """shfl.sync's source lane (PTX ISA): bval = b[4:0], segmask = 32 - width; the own lane
    where the computed lane falls outside the segment's bound."""
    b &= 31
    seg_lo = lane & ~(width - 1)
    seg_hi = seg_lo + width - 1
    if kind == "idx":
        return seg_lo | (b & (width - 1))
    if kind == "up":
        j = lane - b
        return j if j >= seg_lo else lane
    j = lane + b if kind == "down" else lane ^ b
    return j if j <= seg_hi else lane


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("kind", list(KINDS))
def test_shuffle_forms_and_widths_follow_ptx(kind, width):
    rng = random.Random(f"{kind}{width}")
    values = torch.tensor([1000 + 7 * lane for lane in range(32)], dtype=torch.int32)
    arg_sets = [[a] * 32 for a in (0, 1, 2, 3, 5, 8, 15, 16, 17, 31, 32, 33, -1)]
    arg_sets += [[rng.randrange(-40, 70) for _ in range(32)] for _ in range(3)]
    for args in arg_sets:
        a = torch.tensor(args, dtype=torch.int32)
        out = ops._test_collective(KINDS[kind], values, a, width, FULL, 32, 32)
        expected = [int(values[ptx_source(kind, lane, args[lane], width)]) for lane in range(32)]
        assert out.tolist() == expected, (kind, width, args)
    # 8-byte payloads move whole
    dvalues = torch.arange(32, dtype=torch.float64) * 1e300 + 0.5
    out = ops._test_collective(KINDS[kind], dvalues, torch.full((32,), 3, dtype=torch.int32),
                               width, FULL, 32, 32)
    assert out.tolist() == [float(dvalues[ptx_source(kind, lane, 3, width)]) for lane in range(32)]


def test_shuffle_width_must_be_a_power_of_two():
    v = torch.zeros(32, dtype=torch.int32)
    with emulate_cuda():
        with pytest.raises(RuntimeError, match="width must be a power of two"):
            ops._test_collective(0, v, v, 12, FULL, 32, 32)


def test_votes_match_and_reduce():
    rng = random.Random(3)
    mask = 0x0F0FF0F3
    lanes = [lane for lane in range(32) if mask >> lane & 1]
    values = torch.tensor([rng.choice([0, 0, 3, -5, 9]) for _ in range(32)], dtype=torch.int32)
    zeros = torch.zeros(32, dtype=torch.int32)

    def run(kind, m=mask, threads=32, exit_from=32):
        return ops._test_collective(kind, values, zeros, 32, m, threads, exit_from).tolist()

    def as_int(bits):
        return bits - (1 << 32) if bits >= 1 << 31 else bits

    ballot = sum(1 << lane for lane in lanes if values[lane] != 0)
    for kind, want in [(4, as_int(ballot)), (5, int(ballot != 0)),
                       (6, int(all(values[lane] != 0 for lane in lanes))),
                       (8, sum(int(values[lane]) for lane in lanes)),
                       (9, min(int(values[lane]) for lane in lanes)),
                       (10, max(int(values[lane]) for lane in lanes))]:
        out = run(kind)
        assert [out[lane] for lane in lanes] == [want] * len(lanes), kind
        assert all(out[lane] == -7 for lane in range(32) if lane not in lanes)  # untouched
    match = run(7)
    for lane in lanes:
        assert match[lane] == as_int(sum(1 << k for k in lanes if values[k] == values[lane]))
    same = ops._test_collective(12, torch.full((32,), 4, dtype=torch.int32), zeros, 32, FULL,
                                32, 32).tolist()
    assert same == [as_int(FULL)] * 32  # all equal: the mask, and pred in bit 31
    # __activemask: the lanes that have not exited, schedule-dependent as on hardware. In
    # reverse order lanes 31..20 have returned before lane 19 runs.
    with emulate_cuda("reverse"):
        active = run(11, m=FULL, exit_from=20)
    for lane in range(20):
        assert active[lane] >> lane & 1 and active[lane] >> 20 == 0, (lane, hex(active[lane]))


def test_disjoint_groups_complete_independently():
    # two half-warps with complementary masks shuffle within themselves
    values = torch.arange(32, dtype=torch.int32) * 3
    ones = torch.ones(32, dtype=torch.int32)
    lo = ops._test_collective(3, values, ones, 32, 0x0000FFFF, 32, 32).tolist()
    assert lo[:16] == [int(values[lane ^ 1]) for lane in range(16)]


# ---- planted bugs: the emulator must report them ----------------------------------------------
@pytest.mark.parametrize("omit", [1, 2], ids=["missing-barrier-after-fill", "missing-barrier-before-overwrite"])
def test_missing_barrier_gives_schedule_dependent_results(omit):
    x = torch.randint(-1000, 1000, (600,))
    correct = torch.cat([c.cumsum(0) for c in x.split(256)])
    results = []
    for order, seed in SCHEDULES:
        with emulate_cuda(order, seed=seed):
            results.append(ops._test_block_scan(x, 256, 1, omit))
    assert any(not torch.equal(r, results[0]) for r in results[1:]), "no schedule exposed the race"
    assert any(not torch.equal(r, correct) for r in results)


def test_divergent_barrier_names_both_call_sites():
    with emulate_cuda():
        with pytest.raises(RuntimeError) as e:
            ops._test_planted("divergent_barrier")
    msg = str(e.value)
    assert "divergent barrier" in msg and "simt_tests::divergent_barrier" in msg
    sites = set(__import__("re").findall(r"test_kernels\.cpp:(\d+)", msg))
    assert len(sites) == 2, msg


def test_barrier_after_exit_is_an_error_in_strict_mode_only():
    with emulate_cuda(strict=True):
        with pytest.raises(RuntimeError, match="reached after 48 thread"):
            ops._test_planted("barrier_after_exit")
    with emulate_cuda(strict=False):
        warnings = ops._stats()[4]
        ops._test_planted("barrier_after_exit")
        assert ops._stats()[4] == warnings + 1


@pytest.mark.parametrize("case", ["exited", "outside-mask", "partial-warp"])
def test_shuffle_reading_a_lane_that_does_not_take_part(case):
    values = torch.arange(32, dtype=torch.int32) + 100
    sixteen = torch.full((32,), 16, dtype=torch.int32)
    call = {  # (kind, args, mask, threads, exit_from); lanes 0..15 read lanes 16..31
        "exited": (2, sixteen, FULL, 32, 16),           # lanes >= 16 returned before
        "outside-mask": (3, sixteen, 0x0000FFFF, 32, 32),
        "partial-warp": (0, sixteen + 9, FULL, 20, 32),  # lane 25 does not exist
    }[case]
    with emulate_cuda(strict=True):
        with pytest.raises(RuntimeError, match=r"reads lane (1[6-9]|2\d|3[01]), which does not take part"):
            ops._test_collective(call[0], values, call[1], 32, call[2], call[3], call[4])
    with emulate_cuda(strict=False):
        out = ops._test_collective(call[0], values, call[1], 32, call[2], call[3], call[4])
    assert out[:16].tolist() == [-1] * 16  # poison: all bits set


def test_mismatched_collectives_in_one_group():
    v = torch.ones(32, dtype=torch.int32)
    with emulate_cuda():
        with pytest.raises(RuntimeError, match="warp collective mismatch.*__shfl_sync.*__ballot_sync"):
            ops._test_collective(13, v, v, 32, FULL, 32, 32)


def test_lane_outside_its_own_mask():
    v = torch.ones(32, dtype=torch.int32)
    with emulate_cuda():
        with pytest.raises(RuntimeError, match=r"thread \(0,0,0\).*lane 0 is not in its own mask 0xfffffffe"):
            ops._test_collective(14, v, v, 32, FULL, 32, 32)


def test_deadlock_is_reported_with_every_waiting_thread():
    with emulate_cuda():
        with pytest.raises(RuntimeError, match="deadlock") as e:
            ops._test_planted("deadlock")
    msg = str(e.value)
    assert "__syncwarp(mask 0x00000003)" in msg and "__syncthreads" in msg


@pytest.mark.parametrize("which, block, thread, error", [
    ("trap", 1, 5, "cudaErrorLaunchFailure"), ("assert", 2, 7, "cudaErrorAssert")])
def test_device_traps_are_rethrown_with_block_and_thread(which, block, thread, error):
    with emulate_cuda("random", seed=4):
        with pytest.raises(RuntimeError) as e:
            ops._test_planted(which)
    msg = str(e.value)
    assert msg.startswith(error)
    assert f"block ({block},0,0) thread ({thread},0,0)" in msg
    assert "order=random seed=4" in msg  # enough to reproduce


# ---- launch validation -----------------------------------------------------------------------
@pytest.mark.parametrize("grid, block, why", [
    ((1, 1, 1), (2048, 1, 1), "2048 threads per block"),
    ((1, 1, 1), (32, 32, 2), "2048 threads per block"),
    ((1, 1, 1), (1, 1, 65), "block dimensions"),
    ((1, 1, 1), (0, 1, 1), "a zero dimension"),
    ((0, 1, 1), (32, 1, 1), "a zero dimension"),
    ((1, 65536, 1), (32, 1, 1), "grid dimensions"),
])
def test_invalid_launch_configurations(grid, block, why):
    with emulate_cuda():
        with pytest.raises(RuntimeError, match=f"^cudaErrorInvalidConfiguration: .*{why}"):
            ops._test_launch(list(grid), list(block), 0, 0)


def test_launch_geometry_and_dynamic_shared_memory_limits():
    kib = 1024
    with emulate_cuda():
        assert ops._test_launch([3, 2, 1], [8, 4, 2], 48 * kib, 0) == 6 * 64
        with pytest.raises(RuntimeError, match="^cudaErrorInvalidValue: .*65536 bytes of dynamic"):
            ops._test_launch([1, 1, 1], [32, 1, 1], 64 * kib, 0)  # no opt-in
        assert ops._test_launch([1, 1, 1], [32, 1, 1], 64 * kib, 64 * kib) == 32  # opted in
        with pytest.raises(RuntimeError, match="^cudaErrorInvalidValue: .*above the sm_80 max"):
            ops._test_launch([1, 1, 1], [32, 1, 1], 200 * kib, 200 * kib)
    with emulate_cuda(target="sm_90"):
        assert ops._test_launch([1, 1, 1], [32, 1, 1], 200 * kib, 200 * kib) == 32


def test_launch_device_reports_the_emulated_targets_limits():
    # fastconv::launch_device() (cuda/launch/launch.h) is what launch plans size launches by.
    with emulate_cuda(target="sm_80"):
        assert ops._test_launch_device() == [108, 2048, 163 * 1024]
    with emulate_cuda(target="sm_90"):
        assert ops._test_launch_device() == [132, 2048, 227 * 1024]


# ---- the emulate_cuda context ----------------------------------------------------------------
def test_emulate_cuda_redirects_fastconv_ops_and_restores_the_policy():
    before = ops._policy()
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    with emulate_cuda("reverse", seed=3, target="sm_90") as mode:
        assert "order=reverse seed=3" in ops._policy() and "target=sm_90" in ops._policy()
        launches = ops._stats()[0]
        F.max_pool2d(x, 3, 2, 1).sum().backward()
        assert mode.redirected == 2 and ops._stats()[0] == launches + 2
    assert ops._policy() == before


# ---- cost (numbers for the report; loose bounds only) ------------------------------------------
def test_fiber_switch_rate_and_barrier_launch_cost(capsys):
    blocks, threads, rounds = 128, 256, 4  # 32k threads, 4 barriers each
    with emulate_cuda():
        ops._test_barriers(1, 32, 1)  # warm the stack pool
        switches = ops._stats()[3]
        start = time.perf_counter()
        assert ops._test_barriers(blocks, threads, rounds) == sum(range(rounds))
        seconds = time.perf_counter() - start
        switches = ops._stats()[3] - switches
    assert switches == 2 * blocks * threads * (rounds + 1)
    with capsys.disabled():
        print(f"\n[simt] {blocks * threads} threads x {rounds} barriers: {seconds * 1e3:.1f} ms, "
              f"{switches} switches, {switches / seconds / 1e6:.2f} M switches/s")
    assert seconds < 30


def test_conv_sized_launch_cost(capsys):
    # Issue 3, section 6: a conv-sized launch (N=2, C=16, 32x32, K=16, 3x3) in about 2 s or less.
    # The kernel stages input tiles in shared memory: 128 blocks x 256 threads x 32 barriers.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 32, 32, generator=g)
    w = torch.randn(16, 16, 3, 3, generator=g)
    with emulate_cuda():
        ops._test_direct_conv3x3(x[:, :, :4, :4], w)  # warm the stack pool
        switches = ops._stats()[3]
        start = time.perf_counter()
        y = ops._test_direct_conv3x3(x, w)
        seconds = time.perf_counter() - start
        switches = ops._stats()[3] - switches
    want = torch.nn.functional.conv2d(x.double(), w.double(), padding=1).float()
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4)  # fp32 sums of 144 terms
    assert switches == 2 * (2 * 16 * 4 * 256) * (2 * 16 + 1)
    with capsys.disabled():
        print(f"\n[simt] conv N=2 C=16 32x32 K=16 3x3: {seconds:.2f} s, {switches} switches, "
              f"{switches / seconds / 1e6:.2f} M switches/s")
    assert seconds < 30  # loose: shared CI machines; the README records the measured number

"""Side-by-side timing of fastconv and PyTorch with torch.utils.benchmark.

Fairness (shared/bench/README.md): both sides run with the same thread count, are warmed up
first, and are measured in interleaved rounds (A B, B A, A B, ...) so that a drift of the
machine (clock boost, a noisy neighbour) hits both alike. Each round is one
Timer.blocked_autorange; the per-call times of all rounds are pooled and summarised by their
median and interquartile range. On CUDA the Timer's default clock synchronises the device.
"""
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np
import torch

# torch.utils.benchmark imports torch.utils.cpp_extension, which warns "No CUDA runtime is
# found" on machines with nvcc but no GPU; that says nothing about the benchmark.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils.benchmark import Timer  # noqa: E402


@dataclass
class Timing:
    median: float          # seconds per call
    iqr: float             # seconds, 75th - 25th percentile of the per-call times
    times: List[float]     # per-call times of every measured block, all rounds
    calls: int             # calls measured in total

    @property
    def median_ms(self):
        return self.median * 1e3

    @property
    def iqr_ms(self):
        return self.iqr * 1e3


def summarize(times, calls):
    t = np.asarray(times, dtype=float)
    q25, q50, q75 = np.percentile(t, [25, 50, 75])
    return Timing(median=float(q50), iqr=float(q75 - q25), times=[float(v) for v in t],
                  calls=int(calls))


def warm_up(fn: Callable[[], object], min_time=0.05, min_calls=3, device="cpu"):
    """Call fn until both min_calls and min_time are reached: first-call allocations, lazy
    initialisation and the caching allocator are settled before any timing."""
    start, calls = time.perf_counter(), 0
    while calls < min_calls or time.perf_counter() - start < min_time:
        fn()
        calls += 1
        if device == "cuda":
            torch.cuda.synchronize()


def measure_once(fn, num_threads, min_run_time):
    """One blocked_autorange: returns (per-call times of each block, number of calls)."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=num_threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return list(m.times), m.number_per_run * len(m.times)


def interleaved(fns: Dict[str, Callable[[], object]], rounds=3, min_run_time=0.2,
                num_threads=None, device="cpu", warmup_time=0.05) -> Dict[str, Timing]:
    """Time every callable of `fns` in `rounds` alternating rounds; medians with IQR.

    Round r runs the callables in dict order when r is even and in reverse order when it is
    odd, so neither side always runs first (right after the other one's cache traffic).
    """
    num_threads = num_threads or torch.get_num_threads()
    names = list(fns)
    for name in names:
        warm_up(fns[name], min_time=warmup_time, device=device)
    times = {name: [] for name in names}
    calls = {name: 0 for name in names}
    for r in range(max(1, rounds)):
        for name in (names if r % 2 == 0 else names[::-1]):
            t, c = measure_once(fns[name], num_threads, min_run_time)
            times[name] += t
            calls[name] += c
    return {name: summarize(times[name], calls[name]) for name in names}


class ForeignLoad:
    """How much CPU other processes (and the hypervisor, as steal time) took during a run.

    On a small machine one busy neighbour stalls every parallel region whose worker thread
    it displaces, so timings then measure the neighbour. Linux only (/proc/stat); elsewhere
    share() is None.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal: everything but idle and iowait
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        own = sum(os.times()[:2])  # this process, all threads
        return busy, own, time.monotonic()

    def share(self):
        """Fraction of all cores' time used by others since construction (0..1)."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start))
        cores = os.cpu_count() or 1
        if wall <= 0:
            return None
        # /proc/stat counts in clock ticks (10 ms), so over a short interval one tick of
        # anyone's work can exceed wall * cores: clamp to the fraction's range
        return min(1.0, max(0.0, (busy - own) / (wall * cores)))
